"""ds01d's usage ledger (the fair-share record of who held GPUs when), kept by the queue
pass over a real state store and the daemon's own code, with Docker's list given: a
container's first row runs from its creation, and a container whose devices were released
and acquired again in place counts from then, never over the while it held nothing."""

from __future__ import annotations

import pwd
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ds01.daemon.dispatcher import GpuDispatcher
from support import (
    ListingDocker,
    offline_service,
    running_record,
    simulated_a100s,
    simulated_backend_in,
)

CREATED = datetime(2026, 12, 7, 8, tzinfo=timezone.utc)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def test_a_container_released_and_acquired_again_counts_only_while_it_holds(
    tmp_path: Path,
) -> None:
    clock = {"now": CREATED + timedelta(minutes=1)}

    docker = ListingDocker()
    service = offline_service(
        tmp_path,
        docker,
        config={"gpu-config.yaml": simulated_a100s(1)},
        backend_factory=simulated_backend_in(tmp_path),
        clock=lambda: clock["now"],
    )
    [gpu] = service.backend.inventory().devices
    owner = pwd.getpwuid(0)
    container = running_record("nb", owner.pw_name, owner.pw_uid, gpu.uuid, stamp(CREATED))
    docker.containers = [container]
    dispatcher = GpuDispatcher(service, clock=lambda: clock["now"])

    def rows() -> list[tuple[str, str | None]]:
        return sorted((u.start, u.end) for u in service.store.usage())

    dispatcher.run_pass()
    assert rows() == [(stamp(CREATED), None)]  # from its creation, before the first pass

    released_at = CREATED + timedelta(hours=1)
    clock["now"] = released_at
    service.store.release(container.id, container.docker_name, stamp(released_at))
    dispatcher.run_pass()
    assert rows() == [(stamp(CREATED), stamp(released_at))]

    again = CREATED + timedelta(hours=5)  # started again in place, four hours later
    clock["now"] = again
    service.store.unrelease([container.id])
    dispatcher.run_pass()
    assert rows() == [(stamp(CREATED), stamp(released_at)), (stamp(again), None)]
    service.events.close()
