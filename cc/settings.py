"""Where the gateway is and where the signing key lives (options, environment, defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from proto import uris

from .errors import CcError

DEFAULT_GATEWAY = f"coap://127.0.0.1:{uris.DEFAULT_CONTROL_PORT}"
DEFAULT_HOME = Path("~/.config/fota")


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
