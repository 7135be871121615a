"""The Docker API door's decisions about creates that may wait in the GPU queue: which
requests run among the waiting (``request_waits``, ``asks_for_gpus``), what a held create
does next (``held_create_step``, every combination), and the registry that ties a queue
entry to the client holding it (``HeldCreates``)."""

from __future__ import annotations

import itertools
import json
import select

import pytest

from ds01.core.docker_api import held_create_step, request_waits
from ds01.core.docker_create import RunOptions, asks_for_gpus
from ds01.daemon import schemas as api
from ds01.daemon.held_creates import HeldCreates, held_by_client
from ds01.runtime.store import QueuedRequest, QueueKind

GPUS = {"Driver": "", "Count": 2, "DeviceIDs": None, "Capabilities": [["gpu"]]}


def create(body: object, path: str = "/v1.41/containers/create?name=x") -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


@pytest.mark.parametrize(
    ("requests", "asks"),
    [
        ([GPUS], True),
        ([{**GPUS, "Count": 1, "Driver": "nvidia"}], True),
        (None, False),
        ([], False),
        ([{**GPUS, "Count": 0}], False),
        ([{**GPUS, "Count": -1}], False),  # --gpus all: refused, quickly
        ([{**GPUS, "DeviceIDs": ["0"], "Count": 0}], False),  # by id: never waits
        ([GPUS, GPUS], False),
        ("two", False),
    ],
)
def test_a_create_asks_for_gpus_only_by_a_positive_count(requests: object, asks: bool) -> None:
    assert asks_for_gpus({"Image": "busybox", "HostConfig": {"DeviceRequests": requests}}) is asks


@pytest.mark.parametrize("body", [None, [], "x", {"Image": "b"}, {"HostConfig": "x"}])
def test_a_body_without_a_host_config_asks_for_no_gpus(body: object) -> None:
    assert not asks_for_gpus(body)


def test_a_gpu_create_and_a_followed_stream_wait_and_nothing_else() -> None:
    gpu_create = {"Image": "busybox", "HostConfig": {"DeviceRequests": [GPUS]}}
    assert request_waits(create(gpu_create))
    assert request_waits(create(gpu_create, "/containers/create"))
    assert not request_waits(create({"Image": "busybox"}))
    assert not request_waits(create(gpu_create, "/v1.41/containers/x/start"))
    assert request_waits(b"GET /v1.41/containers/x/logs?follow=1 HTTP/1.1\r\n\r\n")
    assert not request_waits(b"GET /v1.41/containers/x/logs HTTP/1.1\r\n\r\n")
    assert not request_waits(b"not a request")
    broken = create(gpu_create).replace(b"Content-Length: ", b"Content-Length: x")
    assert not request_waits(broken)
    cut = create(gpu_create)[:-5]  # what an early end of file left: not JSON
    assert not request_waits(cut)


STATES = ("waiting", "started", "failed", "cancelled", "gone")


@pytest.mark.parametrize(
    ("state", "made", "left", "stopping"),
    list(itertools.product(STATES, (False, True), (False, True), (False, True))),
)
def test_a_held_create_steps(state: str, made: bool, left: bool, stopping: bool) -> None:
    step = held_create_step(state, made=made, client_left=left, stopping=stopping)
    if left:
        expected = "left"  # nobody to answer: withdrawn, whatever else holds
    elif made:
        expected = "created"  # it exists and its client waits: answered, even while stopping
    elif state != "waiting":
        expected = "ended"
    elif stopping:
        expected = "stopping"
    else:
        expected = "wait"
    assert step == expected


def entry(request: api.CreateContainerRequest | str, kind: QueueKind = "create") -> QueuedRequest:
    text = request if isinstance(request, str) else request.model_dump_json()
    return QueuedRequest(
        id="q1", user="alice", uid=1001, group="users", kind=kind,
        container="job", request_json=text, whole_gpus=1, mig="",
        submitted_at="2026-01-01T00:00:00",
    )  # fmt: skip


def test_only_the_doors_creates_are_held_and_orphaned_when_nobody_holds_them() -> None:
    door = api.CreateContainerRequest(name="job", image="busybox", gpus=1, interface="docker")
    cli = api.CreateContainerRequest(name="job", image="busybox", gpus=1)
    assert held_by_client(entry(door))
    assert not held_by_client(entry(cli))
    assert not held_by_client(entry("", kind="start"))
    assert not held_by_client(entry("{not json"))
    registry = HeldCreates()
    assert registry.orphaned(entry(door)) and not registry.orphaned(entry(cli))
    held = registry.hold("q1", RunOptions(command=("sleep", "1")))
    assert registry.get("q1") is held and not registry.orphaned(entry(door))
    assert held.run.command == ("sleep", "1") and held.made is None
    registry.forget("q1")
    assert registry.get("q1") is None and registry.orphaned(entry(door))


def test_a_held_create_is_woken_and_takes_its_wake_ups() -> None:
    registry = HeldCreates()
    held = registry.hold("q1", RunOptions())
    other = registry.hold("q2", RunOptions())
    try:
        assert select.select([held], [], [], 0)[0] == []
        registry.wake("q1")
        assert select.select([held, other], [], [], 0)[0] == [held]
        held.woken()
        assert select.select([held], [], [], 0)[0] == []
        registry.wake_all()
        assert select.select([held, other], [], [], 0)[0] == [held, other]
    finally:
        registry.forget("q1")
        registry.forget("q2")
    held.wake()  # after it ended: nothing happens
    registry.wake("q1")
