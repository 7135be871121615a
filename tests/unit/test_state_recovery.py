"""The state database's health, backup and restore: the start decision, releases inferred
from labels, the file checks on real SQLite files, the store's word for damage, and the
doctor's finding."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ds01.core.state_recovery import (
    BackupInfo,
    DbCondition,
    LabelledContainer,
    decide_start,
    inferred_releases,
)
from ds01.daemon.doctor import check_state
from ds01.daemon.state_backup import StateBackups
from ds01.errors import Conflict, NotFound, StateDamaged, SystemFault
from ds01.runtime.store import CreateIntent, QueuedRequest, StateStore
from ds01.runtime.store_files import (
    StateDirBusy,
    backup_path,
    examine,
    lock_state_dir,
    read_restore_record,
    restore,
)

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=timezone.utc)
BACKUP = BackupInfo("/var/lib/ds01/ds01.db.backup", 180.0)
DB = "/var/lib/ds01/ds01.db"


# -- the start decision ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "backup", "containers", "accepted", "action"),
    [
        ("healthy", BACKUP, 3, False, "open"),
        ("missing", None, 0, False, "start_empty"),  # a new install
        ("empty", None, 0, False, "start_empty"),
        ("missing", None, 2, False, "refuse"),
        ("missing", BACKUP, 0, False, "refuse"),
        ("empty", BACKUP, 2, False, "refuse"),
        ("missing", BACKUP, 2, True, "start_empty"),  # ds01 admin state restore --empty
        ("damaged", None, 0, False, "refuse"),
        ("damaged", BACKUP, 2, True, "refuse"),
        ("unreadable", None, 0, False, "refuse"),
    ],
)
def test_ds01d_starts_only_where_nothing_is_lost_or_an_admin_said_so(
    kind, backup, containers, accepted, action
):
    condition = DbCondition(kind, "boom" if kind in ("damaged", "unreadable") else "")
    assert decide_start(DB, condition, backup, containers, accepted).action == action


def test_a_refusal_names_the_file_the_loss_the_backup_age_and_both_commands():
    decision = decide_start(DB, DbCondition("empty"), BACKUP, 2, False)
    assert f"{DB} is empty (0 bytes), and Docker has 2 ds01 container(s)" in decision.message
    assert "GPU queue" in decision.message
    assert "taken 3 min ago): `ds01 admin state restore`" in decision.message
    assert "`ds01 admin state restore --empty`" in decision.message

    malformed = DbCondition("damaged", "database disk image is malformed")
    lost = decide_start(DB, malformed, None, 0, False)
    assert "is damaged (database disk image is malformed)" in lost.message
    assert "There is no backup to restore." in lost.message


# -- releases inferred from labels ---------------------------------------------------------------


def container(cid: str, status: str, *devices: str) -> LabelledContainer:
    return LabelledContainer(cid, f"{cid}._.1001", status, devices)


def test_a_running_container_keeps_a_device_that_a_stopped_one_also_names():
    found = inferred_releases(
        [container("old", "exited", "GPU-1"), container("new", "running", "GPU-1")]
    )
    assert found == ["old"]


def test_when_every_claimant_is_stopped_none_keeps_the_device():
    found = inferred_releases(
        [
            container("a", "exited", "GPU-1", "GPU-2"),
            container("b", "created", "GPU-1"),
            container("c", "exited", "GPU-3"),
        ]
    )
    assert found == ["a", "b"]


def test_containers_already_released_claim_nothing():
    claimants = [container("old", "exited", "GPU-1"), container("new", "exited", "GPU-1")]
    assert inferred_releases(claimants, released=["old"]) == []


# -- the files -------------------------------------------------------------------------------------


def filled_store(path: Path) -> StateStore:
    store = StateStore(path)
    for n in (1, 2):
        store.add_queued(
            QueuedRequest(f"q{n}", "alice", 1001, "phd", "create", f"c{n}", "{}", 1, "", "2026")
        )
    return store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ds01.db"
    filled_store(path).close()
    return path


def damage_queue_page(path: Path) -> None:
    probe = sqlite3.connect(path)
    [(root,)] = probe.execute("SELECT rootpage FROM sqlite_master WHERE name = 'queue'")
    [(page_size,)] = probe.execute("PRAGMA page_size")
    probe.close()
    with path.open("r+b") as stream:
        stream.seek((root - 1) * page_size)
        stream.write(os.urandom(64))


def test_examine_tells_each_condition_apart(db: Path, tmp_path: Path):
    assert examine(db).kind == "healthy"
    assert examine(tmp_path / "none.db").kind == "missing"
    (tmp_path / "empty.db").write_bytes(b"")
    assert examine(tmp_path / "empty.db").kind == "empty"
    (tmp_path / "dir.db").mkdir()
    assert examine(tmp_path / "dir.db") == DbCondition("unreadable", "not a regular file")
    (tmp_path / "noise.db").write_bytes(os.urandom(8192))
    assert examine(tmp_path / "noise.db") == DbCondition(
        "damaged", "it does not start with SQLite's header"
    )
    os.truncate(db, db.stat().st_size // 2)
    assert examine(db) == DbCondition("damaged", "database disk image is malformed")


def test_a_damaged_page_is_found_and_said_on_one_line(db: Path):
    damage_queue_page(db)
    condition = examine(db)
    assert condition.kind == "damaged" and "\n" not in condition.detail, condition


def test_the_store_says_damage_in_words_and_reports_it_once(db: Path):
    damage_queue_page(db)
    reported: list[str] = []
    store = StateStore(db, on_damage=reported.append)
    for _ in range(3):
        with pytest.raises(StateDamaged) as damaged:
            store.queued()
    assert f"{db} is damaged" in damaged.value.message
    assert "ds01 admin state restore" in damaged.value.message
    assert len(reported) == 1 and store.damage == reported[0]
    assert StateBackups(store).backup_now() is False  # never over the last good copy
    store.close()


def test_a_backup_is_a_checked_copy_taken_when_something_changed(tmp_path: Path):
    store = filled_store(tmp_path / "ds01.db")
    backups = StateBackups(store)
    assert backups.backup_now() is True
    assert backups.backup_now() is False  # nothing changed since
    assert store.backup_soon.is_set()  # the queue was written
    store.add_intent(CreateIntent("r1", "x._.1001", "alice", "2026"))
    assert backups.backup_now() is True
    backups.stop()
    store.close()
    target = backup_path(tmp_path / "ds01.db")
    assert examine(target, "integrity_check").kind == "healthy"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_failing_backup_is_logged_and_its_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    store = filled_store(tmp_path / "ds01.db")
    backups = StateBackups(store)
    target = backups.target
    backups.target = tmp_path / "gone" / target.name  # its directory does not exist
    with caplog.at_level(logging.INFO, logger="ds01.daemon.state_backup"):
        assert backups.backup_now() is False
        backups.target = target
        assert backups.backup_now() is True
        store.add_intent(CreateIntent("r1", "x._.1001", "alice", "2026"))
        assert backups.backup_now() is True  # nothing failed before it: nothing said
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == [logging.ERROR, logging.INFO], messages
    failure = messages[0][1]
    assert failure.startswith(f"cannot back up the state database to {tmp_path / 'gone'}/")
    assert failure.endswith("; the previous backup stays")
    assert messages[1][1] == f"state backups work again ({target})"
    backups.stop()
    store.close()


def test_a_restore_keeps_the_damaged_file_and_drops_stale_intents(tmp_path: Path):
    path = tmp_path / "ds01.db"
    store = filled_store(path)
    store.add_intent(CreateIntent("r1", "x._.1001", "alice", "2026"))
    StateBackups(store).stop()  # the last backup, as at a clean stop
    store.close()
    os.truncate(path, 0)

    record = restore(path, empty=False, force=False, by="root", now=NOW)
    assert record.condition == "empty" and record.dropped_intents == ["x._.1001"]
    assert record.kept_as == [str(tmp_path / "ds01.db.damaged-20261128T150000Z")]
    assert read_restore_record(tmp_path) == record.to_dict()
    restored = StateStore(path)
    assert [q.id for q in restored.queued()] == ["q1", "q2"]
    assert restored.intents() == []
    restored.close()


def test_a_restore_refuses_what_would_lose_more(tmp_path: Path, db: Path):
    with pytest.raises(Conflict, match="is healthy"):
        restore(db, empty=False, force=False, by="root", now=NOW)
    db.write_bytes(b"")
    with pytest.raises(NotFound, match="no backup"):
        restore(db, empty=False, force=False, by="root", now=NOW)
    backup_path(db).write_bytes(os.urandom(4096))
    with pytest.raises(SystemFault, match=r"backup .* is damaged"):
        restore(db, empty=False, force=False, by="root", now=NOW)
    held = lock_state_dir(tmp_path)
    try:
        with pytest.raises(StateDirBusy, match="Stop it first"):
            restore(db, empty=True, force=False, by="root", now=NOW)
    finally:
        os.close(held)
    assert db.exists() and db.stat().st_size == 0  # nothing was changed


def test_the_doctor_reports_damage_and_an_old_backup():
    assert check_state("ds01d's state database … is damaged", BACKUP, 300).level == "critical"
    assert check_state(None, None, 300).level == "warning"
    assert check_state(None, BackupInfo("b", 3600.0), 300).level == "warning"
    assert check_state(None, BACKUP, 300).level == "ok"
