"""The wire contract shared by the control center, the gateway and the device agent.

Every number that crosses the air or the control API is defined once, here. The device agent
cannot import this package (it runs on MicroPython), so it keeps a copy in ``device/const.py``;
``tests/test_proto_device_agree.py`` proves the two agree.
"""
