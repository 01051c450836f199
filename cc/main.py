"""The ``cc`` command line: typer wiring only; the work lives in the modules it calls.

Every failure the operator can fix is a ``CcError``: one line on stderr and exit status 2.
``upgrade --wait`` and ``status --watch`` exit 1 when any job failed, was cancelled or timed out.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import inspect
import typing
import io
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar

import typer
from rich.markup import escape

from proto import uris
from proto.cli import run_app
from proto.control import DEFAULT_VENDOR
from proto.version import version_line

from . import campaign, render
from .client import ControlClient, segment
from .errors import CcError, GatewayError
from .settings import (DEFAULT_CONFIG, DEFAULT_GATEWAY, DEFAULT_HOME, Gateway, Profile,
                       load_profile, oscore_dir, parse_gateway)


def _lazy(name: str) -> Any:
    """A module loaded on first use (importlib's LazyLoader): `cc status` never pays for
    cryptography, tarfile or sqlite3, which only the key, firmware and backup commands need."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


backup, encryption, firmware, keys = (_lazy(f"cc.{m}") for m in (
    "backup", "encryption", "firmware", "keys"))

app = typer.Typer(help="fota control center: signing key, firmware, devices, upgrades.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown")
keys_app = typer.Typer(help="The Ed25519 signing key (it never leaves this machine).",
                       no_args_is_help=True)
firmware_app = typer.Typer(help="Firmware images: add (upload + sign) and list.",
                           no_args_is_help=True)
devices_app = typer.Typer(help="List devices (bare) or add (enrol) one.",
                          invoke_without_command=True)
device_app = typer.Typer(help="One device: its state, jobs and events.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(firmware_app, name="firmware")
app.add_typer(devices_app, name="devices")
app.add_typer(device_app, name="device")

T = TypeVar("T")
JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (the control API's keys).")
STATUS_JOBS = 20  # jobs `cc status N` shows: the counts say the rest (a campaign of 100,000)


@dataclass
class Settings:
    """Options and environment (None: not given), completed from the config file's profile on
    first use (inside a command, so a bad config file is a one-line `cc:` error)."""

    gateway_option: str | None
    home_option: Path | None
    profile_name: str | None
    config: Path | None

    @functools.cached_property
    def profile(self) -> Profile:
        return load_profile(self.config, self.profile_name)

    @property
    def home(self) -> Path:
        return (self.home_option or self.profile.home or DEFAULT_HOME).expanduser()

    @property
    def gateway(self) -> Gateway:  # parsed on use: `cc keys` needs no gateway
        return parse_gateway(self.gateway_option or self.profile.gateway or DEFAULT_GATEWAY)

    @property
    def oscore(self) -> Path:
        return self.profile.oscore or oscore_dir(self.home)

    def client(self) -> ControlClient:
        oscore = self.oscore
        return ControlClient(self.gateway, oscore=oscore if oscore.is_dir() else None)


def settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def fails_cleanly(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn a CcError (or OSError) into one line on stderr and exit 2; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CcError as e:
            print(f"cc: {' '.join(str(e).split())}", file=sys.stderr)
            raise typer.Exit(2) from None
        except BrokenPipeError:  # `cc ... | head`: the reader left; that is not an error to report
            _silence_stdout()
            raise typer.Exit(141) from None
        except OSError as e:  # e.g. the image vanished or became unreadable mid-upload
            where = f": {e.filename}" if e.filename else ""
            print(f"cc: {e.strerror or e}{where}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("cc: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (CliRunner): nothing will flush it


def cli(argv: list[str] | None = None) -> None:
    """The `cc` entry point: usage errors (a bad --version value, an unknown option) are one
    `cc:` line and exit 2 like every other error, not a framed help box."""
    run_app(app, "cc", argv)


def _version(value: bool) -> None:
    if value:
        print(version_line("cc"))
        raise typer.Exit(0)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@app.callback()
def main(
    ctx: typer.Context,
    gateway: Optional[str] = typer.Option(
        None, "--gateway", envvar="FOTA_GATEWAY", metavar="coap://HOST:PORT",
        help=f"The gateway's control API (else the profile's, else {DEFAULT_GATEWAY})."),
    home: Optional[Path] = typer.Option(
        None, "--home", envvar="FOTA_HOME", metavar="DIR",
        help=f"Where the signing key lives (else the profile's, else {DEFAULT_HOME})."),
    profile: Optional[str] = typer.Option(None, "--profile", envvar="FOTA_PROFILE",
                                          metavar="NAME", help="A profile of the config file."),
    config: Optional[Path] = typer.Option(None, "--config", envvar="FOTA_CONFIG", metavar="FILE",
                                          help=f"The config file (else {DEFAULT_CONFIG})."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log CoAP traffic (aiocoap)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print cc's version and exit."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.CRITICAL,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings(gateway, home, profile, config)


# ---- keys -----------------------------------------------------------------------------------
@keys_app.command("init")
@fails_cleanly
def keys_init(ctx: typer.Context,
              force: bool = typer.Option(False, "--force", help="Replace an existing key.")):
    """Create the signing key (0600, in a 0700 directory)."""
    home = settings(ctx).home
    path = keys.init(home, force=force)
    render.out.print(f"signing key written to {path}")
    public = keys.public_hex(keys.load(home))
    render.out.print(f"public key (configure devices to trust it): {public}")


@keys_app.command("next")
@fails_cleanly
def keys_next(ctx: typer.Context):
    """Make the next signing key (rotation step 1): ship its public key to devices in an
    image signed by the current key, then `cc keys rotate`."""
    home = settings(ctx).home
    path = keys.init(home, name=keys.NEXT_FILE)
    render.out.print(f"next signing key written to {path}")
    render.out.print("public key (add it to the devices' trust list, in an image signed by the "
                     f"current key): {keys.public_hex(keys.load(home, keys.NEXT_FILE))}")


@keys_app.command("rotate")
@fails_cleanly
def keys_rotate(ctx: typer.Context):
    """Sign with the next key from now on (rotation step 2); the old key is kept, retired."""
    home = settings(ctx).home
    retired, current = keys.rotate(home)
    render.out.print(f"signing with {keys.public_hex(keys.load(home))} from now on")
    render.out.print(f"old key kept in {retired}: once every device runs an image that no "
                     "longer trusts it, delete that file (revocation)")


@keys_app.command("public")
@fails_cleanly
def keys_public(ctx: typer.Context):
    """Print the raw Ed25519 public key as 64 hex characters."""
    print(keys.public_hex(keys.load(settings(ctx).home)))


@app.command("login")
@fails_cleanly
def login(ctx: typer.Context,
          directory: Path = typer.Argument(..., metavar="DIR",
                                           help="Client credentials from `fota-gateway "
                                                "credentials add NAME`."),
          force: bool = typer.Option(False, "--force", help="Replace stored credentials.")):
    """Store OSCORE credentials for the gateway: from now on every request is protected."""
    s = settings(ctx)
    path = keys.store_oscore(s.home, directory, force=force, dest=s.oscore)
    render.out.print(f"OSCORE credentials stored in {path}; requests to the gateway are "
                     "now protected")


# ---- firmware -------------------------------------------------------------------------------
@firmware_app.command("add")
@fails_cleanly
def firmware_add(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The image file, or an app directory (bundled)."),
    version: int = typer.Option(..., "--version", min=0, metavar="SEQ",
                                help="Sequence number; devices install only newer ones."),
    device_class: str = typer.Option(..., "--class", metavar="CLASS",
                                     help="Device class (model) the image is for."),
    vendor: str = typer.Option(DEFAULT_VENDOR, "--vendor",
                               help="Vendor name (its UUID5 goes in the manifest)."),
    encrypt: bool = typer.Option(False, "--encrypt", help="Encrypt under a fresh content key, "
                                 "wrapped for each device of the class with a firmware key."),
    class_key: bool = typer.Option(False, "--class-key", help="With --encrypt: also wrap it "
                                   "under the class key (made if absent) for every device of "
                                   "the class."),
    label: Optional[str] = typer.Option(None, "--label", metavar="TEXT",
                                        help="Human version shown in listings (1.4.0)."),
    notes: Optional[Path] = typer.Option(None, "--notes", metavar="FILE",
                                         help="Release notes (UTF-8 text, at most 2048 "
                                              "characters)."),
    supersede: bool = typer.Option(False, "--supersede",
                                   help="The gateway already holds this image: re-sign it at "
                                        "this higher SEQ (a fleet rollback)."),
    compress: bool = typer.Option(True, "--compress/--no-compress",
                                  help="Also offer it deflated where that saves 10 %+ "
                                       "(encrypted: deflated, then encrypted)."),
    deltas: bool = typer.Option(True, "--deltas/--no-deltas",
                                help="Have the gateway build deltas from earlier images "
                                     "(plain images)."),
    as_json: bool = JSON_OPT,
):
    """Upload an image, sign its manifest and register it with the gateway."""
    s = settings(ctx)
    if not device_class:
        raise CcError("--class must not be empty")
    if class_key and not encrypt:
        raise CcError("--class-key needs --encrypt")
    key = keys.load(s.home)  # before any upload: no key, no point
    if file.is_dir():  # an application directory: its bundle is the image (cc/bundle.py)
        from . import bundle

        file = bundle.save(file, s.home)
    digest, size = firmware.digest_file(file)
    extra = firmware.describe(label, notes)
    if supersede:
        extra["supersede"] = True

    async def go(enc: encryption.Encrypted | None) -> dict[str, Any]:
        async with s.client() as client:
            with render.upload_progress() as bar:
                task = bar.add_task("upload", total=size)
                image = await firmware.add(
                    client, key, file, seq=version, device_class=device_class, vendor=vendor,
                    digest=digest, size=size, extra=extra,
                    progress=lambda done: bar.update(task, completed=done), encrypted=enc)
            if enc is not None:  # one CEK, wrapped once, for the image and its deflated copy
                image = await _wrap_keys(client, s.home, image, enc.cek, None, class_key)
            same = dict(vendor=vendor, device_class=device_class, digest=digest, size=size)
            with tempfile.TemporaryDirectory() as tmp:  # encrypted: deflated, then encrypted
                packed = (await firmware.add_compressed(client, key, file, image, **same,
                                                        tmp=Path(tmp) / "packed", encrypted=enc)
                          if compress else None)
            # no deltas of an encrypted image: the gateway cannot diff ciphertext
            built = (await firmware.add_deltas(client, key, image, **same)
                     if deltas and enc is None else [])
            return {**image, "compressed": packed, "deltas": built}

    if encrypt:
        with tempfile.TemporaryDirectory(prefix="fota-enc-") as tmp:
            enc = encryption.encrypt_file(file, Path(tmp) / "image.enc")
            encryption.save_cek(s.home, uris.image_id(enc.sent), enc.cek)  # before the upload
            image = run(go(enc))
    else:
        image = run(go(None))
    if as_json:
        render.print_json(image)
        return
    path = str(image.get("uri") or uris.image_path(digest))
    shown = f" ({render.esc(image['label'])})" if image.get("label") else ""
    render.out.print(f"image [bold]{render.esc(image.get('id'))}[/]{shown} seq "
                     f"{image.get('seq')} class {render.esc(image.get('class'))}, "
                     f"{render.size(image.get('size'))}")
    port = image.get("device_port")
    uri = s.gateway.image_uri(path, port if isinstance(port, int) else None)
    render.out.print(f"uri {render.esc(uri)}")
    render.out.print(f"sha256 {render.esc(image.get('digest'))}")
    for v in filter(None, [image.get("compressed"), *image.get("deltas", [])]):
        what = ("compressed" if v.get("kind") == "deflate"
                else f"delta from {render.esc(str(v.get('base', ''))[:8])}")
        render.out.print(f"{what}: {render.size(v.get('sent_size'))} "
                         f"({render.percent(v.get('sent_size'), image.get('size'))} of the image)")


@firmware_app.command("deltas")
@fails_cleanly
def firmware_deltas(ctx: typer.Context,
                    image: str = typer.Argument("-", metavar="[IMAGE]",
                                                help="Image id (default: every image)."),
                    as_json: bool = JSON_OPT):
    """List the compressed images and deltas the gateway built or holds (variants)."""
    rows = run(_get(settings(ctx), f"{uris.FW}/{segment(image)}/deltas"))
    render.print_json(rows) if as_json else render.show(render.variants(rows))


@firmware_app.command("wrap")
@fails_cleanly
def firmware_wrap(
    ctx: typer.Context,
    image_id: str = typer.Argument(..., metavar="IMAGE"),
    devices: Optional[list[str]] = typer.Option(None, "--device", metavar="ID",
                                                help="Only this device (repeat for more)."),
    class_key: bool = typer.Option(False, "--class-key", help="Also (re)wrap under the class "
                                   "key."),
    as_json: bool = JSON_OPT,
):
    """Wrap an encrypted image's content key again (new devices, rotated firmware keys):
    nothing is re-encrypted or re-uploaded."""
    s = settings(ctx)
    cek = encryption.load_cek(s.home, image_id)

    async def go() -> dict[str, Any]:
        async with s.client() as client:
            rows = await client.get(uris.FW)
            image = next((r for r in rows if r.get("id") == image_id), None)
            if image is None:
                raise CcError(f"the gateway has no image {image_id}")
            return await _wrap_keys(client, s.home, image, cek, devices, class_key)

    image = run(go())
    if as_json:
        render.print_json(image)


WRAP_BATCH = 30  # recipients per request: stays under the control API's body limit


async def _wrap_keys(client: ControlClient, home: Path, image: dict[str, Any], cek: bytes,
                     devices: list[str] | None, class_key: bool) -> dict[str, Any]:
    """Wrap ``cek`` for ``devices`` (default: every device of the image's class the gateway
    knows) under their firmware keys, and the class key if asked; send the wrapped keys."""
    cls = str(image.get("class"))
    if devices is None:
        devices = [d["id"] for d in await firmware.class_devices(client, cls)]
    wrapped, missing = encryption.wrap(home, cek, devices, cls if class_key else None)
    items = list(wrapped.items())
    for i in range(0, len(items), WRAP_BATCH):
        image = await client.post(f"{uris.FW}/{image['id']}/keys", dict(items[i:i + WRAP_BATCH]))
    named = sorted(r for r in wrapped if r != encryption.CLASS_RECIPIENT)
    err = render.err
    err.print(escape(f"content key wrapped for {len(named)} device(s)"
                     + (f" and the class key of {cls}" if class_key else "")
                     + (f": {', '.join(named[:10])}{' …' if len(named) > 10 else ''}"
                        if named else "")))
    if missing and not class_key:
        err.print(escape(f"{len(missing)} device(s) of class {cls} have no firmware key and "
                         f"will refuse (key unavailable): {', '.join(missing[:10])}"
                         f"{' …' if len(missing) > 10 else ''}"), style="yellow")
    return image


@firmware_app.command("rm")
@fails_cleanly
def firmware_rm(ctx: typer.Context, image: str = typer.Argument(..., metavar="IMAGE"),
                as_json: bool = JSON_OPT):
    """Delete an image no running or paused campaign uses (its finished campaigns go with it;
    the event log keeps their history); its blob is deleted when no image refers to it."""
    gone = run(_delete(settings(ctx), f"{uris.FW}/{segment(image)}"))
    if as_json:
        render.print_json(gone)
        return
    camps = gone.get("campaigns_removed") or []
    render.out.print(f"image [bold]{render.esc(gone.get('id'))}[/] removed"
                     + (f" with its finished campaign(s) {', '.join(map(str, camps))}"
                        if camps else "")
                     + ("; blob deleted" if gone.get("blob_deleted") else ""))


@firmware_app.command("list")
@fails_cleanly
def firmware_list(ctx: typer.Context, as_json: bool = JSON_OPT):
    """List the images the gateway holds."""
    rows = run(_get(settings(ctx), uris.FW))
    render.print_json(rows) if as_json else render.show(render.images(rows))


# ---- devices --------------------------------------------------------------------------------
@devices_app.callback()
@fails_cleanly
def devices_main(
    ctx: typer.Context, as_json: bool = JSON_OPT,
    state: str = typer.Option("", "--state", help="Only devices in this state (idle, "
                              "downloading, downloaded, updating)."),
    device_class: str = typer.Option("", "--class", help="Only devices of this class."),
    tag: str = typer.Option("", "--tag", help="Only devices with this tag."),
    campaign_id: int = typer.Option(0, "--campaign", min=0, help="Only devices in campaign N."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip the first N (by id)."),
    limit: int = typer.Option(0, "--limit", min=0, help="At most N (the gateway sends 1000 "
                              "at most; --offset for the next page)."),
    summary: bool = typer.Option(False, "--summary", help="Counts by state and class instead "
                                 "of rows (what a fleet of 100,000 wants)."),
):
    """List devices when called without a subcommand (a page of 1000 at most)."""
    if ctx.invoked_subcommand is not None:
        return
    from urllib.parse import quote

    query = [f"{k}={quote(str(v), safe='')}" for k, v in (
        ("state", state), ("class", device_class), ("tag", tag), ("campaign", campaign_id),
        ("offset", offset), ("limit", limit)) if v] + (["summary"] if summary else [])
    got = run(_get(settings(ctx), uris.DEV + ("?" + "&".join(query) if query else "")))
    if as_json:
        render.print_json(got)
    elif summary:
        render.out.print(f"{got.get('total', 0)} device(s)")
        for what in ("by_state", "by_class"):
            for k, n in sorted((got.get(what) or {}).items(), key=lambda kv: -kv[1]):
                render.out.print(f"  {what[3:]:5} {render.esc(k)}: {n}")
    else:
        render.show(render.devices(got))


@devices_app.command("add")
@fails_cleanly
def devices_add(
    ctx: typer.Context,
    device_id: str = typer.Argument(..., metavar="ID"),
    device_class: str = typer.Option(..., "--class", metavar="CLASS"),
    tags: Optional[list[str]] = typer.Option(None, "--tag", metavar="TAG",
                                             help="A tag (repeat for more)."),
    key: bool = typer.Option(False, "--key", help="Give the device a report key (kept if it "
                             "has one): its reports must then carry its MAC."),
    rekey: bool = typer.Option(False, "--rekey", help="Replace the device's report key."),
    as_json: bool = JSON_OPT,
):
    """Add (enrol) a device, so that it can be upgraded before it first reports."""
    if not device_id or not device_class:
        raise CcError("device id and --class must not be empty")
    body: dict[str, Any] = {"id": device_id, "class": device_class}
    if tags:
        body["tags"] = list(tags)
    if key or rekey:
        body["rekey" if rekey else "key"] = True
    s = settings(ctx)
    dev = run(_post(s, uris.DEV, body))
    path = keys.save_device_key(s.home, device_id, dev["key"]) if dev.get("key") else None
    fw_key, fw_new = (encryption.firmware_key(s.home, device_id, create=True, rotate=rekey)
                      if key or rekey else (None, False))
    if as_json:
        render.print_json({**dev, "fw_key": fw_key.hex()} if fw_new and fw_key else dev)
        return
    render.out.print(f"device [bold]{render.esc(dev.get('id'))}[/] added, class "
                     f"{render.esc(dev.get('class'))}")
    if fw_new and fw_key is not None:
        render.out.print(f"firmware key (fota.json \"fw_key\"; never sent to the gateway; "
                         f"encrypted images are wrapped under it): {fw_key.hex()}")
        render.out.print(f"saved to "
                         f"{render.esc(encryption.firmware_key_path(s.home, device_id))}")
    if path is not None:
        render.out.print(f"report key (put it in the device's fota.json as \"key\"; the "
                         f"gateway never shows it again): {render.esc(dev['key'])}")
        render.out.print(f"saved to {render.esc(path)}")
    elif key:
        render.out.print("the device keeps the report key it already has")


@devices_app.command("rm")
@fails_cleanly
def devices_rm(ctx: typer.Context,
               device_ids: list[str] = typer.Argument(..., metavar="ID…"),
               as_json: bool = JSON_OPT):
    """Decommission devices: each one, its report key and its finished jobs are deleted (its
    events stay in the log); refused for a device with an unfinished job."""
    s = settings(ctx)

    async def go() -> tuple[list[dict[str, Any]], list[str]]:
        done, failed = [], []
        async with s.client() as client:
            for device_id in device_ids:  # each on its own: one refusal stops no other
                try:
                    done.append(await client.delete(f"{uris.DEV}/{segment(device_id)}"))
                except GatewayError as e:
                    failed.append(f"{device_id}: {e}")
        return done, failed

    done, failed = run(go())
    for gone in done:
        keys.forget_device_key(s.home, str(gone.get("id")))
    if as_json:
        render.print_json(done)
    else:
        for gone in done:
            render.out.print(f"device [bold]{render.esc(gone.get('id'))}[/] removed with "
                             f"{gone.get('jobs_removed')} finished job(s); its events stay")
    if failed:
        raise CcError("; ".join(failed))


@devices_app.command("provision")
@fails_cleanly
def devices_provision(
    ctx: typer.Context,
    device_id: str = typer.Argument(..., metavar="ID"),
    device_class: str = typer.Option(..., "--class", metavar="CLASS"),
    device_gateway: str = typer.Option(..., "--gateway", metavar="HOST:PORT",
                                       help="The gateway's device address as the board sees it."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New directory: the board's /."),
    key: bool = typer.Option(False, "--key", help="Give the device a report key and a "
                             "firmware key (encrypted images)."),
    app_dir: Optional[Path] = typer.Option(None, "--app", metavar="DIR",
                                           help="Factory application directory (slot a)."),
    slots: str = typer.Option("files", "--slots", metavar="files|esp32"),
    version: int = typer.Option(1, "--version", min=0, metavar="SEQ",
                                help="Sequence number of the factory image."),
    march: Optional[str] = typer.Option(None, "--march", metavar="ARCH",
                                        help="mpy-cross -march (native code only)."),
    mpy_cross: Optional[str] = typer.Option(None, "--mpy-cross", metavar="PATH",
                                            help="mpy-cross of the board's MicroPython release."),
    lines: bool = typer.Option(False, "--lines", help="Keep source line numbers in the agent's "
                               "tracebacks (~2 KiB more heap)."),
    as_json: bool = JSON_OPT,
):
    """Write a board's filesystem into DIR (agent .mpy, boot.py, main.py, fota.json, factory
    app in slot a) and enrol the device."""
    from . import provision

    s = settings(ctx)
    host, port = provision.parse_host_port(device_gateway)
    config: dict[str, Any] = {"id": device_id, "class": device_class, "version": version,
                              "trust": provision.trusted_keys(s.home), "gateway": host,
                              "port": port}
    body: dict[str, Any] = {"id": device_id, "class": device_class}
    if key:
        body["key"] = True
    provision.check_target(out, slots, app_dir)
    dev = run(_post(s, uris.DEV, body))  # enrol, then write: the board's key is the gateway's
    if dev.get("key"):
        config["key"] = dev["key"]
    if key:  # the firmware key: this cc and the board only (encrypted images are wrapped under it)
        fw_key, _ = encryption.firmware_key(s.home, device_id, create=True)
        assert fw_key is not None
        config["fw_key"] = fw_key.hex()
    cfg = provision.write_board(out, config, app=app_dir, slots=slots,
                                mpy_args=provision.mpy_args_for(march), mpy_cross=mpy_cross,
                                lines=lines)
    info = {"id": device_id, "class": device_class, "out": str(out), "slots": slots,
            "key": bool(cfg.get("key")), "fw_key": bool(cfg.get("fw_key")),
            "mpy_cross": provision.mpy_cross_version(mpy_cross)}
    if as_json:
        render.print_json(info)
        return
    render.out.print(f"device [bold]{render.esc(device_id)}[/] enrolled, board files in "
                     f"{render.esc(str(out))} ({render.esc(info['mpy_cross'])})")
    render.out.print(f"copy them: cd {render.esc(str(out))} && mpremote cp -r . :")


@devices_app.command("tag")
@fails_cleanly
def devices_tag(
    ctx: typer.Context,
    device_id: str = typer.Argument(..., metavar="ID"),
    tags: list[str] = typer.Argument(..., metavar="TAG…"),
    remove: bool = typer.Option(False, "--remove", help="Remove these tags instead of adding."),
    as_json: bool = JSON_OPT,
):
    """Add tags to a device (or remove them): campaigns can target `--tag TAG`."""
    body = {"remove" if remove else "add": list(tags)}
    dev = run(_post(settings(ctx), f"{uris.DEV}/{segment(device_id)}/tags", body))
    if as_json:
        render.print_json(dev)
    else:
        render.out.print(f"device [bold]{render.esc(dev.get('id'))}[/] tags: "
                         f"{render.esc(', '.join(dev.get('tags') or []) or '-')}")


@device_app.command("show")
@fails_cleanly
def device_show(ctx: typer.Context, device_id: str = typer.Argument(..., metavar="ID"),
                as_json: bool = JSON_OPT):
    """A device with its jobs and recent events."""
    dev = run(_get(settings(ctx), f"{uris.DEV}/{segment(device_id)}"))
    if as_json:
        render.print_json(dev)
        return
    render.show(*render.device(dev))


# ---- campaigns ------------------------------------------------------------------------------
@app.command("upgrade")
@fails_cleanly
def upgrade(
    ctx: typer.Context,
    image: str = typer.Argument(..., metavar="IMAGE", help="Image id (from `cc firmware list`)."),
    devices: Optional[list[str]] = typer.Option(None, "--device", metavar="ID",
                                                help="A device (repeat for more; the first "
                                                     "ones make the canary)."),
    device_class: Optional[str] = typer.Option(None, "--class", metavar="CLASS",
                                               help="Every device of this class."),
    tags: Optional[list[str]] = typer.Option(None, "--tag", metavar="TAG",
                                             help="Devices carrying this tag (repeat: all of "
                                                  "them); combines with --class."),
    everyone: bool = typer.Option(False, "--all",
                                  help="Every device (all must be of the image's class)."),
    timeout: Optional[int] = typer.Option(None, "--timeout", min=1, metavar="S",
                                          help="Seconds before unfinished jobs time out."),
    canary: Optional[int] = typer.Option(None, "--canary", min=0, metavar="N",
                                         help="Upgrade N devices first."),
    wave: Optional[str] = typer.Option(None, "--wave", metavar="N|P%",
                                       help="Then waves of N devices or P% of all."),
    success_rate: Optional[float] = typer.Option(
        None, "--success-rate", min=0, max=100, metavar="P",
        help="Percent of a phase that must succeed before the next starts (100)."),
    max_failures: Optional[str] = typer.Option(
        None, "--max-failures", metavar="N|P%",
        help="Pause by itself once N failures (or P% of the released devices) are reached."),
    max_downloads: Optional[int] = typer.Option(None, "--max-downloads", min=1, metavar="N",
                                                help="At most N devices downloading at once."),
    defer: Optional[int] = typer.Option(None, "--defer", min=1, metavar="S",
                                        help="Seconds a device over the cap waits (60)."),
    window: Optional[str] = typer.Option(None, "--window", metavar="CRON",
                                         help="Maintenance window start, 5-field cron "
                                              "('0 2 * * *'): offers only inside it."),
    window_duration: Optional[str] = typer.Option(
        None, "--window-duration", metavar="DURATION",
        help="How long the window stays open (90m, 2h; 1h). Needs --window."),
    window_tz: Optional[str] = typer.Option(
        None, "--window-tz", metavar="ZONE",
        help="IANA time zone of the window (Europe/Paris; UTC). Needs --window."),
    wait: bool = typer.Option(False, "--wait", help="Follow it with progress bars until done."),
    as_json: bool = JSON_OPT,
):
    """Start a campaign: offer IMAGE to devices, in phases if asked. With --wait exit 0 only if
    all succeeded."""
    picked = {"devices" if devices else None, "class" if device_class is not None else None,
              "tags" if tags else None, "all" if everyone else None} - {None}
    if not picked or len(picked) > 1 and picked != {"class", "tags"}:
        raise CcError("choose the devices with --device ID…, --class C and/or --tag T…, or --all")
    body: dict[str, Any] = {"image": image}
    if devices:
        body["devices"] = list(devices)
    if device_class is not None:
        body["class"] = device_class
    if tags:
        body["tags"] = list(tags)
    if everyone:
        body["all"] = True
    if timeout is not None:
        body["timeout"] = timeout
    body.update(campaign.policy_body(
        canary=canary, wave=wave, success_rate=success_rate, max_failures=max_failures,
        max_downloads=max_downloads, defer=defer, window=window,
        window_duration=window_duration, window_tz=window_tz))
    s = settings(ctx)
    started: list[int] = []

    async def go() -> dict[str, Any]:
        async with s.client() as client:
            camp = await client.post(uris.CAMP, body)
            if not wait:
                return camp
            started.append(int(camp["id"]))
            if not as_json:
                render.out.print(f"campaign [bold]{render.esc(camp.get('id'))}[/] started: "
                                 f"image {render.esc(image)}, {render.plan(camp)}")
            return await _follow(client, int(camp["id"]), quiet=as_json)

    try:
        camp = run(go())
    except KeyboardInterrupt:
        if not started:
            raise
        _stopped_watching(started[0])
    if not wait:
        if as_json:
            render.print_json(camp)
        else:
            render.out.print(f"campaign [bold]{render.esc(camp.get('id'))}[/] started: image "
                             f"{render.esc(image)}, {render.plan(camp)}; follow it with "
                             f"`cc status --watch {render.esc(camp.get('id'))}`")
        return
    _final(camp, as_json)


def rollback(ctx: typer.Context, to: str, seq: Optional[int], **options: Any) -> None:
    """Put devices back on a known-good image: the gateway's IMAGE re-signed at a new, higher
    sequence number (anti-rollback still holds), then an ordinary campaign with its own
    safeguards (--canary, --wave, --max-failures …). Without targets: the image's class."""
    s = settings(ctx)
    key = keys.load(s.home)

    async def go() -> dict[str, Any]:
        async with s.client() as client:
            return await firmware.resign(client, key, to, seq)

    image = run(go())
    if not options.get("as_json"):
        render.out.print(f"image [bold]{render.esc(image.get('id'))}[/] re-signed at seq "
                         f"{image.get('seq')} (was {image.get('was')}): devices below seq "
                         f"{image.get('seq')} take it")
    if not (options.get("devices") or options.get("tags") or options.get("everyone")
            or options.get("device_class")):
        options["device_class"] = image.get("class")
    upgrade(ctx, image=str(image.get("id")), **options)


def _rollback_signature() -> inspect.Signature:
    """`cc rollback` takes every option of `cc upgrade` (one declaration, not two copies):
    IMAGE becomes --to IMAGE, plus --version."""
    up = inspect.signature(upgrade)
    ctx, image, *rest = up.parameters.values()
    to = inspect.Parameter("to", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                           default=typer.Option(..., "--to", metavar="IMAGE",
                                                help="The known-good image (from `cc firmware "
                                                     "list`)."))
    seq = inspect.Parameter("seq", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                            default=typer.Option(None, "--version", min=0, metavar="SEQ",
                                                 help="Its new sequence number (default: one "
                                                      "above every image and device of its "
                                                      "class)."))
    hints = typing.get_type_hints(upgrade)  # the annotations are strings (PEP 563)
    kw = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name])
          for p in rest]
    return up.replace(parameters=[ctx, to, seq, *kw])


rollback.__signature__ = _rollback_signature()  # type: ignore[attr-defined]
app.command("rollback")(fails_cleanly(rollback))


@app.command("status")
@fails_cleanly
def status(
    ctx: typer.Context,
    campaign_id: Optional[int] = typer.Argument(None, metavar="[CAMPAIGN]"),
    watch: bool = typer.Option(False, "--watch", help="Follow the campaign until it is done."),
    as_json: bool = JSON_OPT,
    jobs: Optional[int] = typer.Option(None, "--jobs", min=0, max=1000, metavar="N",
                                       help="Show at most N jobs, those not succeeded first "
                                            f"(default {STATUS_JOBS}; with --json 1000)."),
):
    """Without CAMPAIGN: list campaigns. With it: the campaign's counts per state and phase,
    and its first jobs (those not succeeded first)."""
    s = settings(ctx)
    if campaign_id is None:
        if watch:
            raise CcError("--watch needs a CAMPAIGN id")
        rows = run(_get(s, uris.CAMP))
        render.print_json(rows) if as_json else render.show(render.campaigns(rows))
        return
    if watch:
        async def go() -> dict[str, Any]:
            async with s.client() as client:
                return await _follow(client, campaign_id, quiet=as_json)

        try:
            camp = run(go())
        except KeyboardInterrupt:
            _stopped_watching(campaign_id)
        _final(camp, as_json)
        return
    if jobs is None:
        jobs = 1000 if as_json else STATUS_JOBS
    camp = run(_get(s, f"{campaign.path(campaign_id)}?jobs={jobs}"))
    if as_json:
        render.print_json(camp)
        return
    render.show(*render.campaign_detail(camp))


def _campaign_action(ctx: typer.Context, campaign_id: int, action: str, as_json: bool) -> None:
    camp = run(_post(settings(ctx), f"{campaign.path(campaign_id)}/{action}"))
    if as_json:
        render.print_json(camp)
    else:
        render.out.print(f"campaign [bold]{render.esc(camp.get('id'))}[/]: "
                         f"{render.styled_state(camp.get('state'))}, {render.counts(camp)}")


@app.command("cancel")
@fails_cleanly
def cancel(ctx: typer.Context, campaign_id: int = typer.Argument(..., metavar="CAMPAIGN"),
           as_json: bool = JSON_OPT):
    """Cancel a campaign: jobs not yet finished are cancelled (devices are told on next wake;
    images already installed stay)."""
    _campaign_action(ctx, campaign_id, "cancel", as_json)


@app.command("pause")
@fails_cleanly
def pause(ctx: typer.Context, campaign_id: int = typer.Argument(..., metavar="CAMPAIGN"),
          as_json: bool = JSON_OPT):
    """Pause a campaign: no new offers; downloads under way go on."""
    _campaign_action(ctx, campaign_id, "pause", as_json)


@app.command("resume")
@fails_cleanly
def resume(ctx: typer.Context, campaign_id: int = typer.Argument(..., metavar="CAMPAIGN"),
           as_json: bool = JSON_OPT):
    """Resume a paused campaign: its failures so far are accepted, a stalled phase is passed."""
    _campaign_action(ctx, campaign_id, "resume", as_json)


@app.command("retry")
@fails_cleanly
def retry(ctx: typer.Context, campaign_id: int = typer.Argument(..., metavar="CAMPAIGN"),
          as_json: bool = JSON_OPT):
    """Offer the image again to the campaign's failed and timed-out devices."""
    _campaign_action(ctx, campaign_id, "retry", as_json)


@app.command("events")
@fails_cleanly
def events(ctx: typer.Context,
           since: str = typer.Option("0", "--since", metavar="T",
                                     help="Only events at or after T: unix time, ISO 8601 "
                                          "(2026-11-28T12:00Z) or an age (90s, 15m, 2h, 1d)."),
           as_json: bool = JSON_OPT):
    """The event log, oldest first (all of it from T: scripts export it with --json)."""
    start = campaign.parse_since(since)

    async def go() -> list[dict[str, Any]]:
        async with settings(ctx).client() as client:
            return await campaign.events(client, start)

    rows = run(go())
    render.print_json(rows) if as_json else render.show(render.events(rows))


@app.command("backup")
@fails_cleanly
def backup_cmd(ctx: typer.Context,
               file: Path = typer.Argument(..., metavar="FILE", help="The tar file to write."),
               data: Path = typer.Option(Path("./fota-data"), "--data", envvar="FOTA_DATA",
                                         metavar="DIR",
                                         help="The gateway's data directory (its --data).")):
    """Copy a gateway's data directory while it runs (consistent: SQLite's backup API) into one
    tar file; restore with `tar -xf FILE -C DATA` into an empty directory."""
    got = backup.backup(data, file)
    render.out.print(f"backup written to {render.esc(file)}: the database, {got['blobs']} "
                     f"blob(s), {got['others']} other item(s), {render.size(got['bytes'])}")


# ---- helpers --------------------------------------------------------------------------------
async def _get(s: Settings, path: str) -> Any:
    async with s.client() as client:
        return await client.get(path)


async def _delete(s: Settings, path: str) -> Any:
    async with s.client() as client:
        return await client.delete(path)


async def _post(s: Settings, path: str, body: Any = None) -> Any:
    async with s.client() as client:
        return await client.post(path, body)


async def _follow(client: ControlClient, n: int, *, quiet: bool) -> dict[str, Any]:
    if quiet:
        return await campaign.follow(client, n, lambda camp: None)
    with render.CampaignProgress() as bars:
        return await campaign.follow(client, n, bars.update)


def _stopped_watching(n: int) -> NoReturn:
    """Ctrl-C while following: the campaign is the gateway's and goes on without us."""
    print(f"cc: stopped watching; campaign {n} goes on in the gateway: "
          f"`cc status --watch {n}` to watch it again, `cc cancel {n}` to stop it",
          file=sys.stderr)
    raise typer.Exit(130)


def _final(camp: dict[str, Any], as_json: bool) -> None:
    """Print the outcome of a followed campaign; exit 1 unless every job succeeded."""
    ok = campaign.succeeded(camp)
    n = render.esc(camp.get("id"))
    updated, skipped = campaign.updated(camp), campaign.skipped(camp)
    if as_json:
        render.print_json(camp)
    elif camp.get("state") == "paused":
        render.show(render.failures(camp))
        render.out.print(f"campaign {n} [yellow]paused[/]: {render.esc(camp.get('reason'))}; "
                         f"{render.counts(camp)}")
        render.out.print(f"go on with `cc resume {n}`, `cc retry {n}` or `cc cancel {n}`")
    elif ok and not skipped:
        render.out.print(f"campaign {n}: all {updated} job(s) [green]succeeded[/]")
    elif ok:
        render.out.print(f"campaign {n}: {updated} device(s) [green]updated[/], {skipped} "
                         "[cyan]skipped[/]: they already run this image's seq or a newer one")
    elif skipped and skipped == camp.get("total"):
        render.out.print(f"campaign {n}: [red]nothing updated[/]: all {skipped} device(s) "
                         "already run this image's seq or a newer one (skipped)")
    else:
        render.show(render.failures(camp))
        render.out.print(f"campaign {n}: {render.counts(camp)}")
    if not ok:
        raise typer.Exit(1)
