from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

from ds01.events.chain import GENESIS
from ds01.events.log import REDACTED, EventLog


def fixed_clock() -> datetime:
    return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_event_lines_follow_the_schema(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", clock=fixed_clock)
    log.emit("container.create", user="alice", resource="container/t._.1001", details={"a": 1})
    (line,) = (tmp_path / "events.jsonl").read_text().splitlines()
    event = json.loads(line)
    assert event == {
        "ts": "2026-01-02T03:04:05.000+00:00",
        "user": "alice",
        "action": "container.create",
        "resource": "container/t._.1001",
        "details": {"a": 1},
        "outcome": "success",
        "seq": 1,
        "prev": GENESIS,
    }


def test_secrets_are_redacted_at_any_depth(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", clock=fixed_clock)
    event = log.emit(
        "x",
        user="u",
        resource="r",
        details={
            "env": {"A": "1"},
            "nested": {"api_key": "k", "Password": "p", "gpu_equivalents": 1.0},
            "token": "t",
        },
    )
    assert event.details["env"] == REDACTED
    assert event.details["token"] == REDACTED
    assert event.details["nested"] == {
        "api_key": REDACTED,
        "Password": REDACTED,
        "gpu_equivalents": 1.0,
    }
    assert "k" not in (tmp_path / "events.jsonl").read_text().split('"api_key"')[1][:20]


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", clock=fixed_clock)

    def write(n: int) -> None:
        for i in range(200):
            log.emit("t", user=f"u{n}", resource=f"r{i}", details={"pad": "x" * 500})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["action"] == "t" for line in lines)
