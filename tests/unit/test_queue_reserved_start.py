"""ds01d's queue pass with a GPU reservation in force, over the simulated backend, a real
state store and a fixed clock: the holder's queued request starts on the reserved GPU ahead
of an earlier request of someone else, who is kept off it, and on top of the holder's
quota. Docker is not asked: the pass's
container start is recorded instead of made (``Recording._start``), everything before it is
the daemon's own code."""

from __future__ import annotations

import pwd
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

from ds01.config.loader import Ds01Config
from ds01.core.allocation import Placement
from ds01.core.reservations import Reservation
from ds01.core.scheduler import DEVICE_WAIT_STATUSES
from ds01.daemon import schemas as api
from ds01.daemon.dispatcher import GpuDispatcher
from ds01.gpu.simulated import SimulatedBackend
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import QueuedRequest, ReservationRecord
from support import NoDocker, offline_service, simulated_a100s

GPU_CONFIG = simulated_a100s(3)
LIMITS = """\
defaults:
  gpu_limit: 1
"""
NOW = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
#: No account has this uid: the container on the other GPU is a stranger's.
STRANGER_UID = 3_999_998


def running(name: str, user: str, uid: int, uuid: str) -> ContainerRecord:
    labels = {
        L.MANAGED: "true", L.USER: user, L.UID: str(uid), L.NAME: name, L.GPUS: uuid,
        L.GPU_EQUIVALENTS: "1",
    }  # fmt: skip
    return ContainerRecord.from_summary(
        {"Id": name * 8, "Names": [f"/{name}._.{uid}"], "State": "running", "Labels": labels}
    )


class RunningDocker(NoDocker):
    """Docker as the pass sees it: the running ``containers``."""

    def __init__(self) -> None:
        self.containers: list[ContainerRecord] = []

    def list_managed(self) -> list[ContainerRecord]:
        return list(self.containers)


class Recording(GpuDispatcher):
    """The dispatcher with its container start recorded instead of made."""

    started: list[tuple[str, tuple[str, ...]]]

    def _start(self, item: Any, placement: Placement, *_: Any) -> bool:
        self.started.append((item.entry.id, placement.uuids))
        self._finish_started(item.entry, placement.uuids, NOW)  # the daemon's own record
        return True


def queued(id_: str, user: pwd.struct_passwd, submitted: datetime) -> QueuedRequest:
    body = api.CreateContainerRequest(name=f"nb-{id_}", image="img", gpus=1)
    return QueuedRequest(
        id_, user.pw_name, user.pw_uid, "phd", "create", body.name, body.model_dump_json(),
        1, "", submitted.isoformat(timespec="seconds"),
    )  # fmt: skip


def test_a_holders_queued_request_starts_on_the_reserved_gpu_and_no_one_elses(
    tmp_path: Path,
) -> None:
    def backend(config: Ds01Config) -> SimulatedBackend:
        return SimulatedBackend(config.gpus, telemetry_file=tmp_path / "telemetry.json")

    docker = RunningDocker()
    service = offline_service(
        tmp_path,
        docker,
        config={"gpu-config.yaml": GPU_CONFIG, "resource-limits.yaml": LIMITS},
        backend_factory=backend,
        clock=lambda: NOW,
    )
    reserved, other, own = (d.uuid for d in service.backend.inventory().devices)
    holder, someone = pwd.getpwuid(0), pwd.getpwnam("nobody")
    # A stranger's container holds one GPU; the holder uses their whole quota on another.
    docker.containers = [
        running("busy", "stranger", STRANGER_UID, other),
        running("thesis", holder.pw_name, holder.pw_uid, own),
    ]
    booking = Reservation(
        "r1", holder.pw_name, (reserved,), NOW - timedelta(hours=1), NOW + timedelta(hours=3),
        Fraction(1),
    )  # fmt: skip
    service.store.add_reservation(ReservationRecord.of(booking, NOW.isoformat(), "active"))
    # Someone else asked first; the holder's request came later.
    service.store.add_queued(queued("first", someone, NOW - timedelta(hours=2)))
    service.store.add_queued(queued("holders", holder, NOW - timedelta(minutes=5)))

    dispatcher = Recording(service, clock=lambda: NOW)
    dispatcher.started = []
    assert dispatcher.run_pass() == ["holders"]
    assert dispatcher.started == [("holders", (reserved,))]
    # The earlier request waits for a device: the reserved one is not theirs. The holder's
    # is over quota for the plan; it started on top of it, on the reservation.
    plan = service.status.queue_plan
    assert plan is not None
    assert {e.request.id: e.status in DEVICE_WAIT_STATUSES for e in plan.ranked} == {
        "first": True
    }
    service.events.close()
