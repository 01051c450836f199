"""Encrypted firmware end to end: the real gateway, the real `cc`, the agent (sim devices, keys
loaded as `fota-sim --keys` loads them), every datagram through the relay captured.

An encrypted campaign reaches the keyed devices; a device handed another device's wrapped key
and a device with no firmware key refuse before downloading (result key_unavailable, in `cc
status`); neither the blob on the gateway's disk nor any datagram holds a 64-byte run of the
plaintext; power cuts mid-download resume; a ciphertext tampered with on the gateway's disk
ends as an integrity failure with the running image untouched; a rotated firmware key needs
only a re-wrap (`cc firmware wrap`); class-key mode.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from cc import firmware
from cc import keys as cc_keys
from device import coap
from harness import control
from powercut import PowerCut, PowerOns, settled
from sim.aio import AioLink
from sim.hostaes import aes
from sim.main import load_keys
from sim.relay import Relay
from test_agent_e2e import CLASS, Ops, job_of, spec, started

RUN = 32


def plaintext(size: int) -> bytes:
    """A firmware-like image: text and structure repeat, as in real images."""
    lines = b"".join(b"def handler_%05d(x): return secret_table[%d] ^ x  # IP\n" % (i, i * 7)
                     for i in range(size // 40 + 1))
    return lines[:size]


def holds_run(haystack: bytes, secret: bytes, n: int = 64) -> bool:
    """Could ``haystack`` hold an ``n``-byte run of ``secret``? Every such run contains one of
    the ``n // 2``-byte chunks of ``secret`` that start at multiples of ``n // 2``; finding
    none proves there is no run (a find may be a shorter match: the check errs strict)."""
    half = n // 2
    return any(secret[k:k + half] in haystack for k in range(0, len(secret) - half + 1, half))


def test_the_run_detector_finds_a_run_anywhere() -> None:
    secret = plaintext(4096)
    for start in (0, 1, 31, 100, 4032):
        assert holds_run(b"xx" + secret[start:start + 64] + b"yy", secret)
    assert not holds_run(os.urandom(8192), secret)


async def enrol(ops: Ops, *ids: str, key: bool = True) -> None:
    for i in ids:
        rc, out, err = await ops.cc("devices", "add", i, "--class", CLASS,
                                    *(("--key",) if key else ()))
        assert rc == 0, err


async def add_encrypted(ops: Ops, data: bytes, seq: int, *more: str) -> tuple[dict, str]:
    f = ops.tmp / f"enc-{seq}.bin"
    f.write_bytes(data)
    rc, out, err = await ops.cc("firmware", "add", str(f), "--version", str(seq), "--class",
                                CLASS, "--encrypt", "--json", *more)
    assert rc == 0, err
    return json.loads(out), err


async def test_encrypted_campaign_keys_refusals_and_no_plaintext_on_disk_or_air(
        gateway, coap_client, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    home = tmp_path / "cc-home"
    trust = await ops.keys()
    await enrol(ops, "enc-1", "enc-2", "enc-thief")
    await enrol(ops, "enc-nokey", key=False)
    data = plaintext(48 * 1024)
    image, err = await add_encrypted(ops, data, 2)
    assert image["encrypted"] is True and image["recipients"] == 3, image
    assert "1 device(s) of class" in err and "enc-nokey" in err  # told who will refuse

    # The gateway hands enc-thief the key wrapped for enc-1 (what a mixed-up or malicious
    # gateway could do): it must not unwrap under enc-thief's own key.
    enc1_kek = bytes.fromhex((home / "device-keys" / "enc-1.fw").read_text().strip())
    cek = bytes.fromhex((home / "content-keys" / f"{image['id']}.key").read_text().strip())
    code, body = await control(coap_client, gateway, "POST", f"fw/{image['id']}/keys",
                               {"enc-thief": aes_key_wrap(enc1_kek, cek)})
    assert code == "2.04", body

    listing = await ops.json("firmware", "list")
    assert [(r["id"], r.get("encrypted")) for r in listing] == [(image["id"], True)]
    ops.env["COLUMNS"] = "200"  # one line per image
    rc, table, _ = await ops.cc("firmware", "list")
    assert rc == 0 and "yes (3 keys)" in table

    blob = (gateway.data / "blobs" / image["digest"]).read_bytes()
    assert len(blob) == len(data) and not holds_run(blob, data)
    # compressible: also deflated, then encrypted (its own IV, the same CEK); no deltas
    packed = image["compressed"]
    assert packed["kind"] == "deflate" and packed["sent_size"] < len(data) // 2, packed
    assert image["deltas"] == []
    packed_blob = (gateway.data / "blobs" / packed["sent"]).read_bytes()
    assert len(packed_blob) == packed["sent_size"] and not holds_run(packed_blob, data)

    specs = [spec(tmp_path, i, [trust], version=1)
             for i in ("enc-1", "enc-2", "enc-thief", "enc-nokey")]
    load_keys(specs, home / "device-keys", None)  # what `fota-sim --keys DIR` does
    assert "fw_key" in specs[0].extra and "fw_key" not in specs[3].extra
    seen: list[bytes] = []
    async with Relay(("127.0.0.1", 0), ("127.0.0.1", gateway.device_port), duration=60) as relay:
        relay.tap = lambda d, datagram: seen.append(datagram)
        async with started(ops, specs, relay.address[1]) as running:
            rc, camp = await ops.upgrade(image["id"])
            # fleet rollback of an encrypted image: re-signed at seq 3 with the same IV,
            # ciphertext and wrapped keys; enc-1 takes it like any update
            rrc, out, err = await ops.cc("rollback", "--to", image["id"], "--device", "enc-1",
                                         "--wait", "--json", timeout=60)
            assert rrc == 0, (out, err)
    assert json.loads(out)["image"] == image["id"]
    assert running.devices[0].agent is not None and running.devices[0].agent.seq == 3
    assert rc == 1, camp  # two devices refused: the campaign did not fully succeed
    for ok in ("enc-1", "enc-2"):
        job = job_of(camp, ok)
        assert (job["state"], job["result"]) == ("succeeded", "success")
        assert (job["sent"], job["size"]) == ("deflate", packed["sent_size"])  # decrypt, inflate
        slots_dir = tmp_path / "devices" / ok / "slots"
        assert (slots_dir / "b.bin").read_bytes() == data
    for refused in ("enc-thief", "enc-nokey"):
        job = job_of(camp, refused)
        assert (job["state"], job["result"], job["progress"]) == ("failed", "key_unavailable", 0)
        assert not (tmp_path / "devices" / refused / "slots" / "b.bin").exists()  # no download
    rc, status, _ = await ops.cc("status", str(camp["id"]))
    assert "key_unavailable" in status
    assert len(seen) > 2 * packed["sent_size"] // 1024  # the downloads went through the relay
    assert not holds_run(b"".join(seen), data)
    # bytes on the air: Block2 payloads equal what is sent; the wrapped key adds 40 per command
    assert len(blob) <= len(data) * 1.01

    # Class-key mode, added to the existing image by re-wrapping (nothing re-encrypted): a
    # device holding only the class key takes it.
    rc, _, err = await ops.cc("firmware", "wrap", image["id"], "--class-key")
    assert rc == 0 and "class key of" in err, err
    assert (home / "class-keys" / f"{CLASS}.fw").stat().st_mode & 0o077 == 0
    cls_spec = spec(tmp_path, "enc-class", [trust], version=1)
    load_keys([cls_spec], home / "device-keys", home / "class-keys")  # `--class-keys DIR`
    assert "class_key" in cls_spec.extra and "fw_key" not in cls_spec.extra
    async with started(ops, [cls_spec], gateway.device_port) as running:
        rc, out, err = await ops.cc("upgrade", image["id"], "--device", "enc-class", "--wait",
                                    "--json", timeout=60)
    assert rc == 0, (out, err)
    assert (tmp_path / "devices" / "enc-class" / "slots" / "b.bin").read_bytes() == data


async def test_the_gateway_takes_only_encrypted_deflate_variants_of_an_encrypted_image(
        gateway, coap_client, tmp_path: Path) -> None:
    """A plaintext copy of an encrypted image, or a delta of one, is refused as a variant."""
    ops = Ops(gateway, tmp_path)
    await ops.keys()
    data = plaintext(8 * 1024)
    image, _ = await add_encrypted(ops, data, 2)
    assert image["compressed"]["kind"] == "deflate"
    key = cc_keys.load(tmp_path / "cc-home")
    same = dict(vendor=image["vendor"], device_class=CLASS,
                digest=bytes.fromhex(image["installed_digest"]), size=len(data),
                sent=bytes.fromhex(image["compressed"]["sent"]), sent_size=100)
    plain_copy = firmware.variant_manifest(key, image, **same)
    delta = firmware.variant_manifest(key, image, **same, iv=bytes(16),
                                      base=bytes.fromhex(image["digest"]))
    for signed, why in ((plain_copy, "encrypted exactly when"), (delta, "cannot diff")):
        code, body = await control(coap_client, gateway, "POST", f"fw/{image['id']}/variants",
                                   {"manifest": signed})
        assert code == "4.00" and why in str(body), body
    assert len(await ops.json("firmware", "deltas", image["id"])) == 1  # the one cc signed


async def test_encrypted_download_resumes_after_power_cuts_and_tampering_fails(
        gateway, tmp_path: Path) -> None:
    ops = Ops(gateway, tmp_path)
    home = tmp_path / "cc-home"
    trust = await ops.keys()
    await enrol(ops, "enc-cut")
    data = plaintext(64 * 1024)
    image, _ = await add_encrypted(ops, data, 2, "--no-compress")  # cuts counted in blocks
    root = tmp_path / "dev"
    root.mkdir()
    sp = spec(tmp_path, "enc-cut", [trust])
    load_keys([sp], home / "device-keys", None)
    config = {"id": "enc-cut", "class": CLASS, "trust": [trust], "version": 1,
              "block_size": 1024, "wake_s": 0.05, "aes": aes, **sp.extra,
              "transfer": "stop-and-wait",  # cuts counted per block request (windowed: the
              # campaign test above; a cut mid-window: tests/test_window_e2e.py)
              "counter_file": str(root / "counter")}

    cuts = [20, 41, 58]  # the power goes at these block requests (counted from the first)
    blocks = 0

    async def cut_at_blocks(link: AioLink, req: Any) -> Any:
        nonlocal blocks
        if req.block2 is not None:
            blocks += 1
            if cuts and blocks >= cuts[0]:
                cuts.pop(0)
                raise PowerCut
        return await link.request(req)

    p = PowerOns(config, root, gateway.device_port)
    await p.run(lambda a: True)  # first report: the gateway learns the device
    await ops.json("upgrade", image["id"], "--all")
    agent = await p.run(settled(2), exchange=cut_at_blocks, seconds=30)
    assert p.cuts == 3
    assert (root / "slots" / "b.bin").read_bytes() == data  # installed, decrypted, confirmed
    assert "cek" not in str(agent.s) and agent.s["img"] is None  # no content key on flash

    # Seq 3, tampered with on the gateway's disk after the gateway checked its digest (an
    # attacker on the gateway host): one flipped ciphertext bit, same size, inode and mtime.
    data3 = plaintext(40 * 1024)[::-1]
    image3, _ = await add_encrypted(ops, data3, 3, "--no-compress")
    blob = gateway.data / "blobs" / image3["digest"]
    # Key rotation first: the device's keys are replaced (--rekey), the image's content key is
    # wrapped again for it; the image, its id and its blob stay as they are (no re-encryption).
    old_fw = config["fw_key"]
    rc, _, err = await ops.cc("devices", "add", "enc-cut", "--class", CLASS, "--rekey")
    assert rc == 0, err
    load_keys([sp], home / "device-keys", None)
    assert sp.extra["fw_key"] != old_fw
    config.update(key=sp.extra["key"], fw_key=sp.extra["fw_key"])
    before = blob.read_bytes()
    rc, out, err = await ops.cc("firmware", "wrap", image3["id"], "--device", "enc-cut",
                                "--json")
    assert rc == 0 and json.loads(out)["id"] == image3["id"], err
    assert blob.read_bytes() == before
    link = await AioLink.open("127.0.0.1", gateway.device_port, ack_timeout=1.0)
    try:  # one block fetched: the gateway verifies and opens the blob
        resp = await link.request(coap.Request(coap.GET, image3["uri"], block2=(0, 6)))
        assert resp is not None and resp.code == 0x45
    finally:
        link.close()
    st = blob.stat()
    with open(blob, "r+b") as f:
        f.seek(30000)
        b = f.read(1)
        f.seek(30000)
        f.write(bytes([b[0] ^ 0x01]))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    await ops.json("upgrade", image3["id"], "--all")
    agent = await p.run(lambda a: a.state == 0 and a.s["job"] is None and a.s["result"] != 1,
                        seconds=30)
    # integrity failure, still on seq 2 (the rotated key unwrapped: no key_unavailable)
    assert agent.s["result"] == 5 and agent.seq == 2
    assert (root / "slots" / "b.bin").read_bytes() == data  # the running slot: untouched
    camp = await ops.json("status")
    assert job_of(await ops.json("status", str(camp[-1]["id"])), "enc-cut")["result"] == \
        "integrity_failure"
