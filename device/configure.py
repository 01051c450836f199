"""The agent's construction: the config read into an ``agent.Agent`` (agent.py's docstring
lists the keys), once per power-on.

Its own module: ``Agent.__init__`` imports it and drops it, so this code is not in the heap
while the agent runs (~1.2 KiB on the 64-bit unix port). Nothing built here refers back to it
(a function defined here would keep the module's globals, and with them its code).
"""

import hashlib
import time

from . import const
from .agent import GC_THRESHOLD, IDLE, WINDOW, _default_self_test, _unhex


def agent(a, config, slots, store, clock):
    a.cfg = config
    a.id = config["id"]
    a.cls = config["class"]
    a.trusted = [k if isinstance(k, bytes) else _unhex(k) for k in config["trust"]]
    if "class_id" not in config and not hasattr(hashlib, "sha1"):  # offer.ids needs it
        raise ValueError("this port has no hashlib.sha1: put vendor_id and class_id (hex) in the config")
    a.block_size = config.get("block_size", 1024)
    # config "transfer": "window" (NON bursts, the default) or "stop-and-wait" (RFC 7959 as is)
    a.stop_and_wait = config.get("transfer") == "stop-and-wait"
    a.window = config.get("window", WINDOW)
    a.window_stats = None  # the last burst.Window: its counters (benchmarks)
    a._restarts = 0
    a.max_failures = config.get("max_failures", 4)
    a.confirm_s = config.get("confirm_s", 300)
    a.wake_s = config.get("wake_s", 60)
    a.self_test = config.get("self_test") or _default_self_test
    a.deflate = lib = config.get("deflate")  # the module, where the port has none
    if lib is None:
        try:
            import deflate as lib  # built in: importing it costs no heap
        except ImportError:
            pass
    import gc  # decoding takes ~16 KiB more than a plain download: a heap of under 100 KiB
    # usable announces no decoders and gets plain images (tests/test_delta_upy.py: 104k
    # decodes, 96k ran out)
    big = not hasattr(gc, "mem_free") or gc.mem_free() + gc.mem_alloc() >= 102400
    # deltas where the heap allows, deflate where the port also has a decoder
    a.caps = config.get("caps", (const.CAP_DELTA | (const.CAP_DEFLATE if lib else 0))
                           if big else 0)
    thr = config.get("gc_threshold", GC_THRESHOLD if big else GC_THRESHOLD // 4)
    if thr and hasattr(gc, "threshold"):  # MicroPython
        gc.threshold(thr)
    a.slots = slots
    a.store = store
    a.clock = clock or time.time
    s = store.load()
    if not s:
        s = {"seq": config.get("version", 0), "state": IDLE, "result": const.RES_INITIAL,
             "job": None, "unsent": False, "img": None, "offset": 0}
    a.s = s
    a._fetch = None  # survives wakes while the board stays up: resume without re-hash
    a._booted = False  # boot counted for this power-on
    a.failures = 0
    a.reports = 0  # report exchanges started by this agent object
    a.progress_reports = 0  # of which in the middle of a download
    a.wait = None
    a.phase = const.PH_BOOT  # where the wake is: reported when it runs out of RAM
    a.oom = None  # (phase, job) of an out-of-RAM not yet reported
    a.ooms = 0  # out-of-RAM wakes of this agent object, and the last one's phase
    a.oom_phase = None  # (diagnostics: bench/footprint.py)
    a._offered = None  # the job whose manifest is being checked
    a.on_change = config.get("on_change")  # callable(event, old, new): simulator logs
    a.auth = None
    if config.get("key"):
        from . import auth

        key = config["key"]
        a.auth = auth.ReportAuth(key if isinstance(key, bytes) else _unhex(key),
                                    config.get("counter_file", "fota_counter"))
