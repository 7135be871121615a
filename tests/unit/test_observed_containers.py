"""ObservedContainers: one Docker list per change, never a list older than the last event.

The runtime here is a stand-in with a hand-fed event stream (the real one is exercised in
tests/integration/test_observed_docker.py): these tests pin the cache's rules.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from ds01.daemon.observed import ObservedContainers
from ds01.runtime.docker import ContainerRecord, EventStream

_END = object()


def record(name: str) -> ContainerRecord:
    return ContainerRecord(
        id=name, docker_name=name, name=name, user="alice", uid=1000, group="users",
        status="running", image="busybox", gpus=(), gpu_equivalents=Fraction(0),
        created_at="", request_id="", labels={},
    )  # fmt: skip


class FeedStream:
    """An event stream fed by the test: ``send`` one event, ``end`` it."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (message := self.messages.get()) is not _END:
            yield message

    def send(self, action: str = "start") -> None:
        self.messages.put({"Type": "container", "Action": action, "id": "x", "time": 1})

    def close(self) -> None:
        self.messages.put(_END)


class StandIn:
    def __init__(self) -> None:
        self.containers = [record("a")]
        self.lists = 0
        self.streams: list[FeedStream] = []
        self.connected = threading.Event()
        self.during_list: Any = None

    def list_managed(self) -> list[ContainerRecord]:
        self.lists += 1
        if self.during_list:
            self.during_list()
        return list(self.containers)

    def container_events(self, actions: tuple[str, ...], since: float | None = None) -> Any:
        assert "start" in actions and "destroy" in actions
        stream = FeedStream()
        self.streams.append(stream)
        self.connected.set()
        return EventStream(stream)


def settle(observed: ObservedContainers, runtime: StandIn, before: int) -> None:
    """Wait until the follower has handled what was sent (it bumps the generation)."""
    deadline = time.monotonic() + 5
    while observed._generation == before and time.monotonic() < deadline:
        time.sleep(0.01)


def following(runtime: StandIn, **kwargs: Any) -> ObservedContainers:
    observed = ObservedContainers(runtime, **kwargs)
    observed.start()
    assert runtime.connected.wait(5)
    deadline = time.monotonic() + 5
    while not observed._following and time.monotonic() < deadline:
        time.sleep(0.01)
    return observed


def test_without_the_event_stream_every_call_lists() -> None:
    runtime = StandIn()
    observed = ObservedContainers(runtime)
    observed.list_managed()
    observed.list_managed()
    assert runtime.lists == 2


def test_one_list_until_docker_reports_a_change() -> None:
    runtime = StandIn()
    observed = following(runtime)
    try:
        assert [r.name for r in observed.list_managed()] == ["a"]
        assert [r.name for r in observed.list_managed()] == ["a"]
        assert runtime.lists == 1
        runtime.containers.append(record("b"))
        before = observed._generation
        runtime.streams[-1].send("create")
        settle(observed, runtime, before)
        assert [r.name for r in observed.list_managed()] == ["a", "b"]
        assert runtime.lists == 2
    finally:
        observed.stop()


def test_a_change_while_listing_is_not_kept() -> None:
    runtime = StandIn()
    observed = following(runtime)
    try:
        # An event arrives while the list call runs: that list may already be stale.
        runtime.during_list = observed.changed
        observed.list_managed()
        runtime.during_list = None
        observed.list_managed()
        assert runtime.lists == 2
    finally:
        observed.stop()


def test_a_kept_list_expires() -> None:
    runtime = StandIn()
    now = [0.0]
    observed = following(runtime, max_age_seconds=10, monotonic=lambda: now[0])
    try:
        observed.list_managed()
        now[0] = 9.9
        observed.list_managed()
        assert runtime.lists == 1
        now[0] = 10.0
        observed.list_managed()
        assert runtime.lists == 2
    finally:
        observed.stop()


def test_a_broken_stream_means_listing_every_time_until_it_is_back() -> None:
    runtime = StandIn()
    observed = following(runtime)
    try:
        observed.list_managed()
        runtime.connected.clear()
        runtime.streams[-1].close()  # Docker went away
        deadline = time.monotonic() + 5
        while observed._following and time.monotonic() < deadline:
            time.sleep(0.01)
        lists = runtime.lists
        observed.list_managed()
        observed.list_managed()
        assert runtime.lists == lists + 2
        assert runtime.connected.wait(5)  # followed again after the first wait
    finally:
        observed.stop()
