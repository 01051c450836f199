"""Helpers for the cc test modules that share one gateway per module (issue 9's tests).

    from ccfleet import gw, home  # noqa: F401 (module-scoped fixtures: one gateway per module,
                                  # a cc home with a signing key)
    cmd = await wake(ctx, gw, "dev-1", seq=1, ...)    # one device report (test_cc_gateway.CLASS)
    result = await run(fn, *args)                     # fn in a thread (cc is synchronous)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import GatewayProc
from test_cc_gateway import CLASS, report

from cc.main import app
from proto.codes import Result, State


@pytest.fixture(scope="module")
def gw(tmp_path_factory, request):
    g = GatewayProc(tmp_path_factory.mktemp(request.module.__name__) / "gw-data").start()
    try:
        yield g
    finally:
        if g.alive():
            g.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory, request) -> Path:
    h = tmp_path_factory.mktemp(f"{request.module.__name__}-home") / "cc-home"
    assert CliRunner().invoke(app, ["--home", str(h), "keys", "init"]).exit_code == 0
    return h


async def wake(ctx, gw, device: str, seq: int, **fields):
    return await report(ctx, gw, id=device, **{"class": CLASS}, seq=seq,
                        state=fields.pop("state", State.IDLE),
                        result=fields.pop("result", Result.INITIAL), **fields)


def run(fn, *args):
    return asyncio.to_thread(fn, *args)
