"""``GET /v1/overview`` (``ds01.daemon.overview``) on a service with a stand-in for Docker
that counts its calls: one list call per overview and nothing per container; what an
admin sees and what a user sees (every device, other users' holders by name only, their
own containers, queue and usage); telemetry, lifecycle and queue figures; the schema.

The stand-in is not Docker: the real engine is in ``tests/e2e/test_dashboard.py``. Here
the point is the number and kind of calls, which only a stand-in can count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ds01.config.loader import Ds01Config
from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.overview import overview
from ds01.daemon.server import ROUTES, openapi_document
from ds01.daemon.service import Ds01Service
from ds01.gpu.simulated import SimulatedBackend, simulated_gpu_uuid, write_simulated_telemetry
from ds01.model import labels as L
from ds01.runtime.cgroups import CgroupManager, user_slice_path
from ds01.runtime.docker import ContainerRecord, EngineInfo
from ds01.runtime.identity import user_by_name
from ds01.runtime.store import QueuedRequest
from support import offline_service

GIB = 1024**3
SEED = "ds01-simulated"  # the embedded default inventory: GPUs 0-2 whole, GPU 3 in 4 slices
GPU0, GPU1 = simulated_gpu_uuid(SEED, 0), simulated_gpu_uuid(SEED, 1)
#: Real accounts of every Debian system, so that NSS answers: ``daemon`` is the user who
#: looks, ``bin`` another user; ``ghost`` has no account any more.
ME, OTHER, GHOST = "daemon", "bin", "ghost"


def record(
    user: str, uid: int, name: str, status: str, gpus: tuple[str, ...] = (), mem: int = GIB
) -> ContainerRecord:
    return ContainerRecord.from_summary(
        {
            "Id": f"{name:0<64}"[:64],
            "Names": [f"/{name}._.{uid}"],
            "State": status,
            "Labels": {
                L.MANAGED: "true",
                L.USER: user,
                L.UID: str(uid),
                L.GROUP: "users",
                L.NAME: name,
                L.GPUS: ",".join(gpus),
                L.GPU_EQUIVALENTS: str(len(gpus)),
                L.MEMORY_BYTES: str(mem),
                L.IMAGE: "busybox",
            },
        }
    )


class CountingDocker:
    """Answers the service's two questions and fails on any other call."""

    def __init__(self, records: list[ContainerRecord]) -> None:
        self.records = records
        self.lists = 0

    def engine_info(self) -> EngineInfo:
        return EngineInfo(cgroup_driver="cgroupfs", cpus=4, memory_bytes=64 * GIB)

    def list_managed(self) -> list[ContainerRecord]:
        self.lists += 1
        return list(self.records)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the overview called Docker: runtime.{name}")


@pytest.fixture
def service(tmp_path: Path) -> tuple[Ds01Service, CountingDocker]:
    me, other = user_by_name(ME), user_by_name(OTHER)
    docker = CountingDocker(
        [
            record(ME, me.uid, "train", "running", (GPU0,)),
            record(ME, me.uid, "notes", "created"),
            record(OTHER, other.uid, "secret", "running", (GPU1,)),
            record(GHOST, 4242, "orphan", "stopped"),
        ]
    )
    telemetry = tmp_path / "telemetry.json"
    write_simulated_telemetry(telemetry, {GPU0: {"gpu_util_percent": 55, "memory_used_mib": 900}})
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cgroup.controllers").write_text("cpu memory pids")
    parent = cgroup / user_slice_path("users", ME).lstrip("/")
    parent.mkdir(parents=True)
    (parent / "memory.current").write_text(str(3 * GIB))

    def backend(config: Ds01Config) -> SimulatedBackend:
        return SimulatedBackend(config.gpus, telemetry_file=telemetry)

    svc = offline_service(tmp_path, docker, backend_factory=backend, cgroups=CgroupManager(cgroup))
    for user, uid, container in ((OTHER, other.uid, "big"), (ME, me.uid, "later")):
        svc.store.add_queued(
            QueuedRequest(
                id=f"q-{container}", user=user, uid=uid, group="users", kind="create",
                container=container, request_json="{}", whole_gpus=2, mig="",
                submitted_at="2026-11-28T11:00:00+00:00",
            )
        )  # fmt: skip
    return svc, docker


def caller(name: str, *, admin: bool) -> Caller:
    return Caller(user=user_by_name(name), pid=1, is_admin=admin)


def holders(view: api.Overview) -> dict[str, tuple[str, str | None] | None]:
    return {d.uuid: (d.holder.user, d.holder.container) if d.holder else None for d in view.devices}


def test_an_admin_sees_everything_from_one_docker_call(
    service: tuple[Ds01Service, CountingDocker],
) -> None:
    svc, docker = service
    view = overview(svc, caller("root", admin=True))
    assert docker.lists == 1
    assert (view.scope, view.is_admin, view.user) == ("all", True, "root")
    assert len(view.devices) == 7  # 3 whole GPUs and 4 MIG instances
    assert holders(view)[GPU0] == (ME, "train") and holders(view)[GPU1] == (OTHER, "secret")
    gpu0 = next(d for d in view.devices if d.uuid == GPU0)
    assert (gpu0.label, gpu0.utilization_percent, gpu0.memory_used_mib) == ("0", 55, 900)
    assert next(d.label for d in view.devices if d.kind == "mig") == "3:3g.20gb#1"
    assert all(d.utilization_percent is None for d in view.devices if d.kind == "mig")
    totals = view.totals
    assert (totals.devices, totals.devices_allocated) == (7, 2)
    assert (totals.gpu_equivalents, totals.gpu_equivalents_allocated) == (4.0, 2.0)
    assert (totals.containers, totals.containers_running, totals.queued_requests) == (4, 2, 2)
    assert [(c.user, c.name) for c in view.containers] == [
        (OTHER, "secret"), (ME, "notes"), (ME, "train"), (GHOST, "orphan"),
    ]  # fmt: skip
    train = next(c for c in view.containers if c.name == "train")
    assert (train.gpu_utilization_percent, train.gpu_memory_used_mib) == (55, 900)
    notes = next(c for c in view.containers if c.name == "notes")
    assert notes.gpu_utilization_percent is None
    assert {q.container for q in view.queue} == {"big", "later"}
    users = {u.user: u for u in view.users}
    assert set(users) == {ME, OTHER, GHOST}
    assert (users[ME].gpu_equivalents, users[ME].containers, users[ME].running) == (1.0, 2, 1)
    assert users[ME].memory_bytes == 3 * GIB and users[ME].memory_committed_bytes == 2 * GIB
    assert users[ME].queued == 1 and users[OTHER].queued == 1
    assert users[GHOST].gpu_limit is None and users[GHOST].containers == 1
    gpu_status = svc.gpu_status(caller("root", admin=True))  # the same devices and holders
    assert [(d.uuid, d.holder) for d in gpu_status.devices] == [
        (d.uuid, api.Holder(user=d.holder.user, container=d.holder.container or "?")
         if d.holder else None)
        for d in view.devices
    ]  # fmt: skip


def test_a_user_sees_every_device_and_only_their_own_containers_queue_and_usage(
    service: tuple[Ds01Service, CountingDocker],
) -> None:
    svc, docker = service
    view = overview(svc, caller(ME, admin=False))
    assert docker.lists == 1
    assert view.scope == "own"
    assert len(view.devices) == 7
    assert holders(view)[GPU0] == (ME, "train")
    assert holders(view)[GPU1] == (OTHER, None)  # another user's: the name only
    assert [c.name for c in view.containers] == ["notes", "train"]
    assert [q.container for q in view.queue] == ["later"]
    assert [u.user for u in view.users] == [ME]
    assert view.totals.containers == 4 and view.totals.queued_requests == 2  # the machine
    assert "secret" not in view.model_dump_json() and "big" not in view.model_dump_json()


def test_a_user_with_nothing_sees_their_empty_usage(
    service: tuple[Ds01Service, CountingDocker],
) -> None:
    svc, _ = service
    view = overview(svc, caller("nobody", admin=False))
    assert view.containers == [] and view.queue == []
    assert [(u.user, u.containers, u.gpu_equivalents) for u in view.users] == [("nobody", 0, 0)]


def test_the_lifecycle_loops_last_word_shows(service: tuple[Ds01Service, CountingDocker]) -> None:
    svc, docker = service
    train = next(r for r in docker.records if r.name == "train")
    svc.status.lifecycle_status = {
        train.id: api.LifecycleStatus(
            container_id=train.id, name="train", user=ME, status="running", idle_minutes=12.5,
            stop_at="2026-11-28T13:00:00+00:00", reason="idle for 12 min",
        )
    }  # fmt: skip
    view = overview(svc, caller(ME, admin=False))
    shown = next(c for c in view.containers if c.name == "train")
    assert (shown.idle_minutes, shown.stop_at) == (12.5, "2026-11-28T13:00:00+00:00")
    assert shown.stop_reason == "idle for 12 min"


def test_a_released_containers_devices_are_free(
    service: tuple[Ds01Service, CountingDocker],
) -> None:
    svc, docker = service
    secret = next(r for r in docker.records if r.name == "secret")
    svc.store.release(secret.id, secret.docker_name, "2026-11-28T11:00:00+00:00")
    view = overview(svc, caller("root", admin=True))
    assert holders(view)[GPU1] is None
    assert view.totals.gpu_equivalents_allocated == 1.0
    assert {u.user: u.gpu_equivalents for u in view.users}[OTHER] == 0


def test_the_route_and_its_schema() -> None:
    route = next(r for r in ROUTES if r.path == "/v1/overview")
    assert route.method == "GET" and route.response is api.Overview
    document = openapi_document()
    assert "Overview" in document["components"]["schemas"]
    assert "OverviewContainer" in document["components"]["schemas"]
