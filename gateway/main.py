"""``fota-gateway`` command line (typer)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from proto import uris

from . import logs
from .ratelimit import DEFAULT_RATE
from .server import Config, ConfigError, parse_hostport, run as run_server

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="FOTA gateway: serves firmware to devices over CoAP, takes orders from cc.")


@app.callback()
def _main() -> None:
    """Keep `run` a subcommand even though it is the only one."""


@app.command()
def run(
    bind: str = typer.Option(f"[::]:{uris.DEFAULT_DEVICE_PORT}", help="HOST:PORT for devices."),
    control_bind: str = typer.Option(f"127.0.0.1:{uris.DEFAULT_CONTROL_PORT}",
                                     help="HOST:PORT for the control API (loopback only)."),
    data: Path = typer.Option(Path("./fota-data"), help="Directory for the database and blobs."),
    log_json: bool = typer.Option(False, "--log-json", help="Log JSON lines instead of text."),
    enrolled_only: bool = typer.Option(False, "--enrolled-only",
                                       help="Refuse reports from devices not enrolled by cc."),
    max_downloads: int = typer.Option(0, "--max-downloads", min=0, metavar="N",
                                      help="At most N devices downloading at once over all "
                                           "campaigns; more are told to come back (0: no cap)."),
    rate_limit: float = typer.Option(DEFAULT_RATE, "--rate-limit", min=0, metavar="N",
                                     help="Datagrams per second per source host on the device "
                                          "bind, excess dropped (0: off; loopback exempt)."),
    limit_loopback: bool = typer.Option(False, "--limit-loopback",
                                        help="Apply --rate-limit to loopback sources too."),
) -> None:
    """Run the gateway until SIGTERM or SIGINT (exit 0); exit 2 on a configuration error."""
    logs.setup(log_json)
    try:
        cfg = Config(bind=parse_hostport(bind, "--bind"),
                     control_bind=parse_hostport(control_bind, "--control-bind"),
                     data=data, enrolled_only=enrolled_only,
                     max_downloads=max_downloads or None,
                     rate_limit=rate_limit, limit_loopback=limit_loopback)
        asyncio.run(run_server(cfg))
    except ConfigError as e:
        logs.log.error("refusing to start: %s", e)
        raise typer.Exit(2) from None
