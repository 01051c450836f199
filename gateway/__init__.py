"""fota-gateway: the aiocoap daemon between the control center and the device fleet.

Modules: ``main`` (CLI), ``server`` (assembly, signals), ``endpoint`` (the device bind's own
CoAP message layer), ``ratelimit``, ``sources`` (address verification, Echo), ``replies``
(report reply cache), ``observe`` (observations), ``datadir`` (keys at rest), ``device_api``
(reports, commands, firmware blocks), ``control_api`` (cc's API), ``fleet`` (operations), ``jobs`` (the job
lifecycle table), ``store`` (SQLite), ``blobs`` (image files), ``uploads`` (Block1 reception).
"""
