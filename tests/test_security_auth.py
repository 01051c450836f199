"""Report authentication (gateway/devauth.py, device/auth.py) through the real gateway: a
device enrolled with a key must MAC its reports; a forged, unauthenticated or replayed report
is refused with 4.01 and changes nothing; responses carry a MAC the device checks."""

from __future__ import annotations

import hmac
import os
import sqlite3
from hashlib import sha256
from pathlib import Path

import cbor2
import pytest
from aiocoap import GET, POST, Message
from harness import GatewayProc, control
from hypothesis import given, settings
from hypothesis import strategies as st

from device import auth as dauth
from device import const
from proto.codes import Result, State
from proto.keys import CmdKey, ReportKey

REPORT = {ReportKey.ID: "sec-1", ReportKey.CLASS: "c", ReportKey.SEQ: 1,
          ReportKey.STATE: State.IDLE, ReportKey.RESULT: Result.INITIAL}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=300))
def test_device_hmac_is_rfc2104(key: bytes, msg: bytes) -> None:
    assert dauth.hmac_sha256(key, msg) == hmac.new(key, msg, sha256).digest()


def test_counter_survives_resets_and_spares_flash(tmp_path: Path) -> None:
    path = str(tmp_path / "ctr")
    a = dauth.ReportAuth(bytes(32), path)
    seen = [a.next_counter() for _ in range(100)]
    assert seen == list(range(1, 101))
    assert a.writes == 4  # one write per RESERVE counters, not one per report
    b = dauth.ReportAuth(bytes(32), path)  # a power cut: never reuse a counter
    assert b.next_counter() > max(seen)
    with pytest.raises(ValueError):
        dauth.ReportAuth(b"short", path)


async def _post(ctx, gw, payload: bytes):
    return await ctx.request(Message(code=POST, uri=f"{gw.device_uri}/r", payload=payload)).response


def _device_row(gw: GatewayProc, device_id: str) -> tuple:
    db = sqlite3.connect(f"file:{gw.data / 'gateway.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT class, seq, state, result, progress, counter FROM devices "
                          "WHERE id=?", (device_id,)).fetchone()
    finally:
        db.close()


async def test_authenticated_reports(tmp_path: Path, coap_client) -> None:
    gw = GatewayProc(tmp_path / "data", ["--enrolled-only"]).start()
    ctx = coap_client
    try:
        code, dev = await control(ctx, gw, "POST", "dev", {"id": "sec-1", "class": "c",
                                                            "key": True})
        assert code == "2.01" and dev["authenticated"] is True and len(dev["key"]) == 64
        key = bytes.fromhex(dev["key"])
        assert dev["key"] not in gw.log_text(), "a key must never reach the log"
        # enrolling again keeps the key and does not show it
        code, again = await control(ctx, gw, "POST", "dev", {"id": "sec-1", "class": "c",
                                                              "key": True})
        assert code == "2.01" and "key" not in again and again["authenticated"] is True
        before = _device_row(gw, "sec-1")

        # no MAC, a MAC by another key, a tampered report: 4.01, nothing stored
        forged = {**REPORT, ReportKey.STATE: State.IDLE, ReportKey.RESULT: Result.SUCCESS,
                  ReportKey.SEQ: 9}
        wrong = dauth.ReportAuth(os.urandom(32), str(tmp_path / "wrong-ctr"))
        tampered_auth = dauth.ReportAuth(key, str(tmp_path / "tamper-ctr"))
        sealed, _ = tampered_auth.seal(REPORT)
        tampered = cbor2.loads(sealed)
        tampered[ReportKey.SEQ] = 9
        for payload, why in [(cbor2.dumps(forged), "must be authenticated"),
                             (wrong.seal(forged)[0], "does not verify"),
                             (cbor2.dumps(tampered), "does not verify"),
                             (cbor2.dumps({**forged, ReportKey.AUTH: [1, b"x"]}), "does not verify"),
                             (cbor2.dumps({**forged, ReportKey.AUTH: "x"}), "counter > 0, tag")]:
            resp = await _post(ctx, gw, payload)
            assert resp.code.dotted == "4.01", (why, resp.payload)
            assert why in resp.payload.decode()
        assert _device_row(gw, "sec-1") == before

        # the real thing: accepted, and the response's MAC verifies on the device
        dev_auth = dauth.ReportAuth(key, str(tmp_path / "ctr"))
        payload, counter = dev_auth.seal(REPORT)
        resp = await _post(ctx, gw, payload)
        assert resp.code.dotted == "2.04"
        assert dev_auth.open(resp.payload, counter) == {}
        with pytest.raises(dauth.AuthError):  # the same response does not fit another report
            dev_auth.open(resp.payload, counter + 1)
        with pytest.raises(dauth.AuthError):
            dev_auth.open(cbor2.dumps({CmdKey.OP: 1}), counter)  # unauthenticated command
        assert _device_row(gw, "sec-1")[-1] == counter

        # a replay of that accepted report (a new CoAP message, same payload): refused
        resp = await _post(ctx, gw, payload)
        assert resp.code.dotted == "4.01" and b"replayed report" in resp.payload
        # the observable command resource is closed for a device with a key
        resp = await ctx.request(Message(code=GET, uri=f"{gw.device_uri}/c/sec-1")).response
        assert resp.code.dotted == "4.01"
        # and the counter survives a gateway restart
        gw.restart()
        resp = await _post(ctx, gw, payload)
        assert resp.code.dotted == "4.01" and b"replayed report" in resp.payload
        payload, counter = dev_auth.seal({**REPORT, ReportKey.SEQ: 2})
        resp = await _post(ctx, gw, payload)
        assert resp.code.dotted == "2.04" and dev_auth.open(resp.payload, counter) == {}
        assert _device_row(gw, "sec-1")[1] == 2

        # rekey: the old key stops working at once
        code, dev = await control(ctx, gw, "POST", "dev", {"id": "sec-1", "class": "c",
                                                            "rekey": True})
        assert code == "2.01" and bytes.fromhex(dev["key"]) != key
        payload, _ = dev_auth.seal(REPORT)
        assert (await _post(ctx, gw, payload)).code.dotted == "4.01"
        assert "Traceback" not in gw.log_text()
    finally:
        assert gw.stop() == 0


async def test_device_without_key_is_unchanged_but_cannot_send_a_mac(gateway, coap_client) -> None:
    plain = {**REPORT, ReportKey.ID: "plain-1"}
    assert (await _post(coap_client, gateway, cbor2.dumps(plain))).code.dotted == "2.04"
    sealed, _ = dauth.ReportAuth(os.urandom(32), str(gateway.data.parent / "c")).seal(plain)
    resp = await _post(coap_client, gateway, sealed)
    assert resp.code.dotted == "4.01" and b"no key is enrolled" in resp.payload


def test_wire_constants_agree() -> None:
    from gateway import devauth

    assert const.C_AUTH == CmdKey.AUTH and const.R_AUTH == ReportKey.AUTH
    assert (dauth.TAG_BYTES, dauth.REPORT_LABEL, dauth.COMMAND_LABEL) == (
        devauth.TAG_BYTES, devauth.REPORT_LABEL, devauth.COMMAND_LABEL)


def test_cc_devices_add_key(gateway, tmp_path: Path) -> None:
    """`cc devices add --key` prints the key once and keeps it 0600 in FOTA_HOME; a second
    --key keeps it; the key file is never group/other readable."""
    import stat

    from test_cc_gateway import cc

    home = tmp_path / "home"
    r = cc(gateway, home, "devices", "add", "k-1", "--class", "c", "--key")
    assert r.returncode == 0, r.stderr
    path = home / "device-keys" / "k-1.key"
    key_hex = path.read_text().strip()
    assert len(key_hex) == 64 and key_hex in r.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    r = cc(gateway, home, "devices", "add", "k-1", "--class", "c", "--key")
    assert r.returncode == 0 and "keeps the report key" in r.stdout
    assert path.read_text().strip() == key_hex
    assert key_hex not in gateway.log_text()


def test_device_auth_under_micropython(tmp_path: Path) -> None:
    """device/auth.py on MicroPython (the unix port): the same MACs as CPython's hmac, a
    sealed report the gateway's check accepts, a response the device opens."""
    from upy import run_upy

    from gateway.devauth import COMMAND_LABEL, REPORT_LABEL, body_of, mac

    key = bytes(range(32))
    code = """
import binascii
from device import auth, const, cbor
key = bytes(range(32))
print(binascii.hexlify(auth.hmac_sha256(key, b"abc")).decode())
a = auth.ReportAuth(key, %r)
payload, n = a.seal({const.R_ID: "m", const.R_SEQ: 1})
print(binascii.hexlify(payload).decode(), n)
body = cbor.dumps({const.C_OP: 0})
resp = {const.C_OP: 0, const.C_AUTH: auth.mac(key, auth.COMMAND_LABEL, n, body)}
print(a.open(cbor.dumps(resp), n))
""" % str(tmp_path / "ctr")
    lines = run_upy(code).split("\n")
    assert lines[0] == hmac.new(key, b"abc", sha256).hexdigest()
    payload_hex, counter = lines[1].split()
    m = cbor2.loads(bytes.fromhex(payload_hex))
    n, tag = m[ReportKey.AUTH]
    assert n == int(counter) == 1
    assert tag == mac(key, REPORT_LABEL, n, body_of(m, int(ReportKey.AUTH)))
    assert lines[2] == "{1: 0}"
    assert COMMAND_LABEL == dauth.COMMAND_LABEL


def test_cc_keys_next_and_rotate(tmp_path: Path) -> None:
    """Rotation: `keys next` makes a second key, `keys rotate` signs with it and keeps the
    old one retired; a device trusting both accepts either signature (manifest.check)."""
    from typer.testing import CliRunner

    from cc import keys as cc_keys
    from cc.main import app
    from device import manifest as dmanifest
    from proto import manifest

    home = tmp_path / "h"

    def run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(app, ["--home", str(home), "keys", *args])

    assert run("rotate").exit_code == 2  # no key at all
    assert run("init").exit_code == 0
    r = run("rotate")
    assert r.exit_code == 2 and "cc keys next" in r.stderr
    old = cc_keys.load(home)
    assert run("next").exit_code == 0
    assert run("next").exit_code == 2  # never overwritten silently
    new = cc_keys.load(home, cc_keys.NEXT_FILE)
    assert run("rotate").exit_code == 0
    assert cc_keys.public_hex(cc_keys.load(home)) == cc_keys.public_hex(new)
    retired = list(home.glob("signing-key.retired-*.pem"))
    assert len(retired) == 1 and oct(retired[0].stat().st_mode & 0o777) == "0o600"
    trusted = [manifest.public_bytes(k.public_key()) for k in (old, new)]
    vid, cid = manifest.vendor_id("v"), manifest.class_id("v", "c")
    for n, k in enumerate((old, new)):
        signed = manifest.sign(manifest.build(seq=n + 2, vendor="v", device_class="c",
                                              digest=bytes(32), size=1, uri="/f/x"), k)
        assert dmanifest.check(signed, trusted, vid, cid, 1, str(tmp_path))[2] == n + 2
        with pytest.raises(dmanifest.Refused):  # revoked: the device dropped that key
            dmanifest.check(signed, [t for t in trusted if t != trusted[n]], vid, cid, 1,
                            str(tmp_path))
