"""``fota-gateway`` command line (typer)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import urlsplit

import typer

from proto import uris
from proto.cli import run_app
from proto.version import version_line

from . import datalock, fleet, logs, observe, oscore_creds, ratelimit, replies, sources, uploads
from .server import Config, ConfigError, parse_hostport, run as run_server
from .storage import worker

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="FOTA gateway: serves firmware to devices over CoAP, takes orders from cc.")


def cli(argv: list[str] | None = None) -> None:
    """The ``fota-gateway`` entry point (usage errors are one line, exit 2)."""
    run_app(app, "fota-gateway", argv)


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line("fota-gateway"))
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit.")) -> None:
    """Keep `run` a subcommand even though it is the only one."""


@app.command()
def run(
    bind: str = typer.Option(f"[::]:{uris.DEFAULT_DEVICE_PORT}", help="HOST:PORT for devices."),
    control_bind: str = typer.Option(f"127.0.0.1:{uris.DEFAULT_CONTROL_PORT}",
                                     help="HOST:PORT for the control API (loopback unless "
                                          "--oscore)."),
    data: Path = typer.Option(Path("./fota-data"), help="Directory for the database and blobs."),
    store: str = typer.Option("", "--store", metavar="URL",
                              help="The database: sqlite:///PATH (default: a file under --data) "
                                   "or postgresql://… (several gateways may share it)."),
    store_batch: int = typer.Option(worker.DEFAULT_MAX_BATCH, "--store-batch", min=1,
                                    metavar="N",
                                    help="At most N reports share one commit (group commit)."),
    store_queue: int = typer.Option(worker.DEFAULT_MAX_PENDING, "--store-queue", min=1,
                                    metavar="N",
                                    help="At most N requests wait for the store; more are "
                                         "answered 5.03 at once."),
    log_json: bool = typer.Option(False, "--log-json", help="Log JSON lines instead of text."),
    enrolled_only: bool = typer.Option(False, "--enrolled-only",
                                       help="Refuse reports from devices not enrolled by cc."),
    auto_register: int = typer.Option(fleet.DEFAULT_AUTO_REGISTER, "--auto-register", min=0,
                                      metavar="N",
                                      help="At most N devices that registered themselves (not "
                                           "enrolled by cc) at once; more are refused (0: "
                                           "like --enrolled-only)."),
    auto_expiry: float = typer.Option(fleet.DEFAULT_AUTO_EXPIRY, "--auto-expiry", min=1,
                                      metavar="SECONDS",
                                      help="A self-registered device never enrolled, without "
                                           "jobs and not heard from this long is deleted."),
    max_downloads: int = typer.Option(0, "--max-downloads", min=0, metavar="N",
                                      help="At most N devices downloading at once over all "
                                           "campaigns; more are told to come back (0: no cap)."),
    rate_limit: float = typer.Option(ratelimit.DEFAULT_RATE, "--rate-limit", min=0, metavar="N",
                                     help="Datagrams per second per source host (IPv4 address, "
                                          "IPv6 /64) on the device bind, excess dropped (0: no "
                                          "rate limits; loopback exempt)."),
    rate_burst: float = typer.Option(ratelimit.DEFAULT_BURST, "--rate-burst", min=1, metavar="N",
                                     help="Datagrams a host may send at once beyond its rate (a "
                                          "download window of 16 blocks needs about 32)."),
    rate_limit_net: float = typer.Option(ratelimit.DEFAULT_NET_RATE, "--rate-limit-net", min=0,
                                         metavar="N", help="Datagrams per second per IPv4 /24 "
                                                           "or IPv6 /48."),
    rate_limit_total: float = typer.Option(ratelimit.DEFAULT_TOTAL_RATE, "--rate-limit-total",
                                           min=0, metavar="N",
                                           help="Datagrams per second over all sources not "
                                                "verified (see --verified-ttl)."),
    limit_loopback: bool = typer.Option(False, "--limit-loopback",
                                        help="Apply rate limits and source verification to "
                                             "loopback sources too."),
    verified_ttl: float = typer.Option(sources.DEFAULT_TTL, "--verified-ttl", min=1,
                                       metavar="SECONDS",
                                       help="An address is served blocks and observations this "
                                            "long after its last report or RFC 9175 Echo; "
                                            "others get 4.01 + Echo."),
    verified_max: int = typer.Option(sources.DEFAULT_MAX, "--verified-max", min=1, metavar="N",
                                     help="Verified addresses kept (oldest forgotten)."),
    reply_cache: int = typer.Option(replies.DEFAULT_MAX, "--reply-cache", min=1, metavar="N",
                                    help="Devices whose last report answer is kept for "
                                         f"{replies.EXCHANGE_LIFETIME:g} s, for retransmissions "
                                         "(size it to the fleet)."),
    observe_lifetime: float = typer.Option(observe.DEFAULT_LIFETIME, "--observe-lifetime",
                                           min=1, metavar="SECONDS",
                                           help="An observation of c/<id> ends this long after "
                                                "its last registration (its Max-Age) or on RST."),
    observe_per_device: int = typer.Option(observe.DEFAULT_PER_DEVICE, "--observe-per-device",
                                           min=0, metavar="N", help="Observers per device."),
    observe_per_source: int = typer.Option(observe.DEFAULT_PER_SOURCE, "--observe-per-source",
                                           min=0, metavar="N",
                                           help="Observations per source host."),
    observe_max: int = typer.Option(observe.DEFAULT_TOTAL, "--observe-max", min=0, metavar="N",
                                    help="Observations in total."),
    uploads_max: int = typer.Option(uploads.MAX_TRANSFERS, "--uploads-max", min=1, metavar="N",
                                    help="Partial Block1 uploads on the control API at once."),
    uploads_per_source: int = typer.Option(uploads.MAX_PER_SOURCE, "--uploads-per-source",
                                           min=1, metavar="N",
                                           help="Partial uploads at once from one host."),
    upload_idle: float = typer.Option(uploads.IDLE_SECONDS, "--upload-idle", min=1,
                                      metavar="SECONDS",
                                      help="A partial upload silent this long is dropped."),
    oscore: bool = typer.Option(False, "--oscore",
                                help="Control API only through OSCORE (see `credentials add`); "
                                     "needed for a non-loopback --control-bind."),
    http: str = typer.Option("", "--http", metavar="HOST:PORT",
                             help="Serve the dashboard, /metrics and /healthz here (off by "
                                  "default; a non-loopback bind needs `web-token`)."),
    webhook: list[str] = typer.Option([], "--webhook", metavar="URL",
                                      help="POST signed JSON events here (repeatable): a "
                                           "campaign paused by itself or done, a rollback."),
) -> None:
    """Run the gateway until SIGTERM or SIGINT (exit 0); exit 2 on a configuration error."""
    logs.setup(log_json)
    try:
        cfg = Config(bind=parse_hostport(bind, "--bind"),
                     control_bind=parse_hostport(control_bind, "--control-bind"),
                     data=data, store=store or None, store_batch=store_batch,
                     store_pending=store_queue, enrolled_only=enrolled_only,
                     max_downloads=max_downloads or None,
                     budgets=ratelimit.Budgets(rate_limit, rate_burst, rate_limit_net,
                                               rate_limit_total),
                     limit_loopback=limit_loopback, verified_ttl=verified_ttl,
                     verified_max=verified_max, reply_cache=reply_cache,
                     observe_lifetime=observe_lifetime, observe_per_device=observe_per_device,
                     observe_per_source=observe_per_source, observe_total=observe_max,
                     uploads_max=uploads_max, uploads_per_source=uploads_per_source,
                     upload_idle=upload_idle, auto_register=auto_register,
                     auto_expiry=auto_expiry, oscore=oscore,
                     http=parse_hostport(http, "--http") if http else None,
                     webhooks=tuple(_webhook_url(u) for u in webhook))
        try:
            held = datalock.lock(data)  # released by the kernel when the process ends
        except (datalock.Locked, OSError) as e:
            raise ConfigError(str(e)) from None
        try:
            asyncio.run(run_server(cfg))
        finally:
            os.close(held)
    except ConfigError as e:
        logs.log.error("refusing to start: %s", e)
        raise typer.Exit(2) from None


def _webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--webhook: expected an http:// or https:// URL, got {url!r}")
    return url


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


@app.command()
def migrate(
    to: str = typer.Option(..., "--to", metavar="URL",
                           help="The empty store to fill: postgresql://… or sqlite:///…"),
    data: Path = typer.Option(Path("./fota-data"), help="The gateway's data directory."),
    source: str = typer.Option("", "--from", metavar="URL",
                               help="The store to copy (default: the SQLite file under --data)."),
) -> None:
    """Copy the gateway's state to another store (SQLite -> PostgreSQL), ids and all. Stop the
    gateway first; blobs stay files under --data. Exit 2 on a bad URL or a non-empty target."""
    from .storage import SQLITE_FILE, BadStoreUrl, SchemaTooNew, backend_for, default_url
    from .storage.migrate import MigrateError, copy

    try:
        src, dst = backend_for(source or default_url(data)), backend_for(to)
        if not source and not (data / SQLITE_FILE).exists():
            raise MigrateError(f"no gateway database under {data}")
        counts = copy(src, dst, blobs=data / "blobs")
    except (BadStoreUrl, MigrateError, SchemaTooNew) as e:
        typer.echo(f"fota-gateway migrate: {e}", err=True)
        raise typer.Exit(2) from None
    except Exception as e:  # a database that cannot be reached or read: one line
        typer.echo(f"fota-gateway migrate: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo("copied " + ", ".join(f"{n} {t}" for t, n in counts.items()) + f" to {dst}")


@app.command("web-token")
def web_token(
    name: str = typer.Argument(..., help="The operator's name (shown in the event log)."),
    data: Path = typer.Option(Path("./fota-data"), help="The gateway's data directory."),
    revoke: bool = typer.Option(False, "--revoke", help="Remove NAME's token instead."),
) -> None:
    """Make (or replace) an operator token for the dashboard and /metrics; printed once, only
    its SHA-256 is kept. A running gateway reads tokens at start: restart it after a change."""
    from .web import auth as web_auth

    try:
        if revoke:
            web_auth.revoke_token(data, name)
            typer.echo(f"token of {name} revoked")
            return
        token = web_auth.add_token(data, name)
    except (web_auth.TokenError, OSError) as e:
        typer.echo(f"fota-gateway: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
