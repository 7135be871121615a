"""Simulated MIG changes (``ds01 admin mig apply``), kept in the state directory.

A simulated GPU's MIG layout comes from ``gpu-config.yaml`` (``simulated.gpus``: the
hardware as it was installed) until ``ds01 admin mig apply`` changes it, as ``nvidia-smi
mig`` changes a real GPU. The changes are kept in ``<state-dir>/simulated-mig.json``, by GPU
UUID, so that a restarted ds01d finds the GPUs as they were left::

    {"GPU-…": {"mig": true, "instances": [{"profile": "3g.20gb", "uuid": "MIG-…", "start": 4}]}}

Instances created by ``apply`` get new random UUIDs, as NVML gives new ones to new
instances. Where the GPU's placement table is known, instances are placed as on a real GPU
(``start``: the memory slice they begin at): at the start the plan gave, or the first free
one; a create that has no free place is refused as the driver refuses it. To go back to the
configured layout, stop ds01d and delete the file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ds01.config.gpu_config import SimulatedGpu, SimulatedMigInstance, mig_profile_slices
from ds01.core.mig_placement import NoFit, PlacedInstance, free_starts, place
from ds01.errors import InvalidInput
from ds01.files import read_json_file, replace_file
from ds01.model.mig import MigStep
from ds01.model.mig_placement import MigPlacementTable


class SimulatedMigLayout(BaseModel):
    """One simulated GPU's MIG mode and instances as ``apply`` left them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mig: bool
    instances: tuple[SimulatedMigInstance, ...] = Field(default=())

    def on(self, gpu: SimulatedGpu) -> SimulatedGpu:
        """``gpu`` with this layout instead of its configured one."""
        return gpu.model_copy(update={"mig": self.mig, "mig_instances": list(self.instances)})


_LAYOUTS = TypeAdapter(dict[str, SimulatedMigLayout])


def read_mig_changes(path: Path) -> dict[str, SimulatedMigLayout]:
    """The changed layouts in ``path`` by GPU UUID; ``{}`` if there is no such file. Raises
    what ``ds01.files.read_json_file`` raises (a file that cannot be read, or not of this
    shape)."""
    return read_json_file(path, _LAYOUTS, {})


def write_mig_changes(path: Path, layouts: Mapping[str, SimulatedMigLayout]) -> None:
    """Replace ``path`` atomically with ``layouts`` (mode 0600: the state directory's)."""
    document = {key: layout.model_dump(mode="json") for key, layout in layouts.items()}
    replace_file(path, json.dumps(document, indent=2, sort_keys=True) + "\n", mode=0o600)


def applied(
    layout: SimulatedMigLayout,
    steps: Sequence[MigStep],
    total_slices: int,
    table: MigPlacementTable | None = None,
) -> SimulatedMigLayout:
    """``layout`` after ``steps`` (pure, but for the UUIDs of new instances). ``table``: the
    GPU's placement table; ``None``: only compute slices are counted.

    Raises:
        InvalidInput: a step that a real GPU would refuse: creating an instance with MIG
            mode off or without room (with a table: no free place, or not at the planned
            start), destroying one that is not there, turning MIG mode off while instances
            exist.
    """
    mig, instances = layout.mig, list(layout.instances)
    for step in steps:
        if step.action == "destroy":
            kept = [i for i in instances if i.uuid != step.uuid]
            if len(kept) == len(instances):
                raise InvalidInput(f"no MIG instance {step.uuid} to destroy")
            instances = kept
        elif step.action == "disable_mig":
            if instances:
                raise InvalidInput("MIG mode cannot be turned off while instances exist")
            mig = False
        elif step.action == "enable_mig":
            mig = True
        else:
            profile = step.profile or ""
            used = sum(mig_profile_slices(i.profile) for i in instances)
            if not mig or used + mig_profile_slices(profile) > total_slices:
                raise InvalidInput(f"no room for a {profile} instance")
            start = None if table is None else _start(table, instances, profile, step.start)
            instances.append(
                SimulatedMigInstance(profile=profile, uuid=f"MIG-{uuid.uuid4()}", start=start)
            )
    return SimulatedMigLayout(mig=mig, instances=tuple(instances))


def occupied(
    table: MigPlacementTable, instances: Sequence[SimulatedMigInstance]
) -> list[PlacedInstance]:
    """Where ``instances`` sit: at their ``start``; those configured without one where
    :func:`ds01.core.mig_placement.place` puts them beside the others.

    Raises:
        InvalidInput: they do not fit the table.
    """
    fixed: list[PlacedInstance] = []
    for instance in (i for i in instances if i.start is not None):
        shape = table.shape(instance.profile)
        if shape is None or instance.start not in free_starts(table, instance.profile, fixed):
            raise InvalidInput(
                f"the GPU's MIG instance {instance.profile} cannot begin at memory slice "
                f"{instance.start} beside {', '.join(p.describe() for p in fixed) or 'nothing'}"
            )
        fixed.append(PlacedInstance(instance.profile, instance.start, shape.size))
    rest = place(table, [i.profile for i in instances if i.start is None], fixed)
    if isinstance(rest, NoFit):
        raise InvalidInput(f"the GPU's MIG instances do not fit its placements: {rest.reason}")
    return [*fixed, *rest]


def resolved_starts(
    table: MigPlacementTable, instances: Sequence[SimulatedMigInstance]
) -> list[int | None]:
    """Each instance's start, in order: its own, or where :func:`occupied` puts it; all
    ``None`` when they do not fit the table."""
    try:
        placed = occupied(table, instances)
    except InvalidInput:
        return [None] * len(instances)
    pool = placed[sum(1 for i in instances if i.start is not None) :]
    starts: list[int | None] = []
    for instance in instances:
        if instance.start is not None:
            starts.append(instance.start)
            continue
        found = next(p for p in pool if p.profile == instance.profile)
        pool.remove(found)
        starts.append(found.start)
    return starts


def _start(
    table: MigPlacementTable,
    instances: Sequence[SimulatedMigInstance],
    profile: str,
    wanted: int | None,
) -> int:
    """Where a new ``profile`` instance goes: ``wanted``, or the first free start."""
    taken = occupied(table, instances)
    starts = free_starts(table, profile, taken)
    where = ", ".join(p.describe() for p in taken) or "nothing"
    if wanted is None and starts:
        return starts[0]
    if wanted is not None and wanted in starts:
        return wanted
    at = "" if wanted is None else f" at memory slice {wanted}"
    raise InvalidInput(f"no room for a {profile} instance{at} (the GPU has {where})")


__all__ = [
    "SimulatedMigLayout",
    "applied",
    "occupied",
    "read_mig_changes",
    "resolved_starts",
    "write_mig_changes",
]
