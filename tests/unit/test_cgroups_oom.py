"""OOM kills: which limit a kill hit (pure), and the watcher on imitation cgroup trees."""

from __future__ import annotations

import json
import queue
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ds01.daemon.oom import RISEN_KEPT, OomWatcher, advance, assess, limit_hit_text
from ds01.events.log import EventLog
from ds01.model import labels as L
from ds01.runtime.cgroups import CgroupManager, OomCounters
from ds01.runtime.docker import ContainerEvent, ContainerRecord, EventStream
from ds01.runtime.store import OomState, StateStore
from support import wait_until

PARENT = "ds01.slice/ds01-phd.slice/ds01-phd-alice.slice"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def state(kills: int, own: int, parent: int, generation: int = 1, total: int = 0) -> OomState:
    return OomState("c1", "a._.1001", "alice", kills, own, parent, generation, oom_kills=total)


# --- which limit ------------------------------------------------------------------------------


def test_no_new_kill_is_no_finding() -> None:
    assert assess(state(2, 5, 5), OomCounters(2, 9, 1), 9) is None
    assert assess(None, OomCounters(0, 3, 1), 3) is None


@pytest.mark.parametrize(
    ("own", "parent", "limit"),
    [(6, 5, "container"), (5, 6, "user_total"), (5, 5, "host"), (6, 6, "container")],
)
def test_the_limit_whose_counter_rose_is_the_one_hit(own: int, parent: int, limit: str) -> None:
    finding = assess(state(1, 5, 5), OomCounters(3, own, 1), parent)
    assert finding is not None
    assert (finding.kills, finding.limit) == (2, limit)


def test_a_v1_peak_at_the_own_limit_means_the_container_limit() -> None:
    finding = assess(state(0, 0, 5), OomCounters(1, 0, 1, at_limit=True), 6)
    assert finding is not None and finding.limit == "container"


def test_a_restarted_container_counts_from_zero_again() -> None:
    finding = assess(state(4, 9, 5), OomCounters(1, 0, 2), 6)  # new cgroup, 1 kill
    assert finding is not None and (finding.kills, finding.limit) == (1, "user_total")
    # A re-created parent (counter went back) is compared with 0.
    finding = assess(state(0, 0, 50), OomCounters(1, 0, 1), 2)
    assert finding is not None and finding.limit == "user_total"


@pytest.mark.parametrize("before", ["container", "user_total"])
def test_a_limit_risen_at_the_scan_before_the_kill_is_the_one_hit(before: str) -> None:
    # The kernel counts the failed charge, then picks a victim: a scan can fall in between.
    finding = assess(state(1, 6, 6), OomCounters(2, 6, 1), 6, before)  # type: ignore[arg-type]
    assert finding is not None and finding.limit == before
    finding = assess(state(1, 6, 6), OomCounters(2, 7, 1), 6, "user_total")
    assert finding is not None and finding.limit == "container"  # what rose now comes first


def test_the_first_sight_of_a_container_reports_its_kills() -> None:
    finding = assess(None, OomCounters(1, 1, 7), 0)
    assert finding is not None and (finding.kills, finding.limit) == (1, "container")


def test_advance_accumulates_kills_across_restarts() -> None:
    record = _record("c1", "a")
    previous = state(4, 9, 5, generation=1, total=4)
    now = OomCounters(1, 0, 2)
    after = advance(previous, record, now, 6, assess(previous, now, 6), "t1")
    assert (after.kills, after.generation, after.oom_kills) == (1, 2, 5)
    assert (after.last_oom, after.last_limit) == ("t1", "user_total")
    quiet = advance(after, record, _c(1, 0, 2), 6, None, "t2")
    assert quiet == after


def _c(kills: int, own: int, generation: int) -> OomCounters:
    return OomCounters(kills, own, generation)


# --- the watcher on a directory tree -------------------------------------------------------------


def _record(
    container_id: str, name: str, status: str = "running", memory_bytes: str = ""
) -> ContainerRecord:
    return ContainerRecord.from_summary(
        {
            "Id": container_id,
            "Names": [f"/{name}._.1001"],
            "State": status,
            "Labels": {
                L.MANAGED: "true",
                L.USER: "alice",
                L.UID: "1001",
                L.GROUP: "phd",
                L.NAME: name,
                L.MEMORY_BYTES: memory_bytes,
            },
        }
    )


def test_a_parent_limit_is_named_after_what_set_it() -> None:
    alone = _record("c1", "thesis")
    assert limit_hit_text(alone, "user_total") == (
        "alice's memory total across all their containers"
    )
    # A container in its Slurm job's cgroup: its parent is that cgroup, limited by --mem.
    in_job = _record("c2", "hog")
    in_job.labels[L.SLURM_JOB] = "42"
    assert limit_hit_text(in_job, "user_total") == (  # a job's, under ds01's own parent
        "alice's memory total across all their containers"
    )
    in_job.labels[L.SLURM_CGROUP] = "/slurm_node1/uid_1001/job_42"
    assert limit_hit_text(in_job, "user_total") == "Slurm job 42's memory (--mem)"
    assert limit_hit_text(in_job, "container") == "its own memory limit"
    assert limit_hit_text(in_job, "host") == "the host's memory (no ds01 limit)"


class FakeStream:
    """Docker's raw event stream: messages put in a queue, until closed."""

    def __init__(self) -> None:
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def __iter__(self) -> Any:
        while (message := self.messages.get()) is not None:
            yield message

    def close(self) -> None:
        self.messages.put(None)


class FakeDocker:
    def __init__(self, records: list[ContainerRecord]) -> None:
        self.records = records
        self.stream = FakeStream()

    def list_managed(self) -> list[ContainerRecord]:
        return list(self.records)

    def container_events(self, actions: tuple[str, ...], since: float | None = None) -> EventStream:
        assert set(actions) == {"oom", "die"}
        return EventStream(self.stream)


def docker_message(
    action: str, container_id: str, at: float, exit_code: int | None = None
) -> dict[str, Any]:
    """An event as Docker's stream sends it."""
    attributes = {} if exit_code is None else {"exitCode": str(exit_code)}
    return {
        "Type": "container",
        "Action": action,
        "id": container_id,
        "Actor": {"ID": container_id, "Attributes": attributes},
        "timeNano": int(at * 1e9),
    }


def docker_event(
    action: str, container_id: str, at: float, exit_code: int | None = None
) -> ContainerEvent:
    return ContainerEvent.from_message(docker_message(action, container_id, at, exit_code))


class Tree:
    """An imitation of /sys/fs/cgroup with alice's parent and containers."""

    def __init__(self, root: Path, version: str) -> None:
        self.root, self.version = root, version
        if version == "v2":
            root.mkdir()
            (root / "cgroup.controllers").write_text("cpu memory pids")
            self.base = root / PARENT
        else:
            (root / "memory").mkdir(parents=True)
            self.base = root / "memory" / PARENT
        self.base.mkdir(parents=True)
        self.set_parent(0)

    def set_parent(self, limit_events: int) -> None:
        if self.version == "v2":
            (self.base / "memory.events.local").write_text(f"max 0\noom {limit_events}\n")
        else:
            (self.base / "memory.failcnt").write_text(f"{limit_events}\n")

    def set_container(self, container_id: str, kills: int, limit_events: int) -> None:
        directory = self.base / container_id
        directory.mkdir(exist_ok=True)
        if self.version == "v2":
            (directory / "memory.events").write_text(
                f"max {limit_events}\noom {limit_events}\noom_kill {kills}\n"
            )
            (directory / "memory.events.local").write_text(f"oom {limit_events}\n")
        else:
            (directory / "memory.oom_control").write_text(
                f"oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n"
            )
            (directory / "memory.failcnt").write_text(f"{limit_events}\n")


ID_A = "a" * 64
ID_B = "b" * 64


@pytest.fixture(params=["v1", "v2"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Tree:
    return Tree(tmp_path / "cgroup", request.param)


def make_watcher(
    tmp_path: Path, tree: Tree, docker: FakeDocker, clock: Callable[[], datetime] = lambda: NOW
) -> OomWatcher:
    return OomWatcher(
        docker,
        CgroupManager(tree.root),
        StateStore(tmp_path / "state.db"),
        EventLog(tmp_path / "events.jsonl", clock=clock),
        "cgroupfs",
        clock=clock,
    )


def events(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_kill_is_reported_once_with_its_limit_even_after_a_restart(
    tmp_path: Path, tree: Tree
) -> None:
    docker = FakeDocker([_record(ID_A, "a"), _record(ID_B, "b"), _record("c" * 64, "c", "exited")])
    tree.set_container(ID_A, 0, 0)
    tree.set_container(ID_B, 0, 0)
    watcher = make_watcher(tmp_path, tree, docker)
    assert watcher.scan() == []  # the baseline

    tree.set_container(ID_A, 1, 0)  # the parent's limit was hit, not a's own
    tree.set_parent(3)
    reported = watcher.scan()
    assert [(s.docker_name, s.oom_kills, s.last_limit) for s in reported] == [
        ("a._.1001", 1, "user_total")
    ]
    [event] = events(tmp_path)
    assert event["action"] == "resource.oom_kill"
    assert event["resource"] == "container/a._.1001"
    assert event["user"] == "alice"
    assert event["details"] == {"container": "a", "limit": "user_total", "kills": 1, "oom_kills": 1}
    assert watcher.scan() == []

    restarted = make_watcher(tmp_path, tree, docker)
    assert restarted.scan() == []
    tree.set_container(ID_B, 2, 1)  # b hit its own limit twice
    [state_b] = restarted.scan()
    assert (state_b.docker_name, state_b.oom_kills, state_b.last_limit) == (
        "b._.1001",
        2,
        "container",
    )
    assert state_b.last_oom == NOW.isoformat(timespec="seconds")
    assert len(events(tmp_path)) == 2


def test_a_kill_read_a_scan_after_its_failed_charge_names_that_limit(
    tmp_path: Path, tree: Tree
) -> None:
    docker = FakeDocker([_record(ID_A, "a")])
    tree.set_container(ID_A, 1, 1)
    watcher = make_watcher(tmp_path, tree, docker)
    [first] = watcher.scan()
    assert first.last_limit == "container"
    tree.set_container(ID_A, 1, 2)  # the next failed charge, its victim not yet killed
    assert watcher.scan() == []
    tree.set_container(ID_A, 2, 2)  # the kill, no new failure
    [second] = watcher.scan()
    assert (second.oom_kills, second.last_limit) == (2, "container")
    tree.set_container(ID_A, 3, 2)  # a later kill with no limit risen since: the host's
    [third] = watcher.scan()
    assert third.last_limit == "host"


def test_a_kill_scans_after_its_failed_charge_names_that_limit_for_a_while(
    tmp_path: Path, tree: Tree
) -> None:
    now = [NOW]
    docker = FakeDocker([_record(ID_A, "a")])
    tree.set_container(ID_A, 0, 0)
    watcher = make_watcher(tmp_path, tree, docker, clock=lambda: now[0])
    assert watcher.scan() == []  # the baseline
    tree.set_container(ID_A, 0, 1)  # a failed charge; the kernel reclaims, slowly
    assert watcher.scan() == []
    now[0] += timedelta(seconds=2)
    assert watcher.scan() == []  # a scan with nothing new
    now[0] += timedelta(seconds=2)
    tree.set_container(ID_A, 1, 1)  # the kill, no new failure
    [killed] = watcher.scan()
    assert killed.last_limit == "container"
    tree.set_container(ID_A, 1, 2)  # another failed charge, then no kill for a long time
    assert watcher.scan() == []
    now[0] += RISEN_KEPT
    tree.set_container(ID_A, 2, 2)
    [later] = watcher.scan()
    assert later.last_limit == "host"


def test_removed_containers_are_forgotten(tmp_path: Path, tree: Tree) -> None:
    docker = FakeDocker([_record(ID_A, "a")])
    tree.set_container(ID_A, 1, 1)
    watcher = make_watcher(tmp_path, tree, docker)
    assert len(watcher.scan()) == 1
    assert set(watcher.store.oom_states()) == {ID_A}
    docker.records = []
    watcher.scan()
    assert watcher.store.oom_states() == {}


def test_a_container_without_a_cgroup_is_skipped(tmp_path: Path, tree: Tree) -> None:
    watcher = make_watcher(tmp_path, tree, FakeDocker([_record(ID_A, "a")]))
    assert watcher.scan() == []
    assert watcher.store.oom_states() == {}


def test_the_thread_starts_scans_and_stops(tmp_path: Path, tree: Tree) -> None:
    tree.set_container(ID_A, 1, 0)
    watcher = make_watcher(tmp_path, tree, FakeDocker([_record(ID_A, "a")]))
    watcher.interval = 0.01
    watcher.start()
    try:
        with pytest.raises(RuntimeError):
            watcher.start()
        wait_until("the kill's event", lambda: events(tmp_path), timeout=5, interval=0.01)
    finally:
        watcher.stop()
    assert [e["details"]["limit"] for e in events(tmp_path)] == ["host"]


# --- kills that end the container (its cgroup is gone before a scan) -------------------------


def _die_after_oom(
    tree: Tree, watcher: OomWatcher, *, exit_code: int = 137, gap: float = 0.5
) -> None:
    """a's oom event, a's cgroup removed (the main process died), then a's die event."""
    t = NOW.timestamp()
    watcher.handle(docker_event("oom", ID_A, t))
    shutil.rmtree(tree.base / ID_A)
    watcher.handle(docker_event("die", ID_A, t + gap, exit_code))


@pytest.mark.parametrize(
    ("memory_bytes", "parent_rises", "limit"),
    [("", True, "user_total"), ("33554432", True, "user_total"),
     ("33554432", False, "container"), ("", False, "host")],
)  # fmt: skip
def test_a_kill_that_ended_the_container_is_reported_once(
    tmp_path: Path, tree: Tree, memory_bytes: str, parent_rises: bool, limit: str
) -> None:
    docker = FakeDocker([_record(ID_A, "a", memory_bytes=memory_bytes), _record(ID_B, "b")])
    tree.set_container(ID_A, 0, 0)
    tree.set_container(ID_B, 0, 0)
    watcher = make_watcher(tmp_path, tree, docker)
    watcher.scan()  # the baseline: the parent's counter is 0
    if parent_rises:
        tree.set_parent(2)
    docker.records[0] = _record(ID_A, "a", "exited", memory_bytes)

    _die_after_oom(tree, watcher)

    [event] = events(tmp_path)
    assert event["resource"] == "container/a._.1001"
    assert event["details"] == {"container": "a", "limit": limit, "kills": 1, "oom_kills": 1}
    assert watcher.store.oom_states()[ID_A].last_limit == limit
    watcher.handle(docker_event("die", ID_A, NOW.timestamp() + 1, 137))  # no new oom
    watcher.scan()
    assert len(events(tmp_path)) == 1


@pytest.mark.parametrize(("exit_code", "gap"), [(0, 0.5), (1, 0.5), (137, 60.0)])
def test_an_exit_that_is_not_an_oom_kill_is_not_reported(
    tmp_path: Path, tree: Tree, exit_code: int, gap: float
) -> None:
    docker = FakeDocker([_record(ID_A, "a", "exited")])
    tree.set_container(ID_A, 0, 0)
    watcher = make_watcher(tmp_path, tree, docker)

    _die_after_oom(tree, watcher, exit_code=exit_code, gap=gap)

    assert events(tmp_path) == []


def test_a_die_without_an_oom_event_is_not_reported(tmp_path: Path, tree: Tree) -> None:
    watcher = make_watcher(tmp_path, tree, FakeDocker([_record(ID_A, "a", "exited")]))
    watcher.handle(docker_event("die", ID_A, NOW.timestamp(), 137))
    assert events(tmp_path) == []


def test_a_kill_read_by_the_scan_on_the_oom_event_is_not_reported_again(
    tmp_path: Path, tree: Tree
) -> None:
    docker = FakeDocker([_record(ID_A, "a")])
    tree.set_container(ID_A, 0, 0)
    watcher = make_watcher(tmp_path, tree, docker)
    watcher.scan()
    tree.set_container(ID_A, 1, 1)  # killed at its own limit; the cgroup is still there

    t = NOW.timestamp()
    watcher.handle(docker_event("oom", ID_A, t))  # scans at once
    shutil.rmtree(tree.base / ID_A)
    docker.records[0] = _record(ID_A, "a", "exited")
    watcher.handle(docker_event("oom", ID_A, t + 0.05))  # Docker may repeat it
    watcher.handle(docker_event("die", ID_A, t + 0.1, 137))

    assert [e["details"]["limit"] for e in events(tmp_path)] == ["container"]


def test_the_event_thread_reports_an_exit_after_an_oom_and_stops(
    tmp_path: Path, tree: Tree
) -> None:
    docker = FakeDocker([_record(ID_A, "a", "exited", memory_bytes="33554432")])
    watcher = make_watcher(tmp_path, tree, docker)
    watcher.interval = 60
    watcher.start()
    try:
        t = NOW.timestamp() + 1  # after the watcher started: not a replay
        docker.stream.messages.put(docker_message("oom", ID_A, t))
        docker.stream.messages.put(docker_message("die", ID_A, t + 0.2, 137))
        wait_until("the kill's event", lambda: events(tmp_path), timeout=5, interval=0.01)
    finally:
        watcher.stop()
    assert [e["details"]["limit"] for e in events(tmp_path)] == ["container"]
