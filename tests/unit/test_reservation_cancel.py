"""ds01d's side of a cancel and of a start after a reservation's end, over a real state
store: a cancel in force cuts the end (the hours kept still count), a cancel before the
start drops the reservation, an ended one cannot be cancelled; a stopped container on the
devices of its owner's ended reservation gives them back before a start beyond quota."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from ds01.core.reservations import Reservation
from ds01.daemon.identity import Caller
from ds01.daemon.reservations import cancel, due_back, kept
from ds01.daemon.service import Ds01Service
from ds01.errors import InvalidInput, NotFound
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import ReservationRecord
from support import offline_service, simulated_a100s, simulated_backend_in

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ALICE = UnixUser("alice", 1000, 1000, Path("/home/alice"), ("alice",))
LIMITS = "defaults: {gpu_limit: 1, max_containers: 5}\n"


class Clock:
    """The service's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def service(tmp_path: Path, clock: Clock) -> Ds01Service:
    return offline_service(
        tmp_path,
        config={"gpu-config.yaml": simulated_a100s(2), "resource-limits.yaml": LIMITS},
        backend_factory=simulated_backend_in(tmp_path),
        clock=clock,
    )


def reserve(svc: Ds01Service, start: datetime, hours: float = 2) -> Reservation:
    devices = tuple(d.uuid for d in svc.backend.inventory().devices)
    r = Reservation("r1", "alice", devices, start, start + timedelta(hours=hours), Fraction(2))
    svc.store.add_reservation(ReservationRecord.of(r, START.isoformat(), "upcoming"))
    return r


def container(name: str, devices: tuple[str, ...], status: str) -> ContainerRecord:
    labels = {
        L.MANAGED: "true", L.USER: "alice", L.UID: "1000", L.NAME: name,
        L.GPUS: ",".join(devices), L.GPU_EQUIVALENTS: str(len(devices)),
    }  # fmt: skip
    return ContainerRecord.from_summary(
        {"Id": name.ljust(64, "0"), "Names": [f"/{name}._.1000"], "State": status,
         "Labels": labels}
    )  # fmt: skip


def test_a_cancel_in_force_cuts_the_end_and_before_the_start_drops_it(tmp_path: Path) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    caller = Caller(ALICE, pid=1, is_admin=False)
    reserve(svc, START)
    clock.now = START + timedelta(hours=1, microseconds=500_000)
    shown = cancel(svc, caller, "r1")
    assert shown.phase == "ended"
    [cut] = kept(svc)
    assert cut.end == START + timedelta(hours=1)  # to the second, what it kept still counts
    assert cut.gpu_hours == 2
    with pytest.raises(InvalidInput, match="ended already"):
        cancel(svc, caller, "r1")

    svc.store.forget_reservations((START + timedelta(days=30)).isoformat())
    reserve(svc, START + timedelta(hours=3))
    assert cancel(svc, caller, "r1").phase == "cancelled"
    assert kept(svc) == []
    # Dropped, not kept as a cancelled row until a week after its end: create-and-cancel
    # loops leave nothing for each later read of the store to wade through.
    assert svc.store.reservations(include_cancelled=True) == []
    with pytest.raises(NotFound):
        cancel(svc, caller, "r1")


def test_a_start_after_the_end_gives_the_reserved_devices_back_first(tmp_path: Path) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    r = reserve(svc, START)
    stopped = container("exam", r.devices, "exited")
    clock.now = r.end - timedelta(seconds=1)
    assert due_back(svc, ALICE, stopped, [stopped]) is None  # in force: hers on top of quota
    clock.now = r.end + timedelta(seconds=1)  # before the lifecycle's pass
    why = due_back(svc, ALICE, stopped, [stopped])
    assert why is not None and "reservation r1" in why and "gpu_limit" in why
    # Within quota without it (one GPU, gpu_limit 1): it keeps its device.
    one = container("small", r.devices[:1], "exited")
    assert due_back(svc, ALICE, one, [one]) is None


def test_a_cancel_wakes_the_lifecycle_loop(tmp_path: Path) -> None:
    # Its wait was computed with the old end: the cut end is due at once.
    clock = Clock()
    svc = service(tmp_path, clock)
    reserve(svc, START)
    clock.now = START + timedelta(minutes=30)
    woken = threading.Event()

    def loop_wait() -> None:
        with svc.lifecycle_condition:
            ready.set()
            if svc.lifecycle_condition.wait(timeout=60):
                woken.set()

    ready = threading.Event()
    waiter = threading.Thread(target=loop_wait)
    waiter.start()
    ready.wait()
    with svc.lifecycle_condition:  # the waiter is in wait(): it released the condition
        pass
    cancel(svc, Caller(ALICE, pid=1, is_admin=False), "r1")
    waiter.join()
    assert woken.is_set()
