"""The control API over OSCORE (gateway --oscore, `fota-gateway credentials add`, `cc login`):
a real gateway, the real cc, real UDP. Without a context or with a wrong one: 4.01; a replayed
protected request: refused, also after a restart."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from harness import GatewayProc, free_udp_port, run_gateway_once
from test_cc_gateway import cc


def make_credentials(data: Path, name: str) -> Path:
    code, out = run_gateway_once(["credentials", "add", name, "--data", str(data)])
    assert code == 0, out
    client = data / "oscore" / name / "client"
    assert str(client) in out
    return client


class Recorder(asyncio.DatagramProtocol):
    """A UDP relay in front of the control port that remembers what the client sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[bytes] = []
        self.client: Any = None
        self.transport: Any = None
        self.up: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client = addr
        self.sent.append(data)
        self.up.sendto(data)


class _Up(asyncio.DatagramProtocol):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rec.transport.sendto(data, self.rec.client)


def test_control_api_over_oscore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    client_dir = make_credentials(data, "hq")
    secret = client_dir / "secret.json"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "oscore").stat().st_mode) == 0o700
    code, out = run_gateway_once(["credentials", "add", "hq", "--data", str(data)])
    assert code == 2 and "exist already" in out

    gw = GatewayProc(data, ["--oscore"]).start()
    try:
        # no context: 4.01
        home = tmp_path / "home"
        r = cc(gw, home, "devices")
        assert r.returncode == 2 and "4.01" in r.stderr

        # with the context: the whole API works, uploads (Block1 inside OSCORE) included
        r = cc(gw, home, "login", str(client_dir))
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE((home / "oscore" / "secret.json").stat().st_mode) == 0o600
        r = cc(gw, home, "devices", "add", "o-1", "--class", "c")
        assert r.returncode == 0, r.stderr
        assert cc(gw, home, "keys", "init").returncode == 0
        image = tmp_path / "fw.bin"
        image.write_bytes(os.urandom(5000))
        r = cc(gw, home, "firmware", "add", str(image), "--version", "2", "--class", "c")
        assert r.returncode == 0, r.stderr + r.stdout
        r = cc(gw, home, "devices", "--json")
        assert r.returncode == 0 and '"o-1"' in r.stdout

        # a wrong context (another gateway's credentials): 4.01, nothing changes
        other = tmp_path / "other-home"
        cc(gw, other, "login", str(make_credentials(tmp_path / "other-data", "hq")))
        r = cc(gw, other, "devices", "add", "evil", "--class", "c")
        assert r.returncode == 2 and "4.01" in r.stderr, r.stderr
        r = cc(gw, home, "devices", "--json")
        assert '"evil"' not in r.stdout

        # a replayed protected request, recorded on the way: refused, also after a restart
        first = asyncio.run(_record_one_request(gw, home))
        answer = asyncio.run(_raw(first, gw.control_port))
        assert answer is not None and answer[1] == 0x81 and b"Replay detected" in answer, answer
        gw.restart()  # the replay window is persisted (or Echo-recovered: still 4.01)
        answer = asyncio.run(_raw(first, gw.control_port))
        assert answer is not None and answer[1] == 0x81, answer  # 4.01
        r = cc(gw, home, "devices", "--json")  # and the real client still gets in
        assert r.returncode == 0 and '"o-2"' in r.stdout, r.stderr
        assert "Traceback" not in gw.log_text()
    finally:
        assert gw.stop() == 0


async def _record_one_request(gw: GatewayProc, home: Path) -> bytes:
    """`cc devices add o-2` through a recording relay; returns its first datagram."""
    from typer.testing import CliRunner

    from cc.main import app

    loop = asyncio.get_running_loop()
    rec = Recorder(gw.control_port)
    t, _ = await loop.create_datagram_endpoint(lambda: rec, local_addr=("127.0.0.1", 0))
    rec.up, _ = await loop.create_datagram_endpoint(
        lambda: _Up(rec), remote_addr=("127.0.0.1", gw.control_port))
    relay_uri = f"coap://127.0.0.1:{t.get_extra_info('sockname')[1]}"
    try:
        result = await loop.run_in_executor(None, lambda: CliRunner().invoke(
            app, ["--gateway", relay_uri, "--home", str(home), "devices", "add", "o-2",
                  "--class", "c"]))
        assert result.exit_code == 0, result.stderr
        return rec.sent[0]
    finally:
        t.close()
        rec.up.close()


async def _raw(datagram: bytes, port: int) -> bytes | None:
    """Send one datagram from a fresh socket (a new source port: no dedup cache hit)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(data)

    t, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    try:
        for _ in range(4):
            t.sendto(datagram)
            try:
                return await asyncio.wait_for(asyncio.shield(got), 1.0)
            except asyncio.TimeoutError:
                continue
        return None
    finally:
        t.close()


def test_startup_checks(tmp_path: Path) -> None:
    args = ["run", "--bind", f"127.0.0.1:{free_udp_port()}", "--data", str(tmp_path / "d")]
    code, out = run_gateway_once([*args, "--control-bind", f"127.0.0.1:{free_udp_port()}",
                                  "--oscore"])
    assert code == 2 and "--oscore without credentials" in out, out
    code, out = run_gateway_once([*args, "--control-bind", "0.0.0.0:5684"])
    assert code == 2 and "require OSCORE with --oscore" in out, out
    code, out = run_gateway_once(["credentials", "add", "../x", "--data", str(tmp_path / "d")])
    assert code == 2 and "name:" in out


def test_cc_login_checks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cc.main import app

    r = CliRunner().invoke(app, ["--home", str(tmp_path / "h"), "login", str(tmp_path)])
    assert r.exit_code == 2 and "no readable secret.json" in r.stderr
