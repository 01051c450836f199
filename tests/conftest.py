"""Shared fixtures.

``gateway``: a started ``harness.GatewayProc`` (real ``python -m gateway run`` subprocess on
127.0.0.1 with free ports and a fresh data dir under ``tmp_path``), stopped after the test.
See ``tests/harness.py`` for its attributes (``device_uri``, ``control_uri``, ``device_port``,
``control_port``, ``data``, ``kill()``, ``stop()``, ``restart()``, ``log_text()``) and for the
async helpers ``control()`` and ``publish_image()``.

``coap_client``: an aiocoap client context (UDP only), shut down after the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import GatewayProc  # noqa: E402
from pg import pg_cluster, pg_url  # noqa: E402,F401  (PostgreSQL fixtures, tests/pg.py)


@pytest.fixture
def gateway(tmp_path: Path):
    gw = GatewayProc(tmp_path / "gw-data").start()
    try:
        yield gw
    finally:
        if gw.alive():
            gw.stop()


@pytest.fixture
async def coap_client():
    from aiocoap import Context

    ctx = await Context.create_client_context(transports=["udp6"])
    try:
        yield ctx
    finally:
        await ctx.shutdown()
