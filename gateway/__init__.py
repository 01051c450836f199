"""fota-gateway: the aiocoap daemon between the control center and the device fleet.

Modules: ``main`` (CLI), ``server`` (assembly, signals), ``device_api`` (reports, commands,
firmware blocks), ``control_api`` (cc's API), ``fleet`` (operations), ``jobs`` (the job
lifecycle table), ``store`` (SQLite), ``blobs`` (image files), ``uploads`` (Block1 reception).
"""
