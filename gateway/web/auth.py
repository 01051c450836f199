"""Who may use the dashboard: operator tokens (made by ``fota-gateway web-token NAME``) and the
browser sessions they sign in to.

The rule, enforced in ``gateway/web/app.py`` (documented in docs/operations.md, "Dashboard"):
- loopback bind: reading is open, as on the loopback control API; actions (pause, resume,
  cancel, retry) need a signed-in operator, always.
- any other bind: everything but ``/healthz`` and the static files needs a token; the gateway
  refuses to start with a non-loopback ``--http`` and no token (the rule of ``--oscore``).
Tokens are 256-bit random strings; only their SHA-256 is stored (``<data>/web-tokens.json``,
mode 0600). A browser signs in once with a token and then holds an opaque session cookie
(HttpOnly, SameSite=Strict); scripts and Prometheus send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

TOKENS_FILE = "web-tokens.json"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 256  # the oldest is signed out beyond this


class TokenError(Exception):
    pass


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(data: Path) -> dict[str, str]:
    """name -> SHA-256 hex of the token; {} when there is no file."""
    try:
        raw = json.loads((data / TOKENS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise TokenError(f"cannot read {data / TOKENS_FILE}: {e}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise TokenError(f"{data / TOKENS_FILE} is not a map of name to digest")
    return raw


def _save(data: Path, tokens: dict[str, str]) -> None:
    data.mkdir(parents=True, exist_ok=True)
    tmp = data / (TOKENS_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(tokens, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, data / TOKENS_FILE)


def add_token(data: Path, name: str) -> str:
    """Make a token for operator ``name`` (replacing theirs); returns it (shown once)."""
    if not name or not name.isprintable() or len(name) > 64:
        raise TokenError("the name must be 1-64 printable characters")
    tokens = load_tokens(data)
    token = secrets.token_urlsafe(32)
    tokens[name] = _digest(token)
    _save(data, tokens)
    return token


def revoke_token(data: Path, name: str) -> None:
    tokens = load_tokens(data)
    if name not in tokens:
        raise TokenError(f"no token named {name!r}")
    del tokens[name]
    _save(data, tokens)


class Auth:
    """Checks tokens against the digests loaded at start, and keeps the browser sessions."""

    def __init__(self, tokens: dict[str, str], clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.tokens = tokens
        self.clock = clock
        self.sessions: dict[str, tuple[str, float]] = {}  # id -> (operator, expires)

    def check_token(self, token: str) -> str | None:
        """The operator's name, or None."""
        d = _digest(token)
        found = None
        for name, want in self.tokens.items():  # compare all: no early exit to time
            if hmac.compare_digest(d, want):
                found = name
        return found

    def new_session(self, name: str) -> str:
        now = self.clock()
        for sid, (_, expires) in list(self.sessions.items()):
            if expires <= now:
                del self.sessions[sid]
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = (name, now + SESSION_SECONDS)
        return sid

    def session(self, sid: str) -> str | None:
        got = self.sessions.get(sid)
        if got is None:
            return None
        if got[1] <= self.clock():
            del self.sessions[sid]
            return None
        return got[0]

    def end_session(self, sid: str) -> None:
        self.sessions.pop(sid, None)
