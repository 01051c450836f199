"""Report authentication: a per-device key, a MAC on every report and on its response, and a
counter that only goes up (replays refused).

Why not OSCORE (RFC 8613) on the device: it needs AES-CCM and HKDF in pure MicroPython plus
the OSCORE option and sequence-number window logic, more than this issue's time allowed; the
device already has SHA-256 (``hashlib``), so HMAC-SHA256 is a dozen lines there. What this
does NOT give, unlike OSCORE: confidentiality (reports and commands travel in clear: a
listener learns device ids, states, versions and which manifest is offered; the manifest is
signed anyway and the firmware is fetched in clear) and protection of the CoAP header and
options (only the payloads are covered; a rewritten Uri-Path or code just fails).

The wire (``proto.keys``)::

    report   = {... ReportKey fields ..., ReportKey.AUTH: [counter, tag]}
    tag      = HMAC-SHA256(key, b"fota-r" || counter (8 bytes, big-endian) || body)[:16]
    body     = the report map without AUTH, deterministic CBOR (RFC 8949 4.2, cbor2 canonical)
    response = {... CmdKey fields ..., CmdKey.AUTH: HMAC-SHA256(key, b"fota-c" || counter ||
                command body)[:16]}  (the command map without AUTH; {} when there is none)

The response MAC covers the report's counter, so a recorded response cannot be played back to
a later report. The gateway keeps the highest counter seen per device and refuses a report
whose counter is not above it (4.01), updating it durably before it answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

import cbor2

from proto.keys import CmdKey, ReportKey

from .requests import Refused
from .store import Store

KEY_BYTES = 32
TAG_BYTES = 16
MAX_COUNTER = 2**63 - 1  # a signed 64-bit integer in both engines
REPORT_LABEL = b"fota-r"
_ID, _AUTH = int(ReportKey.ID), int(ReportKey.AUTH)  # looked up in every report
COMMAND_LABEL = b"fota-c"


def mac(key: bytes, label: bytes, counter: int, body: bytes) -> bytes:
    return hmac.new(key, label + counter.to_bytes(8, "big") + body, hashlib.sha256).digest()[:TAG_BYTES]


def body_of(m: Mapping[int, Any], auth_key: int) -> bytes:
    return cbor2.dumps({k: v for k, v in m.items() if k != auth_key}, canonical=True)


class DeviceAuth:
    """Keys and counters live in the devices table (store migration 3)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def provision(self, device_id: str, *, rekey: bool = False) -> bytes | None:
        """Give an enrolled device a key unless it has one (or ``rekey``); returns the new key
        (shown to the operator once) or None when the existing key stays."""
        with self.store.transaction():
            row = self.store.device_key(device_id)
            if row is None:
                raise Refused("not_found", "unknown device")
            if row["key"] is not None and not rekey:
                return None
            key = os.urandom(KEY_BYTES)
            self.store.set_device_key(device_id, key)
            self.store.event("key", "report key " + ("replaced" if row["key"] else "provisioned")
                             + " (reports without its MAC are refused)", device=device_id)
        return key

    def has_key(self, device_id: str) -> bool:
        row = self.store.device_key(device_id)
        return row is not None and row["key"] is not None

    def check_report(self, m: Mapping[Any, Any]) -> tuple[bytes, int] | None:
        """Verify a decoded report map. Returns (key, counter) for an authenticated device,
        None for a device without a key (reports unauthenticated, as before keys existed).
        Raises Refused("unauthorized") for a missing or wrong MAC or a replayed counter."""
        device_id = m.get(_ID)
        if not isinstance(device_id, str):
            return None  # report_of refuses it with the precise reason
        row = self.store.device_key(device_id)
        auth = m.get(_AUTH)
        if row is None or row["key"] is None:
            if auth is not None:
                raise Refused("unauthorized", "report carries a MAC but no key is enrolled for "
                              "this device")
            return None
        if auth is None:
            raise Refused("unauthorized", "report must be authenticated (this device has a key)")
        if (not isinstance(auth, list) or len(auth) != 2 or not isinstance(auth[0], int)
                or isinstance(auth[0], bool) or not 0 < auth[0] <= MAX_COUNTER
                or not isinstance(auth[1], bytes)):
            raise Refused("unauthorized", "auth must be [counter > 0, tag]")
        counter, tag = auth
        key = row["key"]
        if not hmac.compare_digest(tag, mac(key, REPORT_LABEL, counter,
                                            body_of(m, int(ReportKey.AUTH)))):
            raise Refused("unauthorized", "report MAC does not verify")
        if counter <= row["counter"]:
            raise Refused("unauthorized", f"replayed report: counter {counter} is not above "
                          f"{row['counter']}")
        with self.store.transaction():  # durable before the answer: a replay stays refused
            self.store.raise_counter(device_id, counter)
        return key, counter

    @staticmethod
    def seal(command: Mapping[int, Any] | None, key: bytes, counter: int) -> dict[int, Any]:
        """The command map with its MAC (an empty command becomes {AUTH: tag})."""
        cmd = {int(k): v for k, v in (command or {}).items()}
        cmd[int(CmdKey.AUTH)] = mac(key, COMMAND_LABEL, counter, body_of(cmd, int(CmdKey.AUTH)))
        return cmd
