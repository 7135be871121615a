"""``container-stats``: what the caller's containers use now (CPU, memory, processes, GPUs).

``GET /v1/stats`` covers all of the caller's containers (admins: ``user=NAME``'s);
``GET /v1/containers/{name}/stats`` one of them, with its processes. A container is found
and refused exactly as ``container-stop`` finds and refuses it (someone else's: 403 and an
``auth.denied`` event). Like ``container-list``, a read leaves no event when it succeeds.

Where the figures come from:

- CPU, memory and processes: Docker's stats of each running container (two samples a
  second apart; containers are measured in parallel, so a listing takes about a second
  whatever their number), computed as ``docker stats`` does (``ds01.core.container_stats``);
- the process list: Docker's ``top`` (the host's ``ps``), for one container only;
- GPUs: the devices in the container's labels (released ones excluded), with one
  telemetry call to the GPU backend for all of them.

Observation fails soft: a figure that cannot be read (a container that stopped meanwhile,
a backend that fails) is ``null``, and the rest is still answered. A stopped container is
listed with its status and no figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ds01.core import container_stats as measure
from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.limits_enforcement import label_cpus, label_size
from ds01.daemon.sampler import Sampler
from ds01.daemon.service import Ds01Service
from ds01.errors import Ds01Error
from ds01.gpu.backend import DeviceTelemetry
from ds01.model import labels as L
from ds01.model.units import MIB
from ds01.runtime.docker import ContainerRecord

log = logging.getLogger(__name__)

#: Containers measured at once (each Docker stats call waits about a second).
MAX_PARALLEL_READS = 8

T = TypeVar("T")


def listing(service: Ds01Service, caller: Caller, user: str | None) -> list[api.ContainerStats]:
    """Every container of the caller (admins: of ``user``), by name; running ones measured."""
    records = sorted(service.views.visible_records(caller, user=user), key=lambda r: r.name)
    telemetry = Sampler.telemetry(service.backend, records)
    running = [r for r in records if r.status == "running"]
    readings: dict[str, dict[str, Any] | None] = {}
    if running:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_READS, len(running))) as pool:
            found = pool.map(lambda r: _soft(service.runtime.stats, r), running)
            readings = {r.id: reading for r, reading in zip(running, found, strict=True)}
    return [_stats(r, readings.get(r.id), telemetry) for r in records]


def one(service: Ds01Service, caller: Caller, name: str, user: str | None) -> api.ContainerStats:
    """One container of the caller's (admins: ``user``'s), measured, with its processes."""
    record = service.access.target_to_read(caller, name, user, "stats")
    telemetry = Sampler.telemetry(service.backend, [record])
    if record.status != "running":
        return _stats(record, None, telemetry).model_copy(update={"processes": []})
    reading = _soft(service.runtime.stats, record)
    top = _soft(lambda r: service.runtime.top(r, measure.TOP_PS_ARGS), record)
    rows = None if top is None else measure.processes(top)
    return _stats(record, reading, telemetry).model_copy(
        update={
            "processes": None if rows is None else [api.ProcessInfo(**vars(row)) for row in rows]
        }
    )


def _soft(read: Callable[[str], T], record: ContainerRecord) -> T | None:
    """``read(docker_name)``, or ``None`` when Docker cannot tell (observation fails soft)."""
    try:
        return read(record.docker_name)
    except Ds01Error as exc:
        log.debug("could not measure %s: %s", record.docker_name, exc.message)
        return None


def _stats(
    record: ContainerRecord,
    reading: dict[str, Any] | None,
    telemetry: dict[str, DeviceTelemetry],
) -> api.ContainerStats:
    def gpu(uuid: str) -> api.GpuUse:
        known = telemetry.get(uuid)
        used = known.memory_used_mib if known else None
        return api.GpuUse(
            uuid=uuid,
            utilization_percent=known.gpu_util_percent if known else None,
            memory_used_bytes=None if used is None else used * MIB,
        )

    return api.ContainerStats(
        name=record.name,
        docker_name=record.docker_name,
        user=record.user,
        status=record.status,
        cpu_percent=measure.cpu_percent(reading) if reading else None,
        cpu_limit=label_cpus(record),
        memory_bytes=measure.memory_used_bytes(reading) if reading else None,
        memory_limit_bytes=label_size(record, L.MEMORY_BYTES),
        pids=measure.pids(reading) if reading else None,
        gpus=[gpu(u) for u in record.gpus],
    )


__all__ = ["listing", "one"]
