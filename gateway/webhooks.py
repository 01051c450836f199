"""Webhooks: ``fota-gateway run --webhook URL`` (repeatable) POSTs a JSON event when a campaign
pauses by itself, a campaign finishes, or a device rolls back.

- Signed: ``X-Fota-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with
  ``X-Fota-Timestamp`` (unix seconds; a receiver rejects old ones to stop replays) and
  ``X-Fota-Delivery`` (the gateway's event id: the same for every retry, for de-duplication).
  The secret is ``<data>/webhook-secret`` (64 hex characters, made on first use, mode 0600).
- Never blocks the device path: the event bus listener only classifies the committed event
  (one primary-key read) and ``put_nowait``s it; each URL has its own bounded queue and its
  own sender task, so a dead receiver delays nobody else.
- Retries with exponential back-off (1, 2, 4 … 60 s, ``MAX_ATTEMPTS`` tries) on connection
  errors, timeouts and non-2xx answers; a full queue drops the newest event (counted in
  ``fota_webhook_deliveries_total{outcome="dropped"}`` and logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from proto.codes import CampaignState, Result

from . import metrics
from .store import Store

log = logging.getLogger("fota.gateway")

QUEUE_MAX = 1000  # events waiting per URL
MAX_ATTEMPTS = 8  # 1+2+4+…+60 s: about two and a half minutes of retries
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
TIMEOUT = 10.0  # seconds per POST
SECRET_FILE = "webhook-secret"
#: the reason fleet.pause_campaign records; every other pause is the policy's own
OPERATOR_PAUSE = "paused by the operator"


def load_secret(data: Path) -> bytes:
    """The HMAC key: ``<data>/webhook-secret`` (hex), created with mode 0600 if missing."""
    from .server import ConfigError

    path = data / SECRET_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ConfigError(f"{path}: expected at least 32 hex characters")
    return secret


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Fota-Signature`` value; a receiver recomputes it and compares in constant time."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class Classifier:
    """Which committed events are webhook events. Reads the row the event is about (its state
    is structured there, the event's detail is prose) and remembers each campaign's last state,
    so a campaign event that is no transition (a phase released) fires nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.campaign_state = {r["id"]: r["state"] for r in store.campaigns()}

    def __call__(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        """On the store's thread (made there too: the bus is called there), reads the store."""
        out = None
        if ev["kind"] == "campaign" and ev["campaign"] is not None:
            row = self.store.campaign(ev["campaign"])
            if row is None:
                return None
            was = self.campaign_state.get(row["id"])
            self.campaign_state[row["id"]] = row["state"]
            if row["state"] == was:
                return None
            if row["state"] == CampaignState.PAUSED and row["reason"] != OPERATOR_PAUSE:
                out = {"event": "campaign.paused", "reason": row["reason"]}
            elif row["state"] == CampaignState.DONE:
                out = {"event": "campaign.finished"}
            if out is not None:
                out["counts"] = self.store.job_counts(row["id"])
        elif ev["kind"] == "state" and ev["device"] is not None:
            row = self.store.device(ev["device"])
            if row is not None and row["result"] == Result.ROLLED_BACK:
                out = {"event": "device.rolled_back", "seq": row["seq"]}
        if out is None:
            return None
        return {**out, "id": ev["id"], "time": ev["time"], "campaign": ev["campaign"],
                "device": ev["device"], "detail": ev["detail"]}


class Sender:
    """One URL: a bounded queue and a task that POSTs its events in order, with retries."""

    def __init__(self, url: str, secret: bytes, session: aiohttp.ClientSession,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.url = url
        self.secret = secret
        self.session = session
        self.sleep = sleep
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, payload: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(payload)
        except asyncio.QueueFull:
            metrics.WEBHOOKS.labels("dropped").inc()
            log.warning("webhook %s: queue full (%d), dropping event %s", self.url, QUEUE_MAX,
                        payload["id"])

    async def _run(self) -> None:
        while True:
            payload = await self.queue.get()
            await self._deliver(payload)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        delay = BACKOFF_FIRST
        for attempt in range(1, MAX_ATTEMPTS + 1):
            ts = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Fota-Timestamp": ts,
                       "X-Fota-Signature": sign(self.secret, ts, body),
                       "X-Fota-Delivery": str(payload["id"]), "X-Fota-Event": payload["event"]}
            try:
                async with self.session.post(self.url, data=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as r:
                    if 200 <= r.status < 300:
                        metrics.WEBHOOKS.labels("delivered").inc()
                        return
                    why = f"HTTP {r.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                why = f"{type(e).__name__}: {e}"
            if attempt == MAX_ATTEMPTS:
                break
            metrics.WEBHOOKS.labels("retry").inc()
            log.warning("webhook %s: event %s attempt %d failed (%s); retrying in %g s",
                        self.url, payload["id"], attempt, why, delay)
            await self.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        metrics.WEBHOOKS.labels("dropped").inc()
        log.error("webhook %s: giving up on event %s after %d attempts (%s)", self.url,
                  payload["id"], MAX_ATTEMPTS, why)


class Webhooks:
    """The bus listener plus one ``Sender`` per URL; ``close()`` stops them (queued events are
    lost on shutdown: the event log keeps the facts)."""

    def __init__(self, urls: list[str], secret: bytes, classify: Classifier) -> None:
        self.classify = classify
        self.session = aiohttp.ClientSession()
        self.senders = [Sender(u, secret, self.session) for u in urls]
        self.loop = asyncio.get_running_loop()

    def __call__(self, ev: dict[str, Any]) -> None:
        """Classified on the store's thread, queued for sending on the loop."""
        payload = self.classify(ev)
        if payload is not None:
            try:
                self.loop.call_soon_threadsafe(self._offer, payload)
            except RuntimeError:  # the loop closed: shutting down
                pass

    def _offer(self, payload: dict[str, Any]) -> None:
        for s in self.senders:
            s.offer(payload)

    async def close(self) -> None:
        for s in self.senders:
            s.task.cancel()
        for s in self.senders:
            try:
                await s.task
            except asyncio.CancelledError:
                pass
        await self.session.close()
