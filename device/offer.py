"""An UPDATE command for a new job: its signed manifest checked, the job accepted or refused.

Its own module because most wakes never see an offer: the agent imports it when one comes
and drops it after, with the manifest code (on MicroPython a loaded module's bytecode lives
in the heap). Also the SUIT ids a manifest must name (UUID5, as proto.manifest makes them).
"""

import binascii
import hashlib

from . import const, lifecycle
from .agent import _drop, _hex

DEFAULT_VENDOR = "fota-micropython.example"  # proto.manifest.DEFAULT_VENDOR (a test checks)
_NAMESPACE_DNS = binascii.unhexlify("6ba7b8109dad11d180b400c04fd430c8")


def _uuid5(namespace, name):  # a port without hashlib.sha1: configure.py refused the config
    h = hashlib.sha1(namespace + name.encode()).digest()
    b = bytearray(h[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    return bytes(b)


def ids(vendor, device_class):
    """SUIT vendor and class ids."""
    v = _uuid5(_NAMESPACE_DNS, vendor)
    return v, _uuid5(v, device_class)


def _refuse(agent, job, result):
    agent._drop_fetch()
    agent.s["job"] = job
    agent._finish(lifecycle.REFUSE, result)


def _ids(cfg):
    if "class_id" in cfg:  # precomputed: ports without hashlib.sha1 (the WebAssembly one)
        return binascii.unhexlify(cfg["vendor_id"]), binascii.unhexlify(cfg["class_id"])
    return ids(cfg.get("vendor", DEFAULT_VENDOR), cfg["class"])


MAX_JOB = 2**63 - 1


def take(agent, cmd):
    """An UPDATE command (``cmd``: the map) for another job than the one in flight: ignore
    it (no job id, an install under way), defer it (``may_update``), or check its offer:
    accept it (state DOWNLOADING, the image described in the state) or refuse it with the
    reason as the result."""
    s = agent.s
    job = cmd.get(const.C_JOB)
    if not isinstance(job, int) or isinstance(job, bool) or not 0 <= job <= MAX_JOB:
        return None  # the job id goes into reports and the state file: an int or nothing
    if s["state"] == lifecycle.UPDATING:
        return None  # installing; the job's outcome comes after the reboot
    may = agent.cfg.get("may_update")
    if s["state"] == lifecycle.IDLE and may is not None and not may():
        s["job"] = job  # before the signature check: a deferred update costs no CPU
        agent._finish(lifecycle.DEFER)
        return None
    signed = cmd.get(const.C_MANIFEST)
    agent.phase = const.PH_VERIFY
    agent._offered = job
    from . import manifest

    try:
        if not isinstance(signed, bytes):
            raise manifest.Refused(const.RES_UNSUPPORTED_IMAGE, "no manifest")
        vendor_id, class_id = _ids(agent.cfg)
        m = manifest.check(signed, agent.trusted, vendor_id, class_id, s["seq"],
                           agent.cfg.get("tables") or manifest.ed25519.tables(agent.store.path),
                           agent.caps)
        base = m.get(const.M_DELTA_BASE)
        if base is not None and s.get("digest") not in (None, _hex(base)):
            raise manifest.Refused(const.RES_UNSUPPORTED_IMAGE, "base")
        uri = m[const.M_URI]
        size = m[const.M_SIZE]
        if not uri.startswith("/"):
            raise manifest.Refused(const.RES_INVALID_URI, "uri must be a path")
        if size > agent.slots.capacity():
            raise manifest.Refused(const.RES_NO_SPACE, "image larger than a slot")
    except manifest.Refused as e:
        return _refuse(agent, job, e.result)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        return _refuse(agent, job, const.RES_UNSUPPORTED_IMAGE)  # malformed beyond the check
    except OSError:  # a key's table could not be written (ed25519): not enough flash
        return _refuse(agent, job, const.RES_NO_SPACE)
    finally:
        manifest = None
        _drop("manifest", "ed25519", "sha512")
    wrapped = None
    if const.M_ENC_ALG in m:  # before any download: refuse if no key of ours fits (after
        # the manifest code is dropped: the two never share the heap)
        wrapped = cmd.get(const.C_CEK)
        got = agent._content_key(wrapped)
        if isinstance(got, int):
            return _refuse(agent, job, got)
    agent._drop_fetch()
    agent._go(lifecycle.ACCEPT)
    s["job"] = job
    s["unsent"] = False
    img = s["img"] = {"seq": m[const.M_SEQ], "digest": _hex(m[const.M_DIGEST]), "size": size,
                      "uri": uri, "etag": None, "slot": agent.slots.inactive()}
    if wrapped is not None:  # kept wrapped: the content key itself never reaches flash
        img["wk"] = _hex(wrapped)
        img["iv"] = _hex(m[const.M_ENC_IV])
    if const.M_SENT_SIZE in m:  # compressed or a delta: decoded on the way (device/pipe.py)
        img["sent"] = [m[const.M_SENT_SIZE], m.get(const.M_COMPRESSION, 0), base is not None]
    s["cp"] = None
    s["offset"] = 0
    s["fresh"] = True  # report the start of this download
    agent._save()
    return None
