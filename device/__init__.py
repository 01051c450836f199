"""The MicroPython FOTA agent: runs unchanged on MicroPython 1.22+ and CPython 3.11+.

Relative imports only, so the package can be copied onto a board under any name.
"""
