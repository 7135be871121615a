"""A hub's queued request keeps the hub: the state store's ``via`` column (added to a
database made before it), and the dispatcher naming the hub on the events of the request's
dispatch. Real SQLite and a real event log; Docker is not asked (no container exists)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ds01.daemon.dispatcher import GpuDispatcher
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import QueuedRequest, StateStore
from support import NoDocker, offline_service

# The queue table as ds01 made it before ``via``.
OLD_QUEUE = """
CREATE TABLE queue (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, uid INTEGER NOT NULL, grp TEXT NOT NULL,
    kind TEXT NOT NULL, container TEXT NOT NULL, request_json TEXT NOT NULL,
    whole_gpus INTEGER NOT NULL, mig TEXT NOT NULL, submitted_at TEXT NOT NULL,
    state TEXT NOT NULL, ended_at TEXT, message TEXT, devices TEXT NOT NULL
);
INSERT INTO queue VALUES
    ('old', 'alice', 1001, 'phd', 'create', 'nb', '{}', 1, '', '2026', 'waiting', NULL, NULL, '');
"""
#: No account has this uid: the owner of a request cannot be resolved.
GONE_UID = 3_999_999


def request(id: str, via: str | None) -> QueuedRequest:
    return QueuedRequest(
        id, "ghost", GONE_UID, "phd", "create", f"nb-{id}", "{}", 1, "", "2026-12-01", via=via
    )


def test_a_database_from_before_via_gains_it_and_a_hubs_request_keeps_its_hub(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ds01.db"
    old = sqlite3.connect(path)
    old.executescript(OLD_QUEUE)
    old.close()

    store = StateStore(path)
    store.add_queued(request("hubs", "dave"))
    assert [(q.id, q.via) for q in store.queued()] == [("old", None), ("hubs", "dave")]
    assert store.queued_by_id("hubs") == request("hubs", "dave")
    store.close()
    assert StateStore(path).queued_by_id("hubs") == request("hubs", "dave")  # opened again


class EmptyDocker(NoDocker):
    def list_managed(self) -> list[ContainerRecord]:
        return []


def test_the_dispatch_of_a_hubs_request_names_the_hub_and_a_users_does_not(
    tmp_path: Path,
) -> None:
    service = offline_service(tmp_path, EmptyDocker())
    service.store.add_queued(request("hubs", "dave"))
    service.store.add_queued(request("own", None))

    assert GpuDispatcher(service).run_pass() == []  # both owners are gone: both fail

    service.events.close()
    lines = service.paths.events_file.read_text().splitlines()
    failed = {e["resource"]: e for e in map(json.loads, lines) if e["action"] == "queue.fail"}
    assert failed["queue/hubs"]["details"].get("via") == "dave", failed
    assert "via" not in failed["queue/own"]["details"], failed
