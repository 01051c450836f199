"""``fota-gateway`` command line (typer)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from proto import uris

from . import logs, oscore_creds
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
                                     help="HOST:PORT for the control API (loopback unless "
                                          "--oscore)."),
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
    oscore: bool = typer.Option(False, "--oscore",
                                help="Control API only through OSCORE (see `credentials add`); "
                                     "needed for a non-loopback --control-bind."),
) -> None:
    """Run the gateway until SIGTERM or SIGINT (exit 0); exit 2 on a configuration error."""
    logs.setup(log_json)
    try:
        cfg = Config(bind=parse_hostport(bind, "--bind"),
                     control_bind=parse_hostport(control_bind, "--control-bind"),
                     data=data, enrolled_only=enrolled_only,
                     max_downloads=max_downloads or None,
                     rate_limit=rate_limit, limit_loopback=limit_loopback, oscore=oscore)
        asyncio.run(run_server(cfg))
    except ConfigError as e:
        logs.log.error("refusing to start: %s", e)
        raise typer.Exit(2) from None


credentials_app = typer.Typer(no_args_is_help=True,
                              help="OSCORE credentials of remote control centers.")
app.add_typer(credentials_app, name="credentials")


@credentials_app.command("add")
def credentials_add(
    name: str = typer.Argument(..., help="The control center's name."),
    data: Path = typer.Option(Path("./fota-data"), help="The gateway's data directory."),
) -> None:
    """Make a paired OSCORE context; copy the printed client directory to the control
    center and run `cc login DIR` there. The gateway must run with --oscore."""
    try:
        client = oscore_creds.add(data, name)
    except (oscore_creds.CredentialError, OSError) as e:
        typer.echo(f"fota-gateway: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"client credentials for {name}: {client}")
    typer.echo("copy that directory to the control center (it holds a secret), then: "
               "cc login DIR")
