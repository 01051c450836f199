"""Where the gateway is and where the signing key lives: options, then environment variables,
then the chosen profile of the config file, then defaults.

The config file (``--config FILE``, ``FOTA_CONFIG``, default ``~/.config/fota/cc.toml``) is
TOML with one table per profile; ``--profile NAME`` (``FOTA_PROFILE``) picks one, else its
``profile = "NAME"`` key, else ``default``::

    profile = "lab"
    [profiles.lab]
    gateway = "coap://gw.lab.example:5684"
    home = "~/.config/fota-lab"            # signing key, device keys, `cc login` credentials
    oscore = "~/secrets/lab-oscore"        # OSCORE credentials elsewhere (default HOME/oscore)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from proto import uris

from .errors import CcError

DEFAULT_GATEWAY = f"coap://127.0.0.1:{uris.DEFAULT_CONTROL_PORT}"
DEFAULT_HOME = Path("~/.config/fota")
DEFAULT_CONFIG = DEFAULT_HOME / "cc.toml"


def oscore_dir(home: Path) -> Path:
    """Where `cc login` keeps the OSCORE credentials in a cc home."""
    return home / "oscore"
PROFILE_KEYS = ("gateway", "home", "oscore")


@dataclass(frozen=True)
class Profile:
    """What a profile sets (None: not set there)."""

    name: str
    gateway: str | None = None
    home: Path | None = None
    oscore: Path | None = None


def load_profile(config: Path | None, name: str | None) -> Profile:
    """The chosen profile; no file (at the default place, without --profile) is no profile."""
    path = (config or DEFAULT_CONFIG).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if config is not None or name:
            raise CcError(f"no config file {path}") from None
        return Profile("default")
    except OSError as e:
        raise CcError(f"cannot read the config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CcError(f"config file {path}: {e}") from None
    profiles = data.get("profiles", {})
    chosen = name or data.get("profile") or "default"
    if not isinstance(profiles, dict) or not isinstance(chosen, str):
        raise CcError(f"config file {path}: [profiles.NAME] tables and profile = \"NAME\"")
    if chosen not in profiles:
        if name is None and "profile" not in data:
            return Profile("default")  # a file without a default profile
        raise CcError(f"config file {path} has no profile {chosen!r} (it has: "
                      f"{', '.join(sorted(profiles)) or 'none'})")
    section = profiles[chosen]
    unknown = sorted(set(section) - set(PROFILE_KEYS)) if isinstance(section, dict) else ["?"]
    if unknown:
        raise CcError(f"config file {path}, profile {chosen!r}: unknown key(s) "
                      f"{', '.join(unknown)} (known: {', '.join(PROFILE_KEYS)})")
    for key, value in section.items():
        if not isinstance(value, str) or not value:
            raise CcError(f"config file {path}, profile {chosen!r}: {key} must be a string")

    def path_of(key: str) -> Path | None:
        return Path(section[key]).expanduser() if key in section else None

    return Profile(chosen, section.get("gateway"), path_of("home"), path_of("oscore"))


@dataclass(frozen=True)
class Gateway:
    """The control endpoint, normalised: a URI without a port means the control port, not 5683."""

    host: str  # as it goes between brackets or not in a URI: "127.0.0.1", "::1", "gw.example"
    port: int

    @property
    def base(self) -> str:
        return f"coap://{self._host_in_uri}:{self.port}"

    @property
    def _host_in_uri(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def image_uri(self, path: str, device_port: int | None = None) -> str:
        """Where people (not devices) can fetch an image: the device API on the same host, at
        the port the gateway says it serves devices on."""
        return f"coap://{self._host_in_uri}:{device_port or uris.DEFAULT_DEVICE_PORT}{path}"


def parse_gateway(text: str) -> Gateway:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise CcError(f"bad gateway URI {text!r}: {e}") from None
    if parts.scheme != "coap" or not parts.hostname:
        raise CcError(f"bad gateway URI {text!r}: expected coap://HOST:PORT")
    if parts.path not in ("", "/") or parts.query:
        raise CcError(f"bad gateway URI {text!r}: give only coap://HOST:PORT, no path")
    return Gateway(parts.hostname, port or uris.DEFAULT_CONTROL_PORT)
