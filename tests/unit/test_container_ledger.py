"""ContainerLedger: one list at start, one lookup per event, never an answer older than one
already applied, and Docker asked on every read while the event stream is down.

The runtime here is a stand-in with a hand-fed event stream; the real engine is exercised in
tests/e2e/test_ledger.py.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest

from ds01.daemon.ledger import ContainerLedger
from ds01.errors import DockerUnavailable
from ds01.runtime.docker import ContainerRecord, EventStream

_END = object()


def record(name: str, status: str = "running", gpus: tuple[str, ...] = ()) -> ContainerRecord:
    return ContainerRecord(
        id=f"{name}-id", docker_name=name, name=name, user="alice", uid=1000, group="users",
        status=status, image="busybox", gpus=gpus, gpu_equivalents=Fraction(len(gpus)),
        created_at="", request_id="", labels={},
    )  # fmt: skip


class FeedStream:
    """An event stream fed by the test: ``send`` one event, ``end`` it."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (message := self.messages.get()) is not _END:
            if isinstance(message, Exception):
                raise message
            yield message

    def send(self, action: str, container_id: str) -> None:
        self.messages.put({"Type": "container", "Action": action, "id": container_id, "time": 1})

    def close(self) -> None:
        self.messages.put(_END)


class StandIn:
    """Docker as the ledger sees it: ``containers`` by id, calls counted."""

    def __init__(self, *records: ContainerRecord) -> None:
        self.containers = {r.id: r for r in records}
        self.lists = 0
        self.lookups = 0
        self.down = False
        self.streams: list[FeedStream] = []
        self.during_lookup: Callable[[], None] | None = None

    def list_managed(self) -> list[ContainerRecord]:
        if self.down:
            raise DockerUnavailable("Docker is not running")
        self.lists += 1
        return list(self.containers.values())

    def find_managed_by_id(self, id_prefix: str) -> ContainerRecord | None:
        if self.down:
            raise DockerUnavailable("Docker is not running")
        self.lookups += 1
        found = self.containers.get(id_prefix)
        if self.during_lookup is not None:
            self.during_lookup()
        return found

    def container_events(self, actions: tuple[str, ...], since: float | None = None) -> Any:
        assert "create" in actions and "destroy" in actions and "die" in actions
        if self.down:
            raise DockerUnavailable("Docker is not running")
        stream = FeedStream()
        self.streams.append(stream)
        return EventStream(stream)


def soon(check: Callable[[], object]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def names(ledger: ContainerLedger) -> set[str]:
    return {r.name for r in ledger.list_managed()}


@pytest.fixture
def docker() -> StandIn:
    return StandIn(record("a"), record("b", gpus=("GPU-1",)))


@pytest.fixture
def ledger(docker: StandIn) -> Iterator[ContainerLedger]:
    ledger = ContainerLedger(docker)
    ledger.start()
    yield ledger
    ledger.stop()


def test_not_started_every_read_lists(docker: StandIn) -> None:
    ledger = ContainerLedger(docker)
    assert names(ledger) == {"a", "b"}
    assert names(ledger) == {"a", "b"}
    assert docker.lists == 2 and not ledger.trusted


def test_one_list_at_start_then_reads_from_memory(docker: StandIn, ledger: ContainerLedger) -> None:
    assert ledger.trusted
    for _ in range(5):
        assert names(ledger) == {"a", "b"}
    assert docker.lists == 1 and docker.lookups == 0


def test_an_event_looks_up_that_container_only(docker: StandIn, ledger: ContainerLedger) -> None:
    docker.containers["c-id"] = record("c")
    docker.streams[-1].send("create", "c-id")
    soon(lambda: "c" in names(ledger))
    docker.containers["a-id"] = record("a", status="stopped")
    docker.streams[-1].send("die", "a-id")
    soon(lambda: {r.name: r.status for r in ledger.list_managed()}["a"] == "stopped")
    assert docker.lists == 1 and docker.lookups == 2


def test_destroy_drops_the_container_without_asking(
    docker: StandIn, ledger: ContainerLedger
) -> None:
    del docker.containers["b-id"]  # `docker rm -f` behind ds01d's back
    assert names(ledger) == {"a", "b"}  # until Docker says so, its devices count as held
    docker.streams[-1].send("destroy", "b-id")
    soon(lambda: names(ledger) == {"a"})
    assert docker.lists == 1 and docker.lookups == 0


def test_own_changes_are_in_before_the_event(docker: StandIn, ledger: ContainerLedger) -> None:
    docker.containers["c-id"] = record("c", gpus=("GPU-2",))
    made = ledger.refresh("c-id")  # what create does right after `docker create`
    assert "c" in names(ledger)
    # The start that follows (container-create --start, the door's answer) uses it.
    assert made == docker.containers["c-id"]
    del docker.containers["a-id"]
    ledger.forget("a-id")  # what remove does
    assert names(ledger) == {"b", "c"}


def test_it_lists_newest_first_as_docker_does() -> None:
    docker = StandIn(record("newer"), record("older"))  # Docker's own order
    ledger = ContainerLedger(docker)
    ledger.start()
    try:
        docker.containers = {"newest-id": record("newest"), **docker.containers}
        ledger.refresh("newest-id")
        ledger.refresh("older-id")  # a change keeps a container's place
        assert [r.name for r in ledger.list_managed()] == ["newest", "newer", "older"]
        assert [r.name for r in ledger.reconcile()] == ["newest", "newer", "older"]
        assert [r.name for r in ledger.list_managed()] == ["newest", "newer", "older"]
    finally:
        ledger.stop()


def test_an_older_answer_never_overwrites_a_newer_one(
    docker: StandIn, ledger: ContainerLedger
) -> None:
    # The event thread's lookup sees "a" running; before it lands, ds01d removes "a".
    docker.during_lookup = lambda: (docker.containers.pop("a-id"), ledger.forget("a-id"))
    ledger.refresh("a-id")
    assert names(ledger) == {"b"}


def test_a_list_older_than_a_lookup_keeps_the_lookup(
    docker: StandIn, ledger: ContainerLedger
) -> None:
    listed_before = docker.list_managed()  # a reconcile asks...
    docker.containers["c-id"] = record("c")
    ledger.refresh("c-id")  # ...a create lands...
    with ledger._lock:  # ...and then the list is applied, with its older ticket
        ledger._replace(0, listed_before)
    assert "c" in names(ledger)


def test_a_gap_in_the_stream_means_reads_list_until_it_is_back(
    docker: StandIn, ledger: ContainerLedger
) -> None:
    docker.down = True
    docker.streams[-1].messages.put(DockerUnavailable("the stream broke"))
    soon(lambda: not ledger.trusted)
    with pytest.raises(DockerUnavailable):  # a decision fails closed
        ledger.list_managed()
    del docker.containers["a-id"]  # gone while nobody reported it
    docker.down = False
    before = docker.lists
    assert names(ledger) == {"b"}  # a read lists
    soon(lambda: ledger.trusted)  # the follower reconnected and reconciled
    assert len(docker.streams) == 2 and docker.lists >= before + 2
    lists = docker.lists
    assert names(ledger) == {"b"} and docker.lists == lists


def test_a_failed_lookup_distrusts_the_ledger_until_a_newer_list(
    docker: StandIn, ledger: ContainerLedger
) -> None:
    docker.down = True
    assert ledger.refresh("a-id") is None  # never raises: the caller asks again itself
    assert not ledger.trusted
    docker.down = False
    docker.containers["c-id"] = record("c")  # what the failed refresh was about
    assert names(ledger) == {"a", "b", "c"}
    assert ledger.trusted
    lists = docker.lists
    names(ledger)
    assert docker.lists == lists


def test_the_periodic_reconcile_catches_what_the_stream_missed(docker: StandIn) -> None:
    ledger = ContainerLedger(docker, reconcile_seconds=0.05)
    ledger.start()
    try:
        docker.containers["a-id"] = replace(docker.containers["a-id"], status="stopped")
        soon(lambda: {r.name: r.status for r in ledger.list_managed()}["a"] == "stopped")
    finally:
        ledger.stop()


def test_docker_away_at_start_is_followed_once_it_is_back(docker: StandIn) -> None:
    docker.down = True
    ledger = ContainerLedger(docker)
    ledger.start()
    try:
        assert not ledger.trusted
        docker.down = False
        soon(lambda: ledger.trusted)
        assert names(ledger) == {"a", "b"}
    finally:
        ledger.stop()


def test_concurrent_readers_and_writers_converge(docker: StandIn, ledger: ContainerLedger) -> None:
    def churn(start: int) -> None:
        for i in range(start, start + 50):
            docker.containers[f"n{i}-id"] = record(f"n{i}")
            ledger.refresh(f"n{i}-id")
            ledger.list_managed()

    threads = [threading.Thread(target=churn, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {r.id for r in ledger.list_managed()} == set(docker.containers)
    assert docker.lists == 1


def test_a_container_is_looked_up_again_after_its_event(
    docker: StandIn, ledger: ContainerLedger
) -> None:
    # Docker reports `die` before its list shows the container stopped.
    docker.streams[-1].send("die", "a-id")
    soon(lambda: docker.lookups == 1)
    docker.containers["a-id"] = record("a", status="stopped")
    soon(lambda: {r.name: r.status for r in ledger.list_managed()}["a"] == "stopped")
    assert docker.lists == 1


def test_known_answers_a_full_id_from_memory_only_while_trusted(docker: StandIn) -> None:
    ledger = ContainerLedger(docker)
    assert ledger.known("a-id") is None  # not started: not trusted, the caller looks it up
    ledger.start()
    try:
        assert ledger.known("a-id") == docker.containers["a-id"]
        assert ledger.known("a") is None and ledger.known("c-id") is None
        assert docker.lists == 1 and docker.lookups == 0
        docker.down = True
        docker.streams[-1].messages.put(DockerUnavailable("the stream broke"))
        soon(lambda: not ledger.trusted)
        assert ledger.known("a-id") is None
    finally:
        ledger.stop()
