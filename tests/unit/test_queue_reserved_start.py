"""ds01d's queue pass with a GPU reservation in force, over the simulated backend, a real
state store and a fixed clock: the holder's queued request starts on the reserved GPU ahead
of an earlier request of someone else, who is kept off it, and on top of the holder's
quota; and, with an upcoming reservation that keeps a slot on a GPU with MIG on demand, no
slice made over the slot's place for a queued request that could still hold it at the
start (one that ends in time backfills). Docker is not asked: the pass's
container start is recorded instead of made (``Recording._start``), everything before it is
the daemon's own code."""

from __future__ import annotations

import pwd
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ds01.config.loader import Ds01Config
from ds01.core.allocation import Placement
from ds01.core.mig_on_demand import PLANNED_PREFIX
from ds01.core.reservations import Reservation
from ds01.core.scheduler import DEVICE_WAIT_STATUSES
from ds01.daemon import schemas as api
from ds01.daemon.dispatcher import GpuDispatcher
from ds01.gpu.simulated import SimulatedBackend
from ds01.runtime.store import QueuedRequest, ReservationRecord
from support import (
    ListingDocker,
    offline_service,
    running_record,
    simulated_a100s,
    simulated_backend_in,
)

GPU_CONFIG = simulated_a100s(3)
LIMITS = """\
defaults:
  gpu_limit: 1
"""
NOW = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
#: No account has this uid: the container on the other GPU is a stranger's.
STRANGER_UID = 3_999_998


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
    docker = ListingDocker()
    service = offline_service(
        tmp_path,
        docker,
        config={"gpu-config.yaml": GPU_CONFIG, "resource-limits.yaml": LIMITS},
        backend_factory=simulated_backend_in(tmp_path),
        clock=lambda: NOW,
    )
    reserved, other, own = (d.uuid for d in service.backend.inventory().devices)
    holder, someone = pwd.getpwuid(0), pwd.getpwnam("nobody")
    # A stranger's container holds one GPU; the holder uses their whole quota on another.
    docker.containers = [
        running_record("busy", "stranger", STRANGER_UID, other),
        running_record("thesis", holder.pw_name, holder.pw_uid, own),
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


# The baseline 3g.20gb sits at memory slice 0 (a stranger's container holds it): a 1g.5gb
# could be made at 4, 5 or 6.
MIG_GPU_CONFIG = """\
backend: simulated
simulated:
  gpus:
    - {model: NVIDIA A100-SXM4-40GB, mig: true, mig_instances: [{profile: 3g.20gb, start: 0}]}
mig_layout:
  0: {dynamic: [3g.20gb]}
"""
MIG_LIMITS = """\
defaults:
  gpu_limit: 1
  max_runtime_hours: 4
  gpu_hold_after_stop_minutes: 15
"""


def queued_mig(id_: str, user: pwd.struct_passwd) -> QueuedRequest:
    body = api.CreateContainerRequest(name=f"nb-{id_}", image="img", mig=["1g.5gb"])
    return QueuedRequest(
        id_, user.pw_name, user.pw_uid, "phd", "create", body.name, body.model_dump_json(),
        0, "1g.5gb", (NOW - timedelta(minutes=1)).isoformat(timespec="seconds"),
    )  # fmt: skip


@pytest.mark.parametrize(("slot_in_hours", "started"), [(2, []), (6, ["backfills"])])
def test_a_queued_slice_is_not_made_over_a_slot_it_could_still_hold_at_its_start(
    tmp_path: Path, slot_in_hours: float, started: list[str]
) -> None:
    # The slot (memory slices 4-7) starts in 2 hours: the request, which may run 4 hours,
    # could still hold a slice there then, so none is made for it and it waits. A slot
    # starting in 6 hours leaves it room to run before (backfill): it starts on a new slice.
    def backend(config: Ds01Config) -> SimulatedBackend:
        return SimulatedBackend(
            config.gpus, telemetry_file=tmp_path / "t.json", mig_file=tmp_path / "mig.json"
        )

    docker = ListingDocker()
    service = offline_service(
        tmp_path,
        docker,
        config={"gpu-config.yaml": MIG_GPU_CONFIG, "resource-limits.yaml": MIG_LIMITS},
        backend_factory=backend,
        clock=lambda: NOW,
    )
    [gpu] = service.backend.inventory().gpus
    [baseline] = service.backend.inventory().devices
    docker.containers = [running_record("busy", "stranger", STRANGER_UID, baseline.uuid)]
    holder, someone = pwd.getpwuid(0), pwd.getpwnam("nobody")

    start = NOW + timedelta(hours=slot_in_hours)
    booking = Reservation(
        "r1", holder.pw_name, (f"MIG-slot-{gpu.uuid}-4",), start, start + timedelta(hours=2),
        Fraction(3, 7), profile="3g.20gb",
    )  # fmt: skip
    service.store.add_reservation(ReservationRecord.of(booking, NOW.isoformat(), "upcoming"))
    service.store.add_queued(queued_mig("backfills" if started else "waits", someone))
    dispatcher = Recording(service, clock=lambda: NOW)
    dispatcher.started = []
    assert dispatcher.run_pass() == started
    # A start is on a slice planned for it (made by the start, which is recorded here).
    assert all(uuids[0].startswith(PLANNED_PREFIX) for _, uuids in dispatcher.started)
    service.events.close()
