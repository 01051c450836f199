"""The MicroPython FOTA agent: runs unchanged on MicroPython 1.22+ and CPython 3.11+.

Relative imports only, so the package can be copied onto a board under any name.
"""

import sys


def drop(*names):
    """Forget modules of this package so the collector can take their code: on MicroPython a
    loaded module's bytecode lives in the heap, so a phase imports what only it needs and
    drops it after (agent.py). CPython keeps them."""
    if sys.implementation.name != "micropython":
        return
    pkg = sys.modules.get(__name__)
    for n in names:
        sys.modules.pop(__name__ + "." + n, None)
        if pkg is not None and n in pkg.__dict__:
            delattr(pkg, n)
