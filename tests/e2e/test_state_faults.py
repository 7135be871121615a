"""End to end: ds01d's state database is lost or damaged.

Real ds01d, real Docker, real users. dave fills the two simulated GPUs, so that alice's and
bob's requests wait in the GPU queue, which only the state database holds. Then the file
is emptied, overwritten or cut short (ds01d stopped or killed), its directory made
read-only, or a page damaged under a running ds01d. ds01d must never start as if new while
ds01's containers exist: it refuses in words, naming the file and `ds01 admin state
restore`; the restore puts the last backup in place and the queue is back; `--empty`
starts anew and an audit event lists what was lost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rawapi import queue_gpu_create

from support import TEST_IMAGES_YAML, describe, simulated_a100s, wait_until

TWO_GPUS = simulated_a100s(2)
LIMITS = """
    defaults:
      gpu_limit: 2
      max_containers: 5
"""


def backup_of(d: Any) -> Path:
    return d.paths.state_db.with_name(d.paths.state_db.name + ".backup")


def waiting_in_backup(d: Any) -> set[str]:
    """The ids of waiting requests in ds01d's backup file (empty while there is none)."""
    path = backup_of(d)
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id FROM queue WHERE state = 'waiting'").fetchall()
    finally:
        db.close()
    return {row[0] for row in rows}


@pytest.fixture
def queued(ds01d: Any, unix_users: Any) -> tuple[Any, set[str]]:
    """A ds01d whose two GPUs dave holds, with a request each of alice and bob waiting,
    both already in its backup; returns the daemon and the request ids."""
    d = ds01d(
        resource_limits=LIMITS,
        gpu_config=TWO_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    for name in ("fill0", "fill1"):
        d.cli_json("dave", "container-create", name, "--image", "busybox", "--gpus", "1")
    ids = {queue_gpu_create(d.paths.socket, user, f"q-{user}") for user in ("alice", "bob")}
    wait_until("both requests in the backup", lambda: waiting_in_backup(d) == ids)
    return d, ids


def waiting_ids(d: Any) -> set[str]:
    return {r["id"] for r in d.cli_json("erin", "queue", "--all") if r["state"] == "waiting"}


def state(d: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``ds01 admin state ARGS`` as root, on the daemon's state directory."""
    return d.cli(None, "admin", "state", *args, "--state-dir", str(d.paths.state_dir))


def assert_refused_in_words(d: Any, *words: str) -> str:
    """ds01d refuses to start, saying ``words`` and the repair command, without a
    traceback; returns what it said."""
    result = d.start_refused()
    said = result.stdout
    assert result.returncode != 0, said
    assert "Traceback" not in said, said
    for word in (*words, "ds01 admin state restore"):
        assert word in said, said
    return said


def restore(d: Any, *args: str) -> dict[str, Any]:
    result = state(d, "restore", *args, "--json")
    assert result.returncode == 0, describe(result)
    record: dict[str, Any] = json.loads(result.stdout)
    for kept in record["kept_as"]:
        assert Path(kept).exists(), record
    return record


def damage_header(path: Path) -> None:
    with path.open("r+b") as stream:
        stream.write(os.urandom(100))


def cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def replace_by_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def test_an_emptied_database_is_refused_and_the_backup_brings_the_queue_back(queued):
    d, ids = queued
    still = state(d, "restore")
    assert still.returncode != 0 and "Stop it first" in still.stderr, describe(still)
    assert d.cli("alice", "admin", "state", "status").returncode == 5

    d.kill()  # a crash, then the file is lost
    os.truncate(d.paths.state_db, 0)
    said = assert_refused_in_words(d, str(d.paths.state_db), "is empty (0 bytes)")
    assert "Docker has 2 ds01 container(s)" in said, said
    [refusal] = d.events_where(action="state.damaged")
    assert refusal["details"]["condition"] == "empty", refusal

    record = restore(d)
    assert record["source"] == "backup" and record["condition"] == "empty", record
    d.start()
    assert waiting_ids(d) == ids
    [event] = d.events_where(action="state.restore")
    assert set(event["details"]["waiting_requests"]) == ids, event
    assert event["user"] == "root"


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (damage_header, "is damaged (it does not start with SQLite's header)"),
        (cut_in_half, "is damaged (database disk image is malformed)"),
        (replace_by_directory, "cannot be read (not a regular file)"),
    ],
    ids=["random-header", "half-truncated", "a-directory-instead"],
)
def test_a_damaged_database_is_refused_in_words_and_restored(queued, damage, words):
    d, ids = queued
    d.stop()
    damage(d.paths.state_db)
    assert_refused_in_words(d, str(d.paths.state_db), words)
    status = state(d, "status", "--json")
    assert status.returncode == 1, describe(status)
    assert json.loads(status.stdout)["backup_age_seconds"] is not None

    restore(d)
    d.start()
    assert waiting_ids(d) == ids
    assert state(d, "status").returncode == 0


def test_starting_anew_accepting_the_loss_lists_what_was_lost(queued):
    d, _ = queued
    d.stop()
    damage_header(d.paths.state_db)
    record = restore(d, "--empty")
    assert record["source"] == "empty" and record["backup"] is None, record
    d.start()
    assert waiting_ids(d) == set()
    [event] = d.events_where(action="state.reset")
    assert event["details"]["containers_reset"] == ["dave/fill0", "dave/fill1"], event
    assert any("GPU queue" in lost for lost in event["details"]["lost"]), event
    # The containers and their devices come from Docker's labels: still dave's.
    assert sorted(len(r["gpus"]) for r in d.cli_json("dave", "container-list")) == [1, 1]


@pytest.fixture
def read_only(ds01d: Any) -> Iterator[Any]:
    """A stopped ds01d whose state directory is a read-only bind mount of itself."""
    d = ds01d(images=TEST_IMAGES_YAML)
    d.stop()
    target = str(d.paths.state_dir)
    subprocess.run(["mount", "--bind", target, target], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
        yield d
    finally:
        subprocess.run(["umount", target], check=True)


def test_a_read_only_state_directory_is_said_in_words(read_only):
    result = read_only.start_refused()
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    assert f"cannot prepare {read_only.paths.state_dir}: Read-only file system" in result.stdout


def test_damage_found_while_running_is_said_in_words_once(queued):
    d, ids = queued
    queue_page = _queue_root_page(d.paths.state_db)  # also moves the WAL into the file
    with d.paths.state_db.open("r+b") as stream:
        stream.seek(queue_page)
        stream.write(os.urandom(64))
    _make_ds01d_read_again(d.paths.state_db)

    result = d.cli("alice", "queue")
    assert result.returncode == 1, describe(result)
    assert "internal error" not in result.stderr, describe(result)
    assert "is damaged" in result.stderr and "ds01 admin state restore" in result.stderr
    time.sleep(1.5)  # three passes of the queue, which cannot read it either
    assert len(d.events_where(action="state.damaged")) == 1
    log = d.log_tail(400)
    assert log.count("ERROR ds01.runtime.store:") == 1, log
    assert "queue pass" not in log, log
    doctor = d.cli(None, "admin", "doctor", "--json")
    assert doctor.returncode == 2, describe(doctor)
    [finding] = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "state"]
    assert finding["level"] == "critical" and "is damaged" in finding["message"], finding

    d.stop()
    assert_refused_in_words(d, "is damaged")
    restore(d)
    d.start()
    assert waiting_ids(d) == ids


def _queue_root_page(db_path: Path) -> int:
    """The byte offset of the queue table's root page, once every page the WAL holds is
    copied into the file (so that ds01d reads the page from there)."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        wait_until(
            "a checkpoint of the whole WAL",
            lambda: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
        )
        [(root,)] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'queue'")
        [(page_size,)] = db.execute("PRAGMA page_size")
    finally:
        db.close()
    return int((root - 1) * page_size)


def _make_ds01d_read_again(db_path: Path) -> None:
    """Commit a harmless change (the header's user_version) through another connection:
    ds01d's connection then drops its page cache and reads the file again, as it would
    after any page fell out of its cache."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("PRAGMA user_version = 1")
    finally:
        db.close()
