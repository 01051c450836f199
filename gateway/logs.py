"""One line per event on stderr: human by default, JSON lines with ``--log-json``."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("fota.gateway")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self.converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


def setup(json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # aiocoap's chatter stays out unless it matters
    log.setLevel(logging.INFO)


def event(ev: dict[str, Any]) -> None:
    """Log a committed store event."""
    who = " ".join(f"{k}={ev[k]}" for k in ("device", "campaign") if ev.get(k) is not None)
    log.info("event %s %s%s", ev["kind"], (who + " ") if who else "", ev["detail"],
             extra={"fields": {"event": ev["id"], "kind": ev["kind"], "device": ev["device"],
                               "campaign": ev["campaign"], "detail": ev["detail"]}})
