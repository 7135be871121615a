"""The event log: one JSON object a line in ``<log-dir>/events.jsonl``, written only by ds01d.

Schema (DESIGN.md §6): ``ts`` (ISO 8601, UTC), ``user`` (who acted), ``action``
(``container.create``, ``gpu.allocate``, ``auth.denied``, …), ``resource`` (what it acted
on, e.g. ``container/thesis._.1001``), ``details`` (an object), ``outcome`` (``success``,
``denied``, ``failure``, ``rolled_back``).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["success", "denied", "failure", "rolled_back"]

# Keys whose values never reach the log (environment values, credentials).
_SECRET_KEY_RE = re.compile(r"pass(word|wd)?|secret|token|api_?key|^env(ironment)?$", re.I)
REDACTED = "[redacted]"


def _redact(details: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if _SECRET_KEY_RE.search(key):
            clean[key] = REDACTED
        elif isinstance(value, dict):
            clean[key] = _redact(value)
        else:
            clean[key] = value
    return clean


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    ts: str
    user: str
    action: str
    resource: str
    details: dict[str, Any] = Field(default_factory=dict)
    outcome: Outcome = "success"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class EventLog:
    """Append-only JSONL writer, safe to call from many daemon threads."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = utc_now) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(
        self,
        action: str,
        *,
        user: str,
        resource: str,
        details: dict[str, Any] | None = None,
        outcome: Outcome = "success",
    ) -> Event:
        event = Event(
            ts=self._clock().isoformat(timespec="milliseconds"),
            user=user,
            action=action,
            resource=resource,
            details=_redact(details or {}),
            outcome=outcome,
        )
        line = json.dumps(event.model_dump(), separators=(",", ":"), sort_keys=True) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return event
