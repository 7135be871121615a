"""MIG layouts as plain data: what a GPU has, what ``gpu-config.yaml`` wants, the steps between.

``ds01 admin mig plan`` shows, per GPU, its current layout, the desired one
(``mig_layout:`` in ``gpu-config.yaml``) and whether it can be applied; ``ds01 admin mig
apply`` carries out the steps on the GPUs that can. Everything here is pure: the daemon
passes the inventory, the devices held by containers and, where the backend knows them, the
MIG profiles each GPU offers.

Rules:

- a layout is either a whole GPU (MIG mode off) or MIG mode on with a list of instance
  profiles (``3g.20gb``); two layouts are the same when the mode is and the profiles are,
  in any order;
- a GPU whose layout differs is changed by destroying every instance it has and creating
  the desired ones, largest first (what NVIDIA's own tooling does: keeping some instances
  can leave the free slices in places no new instance fits); MIG mode is switched on before
  the instances are created, and off after they are destroyed;
- a GPU is changed only when none of its devices (the whole GPU or any MIG instance) is
  held by a container; otherwise the plan says who holds it;
- the desired instances must fit: their compute slices add up to at most the GPU's; on
  a backend that reports the GPU's profiles, each is one of them; and where the GPU's
  placement table is known (``ds01.model.mig_placement``), each gets a start on the GPU's
  memory slices beside the others (``ds01.core.mig_placement.place``), which the ``create``
  steps carry. Placement, not the count of slices, decides: on an A100-40GB
  ``[3g.20gb, 3g.20gb, 1g.5gb]`` needs 7 of 7 compute slices but does not fit, so it is
  refused before anything is changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ds01.config.gpu_config import DynamicMig, mig_profile_slices
from ds01.core.allocation import Holding
from ds01.core.mig_placement import NoFit, PlacedInstance, place
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.mig import MigStep
from ds01.model.mig_placement import MigPlacementTable

#: unchanged: already as desired; apply: can be changed now; held: a container holds one of
#: its devices; invalid: the desired layout does not fit the GPU; unmanaged: not in
#: ``mig_layout``; missing: ``mig_layout`` names a GPU this machine does not have.
PlanStatus = Literal["unchanged", "apply", "held", "invalid", "unmanaged", "missing"]


@dataclass(frozen=True)
class Layout:
    """A GPU's MIG layout: a whole GPU (``mig`` false), or MIG on with these instances.
    ``dynamic``: MIG on demand, ``profiles`` being the baseline (ds01d makes and destroys
    the other instances; ``mig plan`` only turns MIG mode on and makes the baseline)."""

    mig: bool
    profiles: tuple[str, ...] = ()
    dynamic: bool = False

    @classmethod
    def of(cls, value: Sequence[str] | bool | DynamicMig) -> Layout:
        """The layout ``mig_layout`` writes as ``off`` (a whole GPU), a list of profiles,
        or ``dynamic``."""
        if isinstance(value, DynamicMig):
            return cls(mig=True, profiles=value.baseline, dynamic=True)
        if value is False:
            return cls(mig=False)
        if value is True:
            raise ValueError("a MIG layout is `off` or a list of profiles, not `true`")
        return cls(mig=True, profiles=tuple(value))

    def same_as(self, other: Layout) -> bool:
        return self.mig == other.mig and sorted(self.profiles) == sorted(other.profiles)

    @property
    def slices(self) -> int:
        return sum(mig_profile_slices(p) for p in self.profiles)

    def describe(self) -> str:
        """``whole GPU``, ``MIG: 3g.20gb + 2g.10gb``, ``MIG on, no instance``, ``MIG on
        demand (baseline: 3g.20gb)``."""
        if self.dynamic:
            baseline = " + ".join(_largest_first(self.profiles)) or "none"
            return f"MIG on demand (baseline: {baseline})"
        if not self.mig:
            return "whole GPU"
        if not self.profiles:
            return "MIG on, no instance"
        return "MIG: " + " + ".join(_largest_first(self.profiles))


@dataclass(frozen=True)
class GpuPlan:
    """What ``mig plan`` says about one GPU (or one ``mig_layout`` key with no GPU).

    Attributes:
        key: how ``mig_layout`` names the GPU (``"3"`` or its UUID); ``None`` if it does not.
        gpu_index, gpu_uuid, model: the GPU (``None`` for a ``missing`` key).
        current: its layout now (``None`` for a ``missing`` key).
        desired: the layout ``mig_layout`` wants (``None`` for an ``unmanaged`` GPU).
        status: see ``PlanStatus``.
        reason: the status in a sentence.
        steps: what ``apply`` does, in order (empty unless ``apply`` or ``held``).
        holders: ``user/container`` of every container holding one of its devices.
    """

    key: str | None
    gpu_index: int | None
    gpu_uuid: str | None
    model: str | None
    current: Layout | None
    desired: Layout | None
    status: PlanStatus
    reason: str
    steps: tuple[MigStep, ...] = ()
    holders: tuple[str, ...] = ()


def _largest_first(profiles: Iterable[str]) -> list[str]:
    """Profiles by compute slices, largest first (names that are no plain profile, such as
    NVML's ``1c.3g.20gb`` for a partial compute instance, last)."""

    def slices(profile: str) -> int:
        try:
            return mig_profile_slices(profile)
        except ValueError:
            return 0

    return sorted(profiles, key=lambda p: (-slices(p), p))


def current_layout(gpu: PhysicalGpu, devices: Iterable[Device]) -> Layout:
    """``gpu``'s layout from the inventory's devices (its MIG instances, in order)."""
    if not gpu.mig_enabled:
        return Layout(mig=False)
    return Layout(
        mig=True,
        profiles=tuple(
            d.profile or "?" for d in devices if d.kind == "mig" and d.gpu_uuid == gpu.uuid
        ),
    )


def steps_between(
    instances: Sequence[Device],
    mig_enabled: bool,
    desired: Layout,
    placed: Sequence[PlacedInstance] | None = None,
) -> tuple[MigStep, ...]:
    """The steps from a GPU with ``instances`` and MIG mode ``mig_enabled`` to ``desired``;
    none when it already is as desired. ``placed``: where ``desired``'s instances go (from
    :func:`ds01.core.mig_placement.place`), in the order to create them; ``None``: largest
    first, wherever the driver puts them."""
    current = Layout(mig=mig_enabled, profiles=tuple(d.profile or "?" for d in instances))
    if current.same_as(desired):
        return ()
    steps = [MigStep("destroy", d.profile, d.uuid) for d in instances]
    if mig_enabled and not desired.mig:
        steps.append(MigStep("disable_mig"))
    if desired.mig and not mig_enabled:
        steps.append(MigStep("enable_mig"))
    if placed is None:
        steps += [MigStep("create", p) for p in _largest_first(desired.profiles)]
    else:
        steps += [MigStep("create", p.profile, start=p.start) for p in placed]
    return tuple(steps)


def _problem(gpu: PhysicalGpu, desired: Layout, offered: Sequence[str] | None) -> str | None:
    """Why ``desired`` cannot be made on ``gpu``, or ``None``."""
    if not desired.mig:
        return None
    if not desired.profiles and not desired.dynamic:
        return "MIG on with no instance leaves the GPU unusable; write `off` for a whole GPU"
    if desired.slices > gpu.total_slices:
        return f"the instances need {desired.slices} compute slices, the GPU has {gpu.total_slices}"
    if offered is not None:
        unknown = sorted({p for p in desired.profiles if p not in offered})
        if unknown:
            return (
                f"{gpu.model} offers no MIG profile {', '.join(unknown)} "
                f"(it offers: {', '.join(offered) or 'none'})"
            )
    return None


def plan_mig(
    inventory: Inventory,
    desired: Mapping[int | str, Layout],
    held: Mapping[str, Holding],
    offered: Mapping[int, Sequence[str] | None] | None = None,
    tables: Mapping[int, MigPlacementTable | None] | None = None,
) -> tuple[GpuPlan, ...]:
    """One ``GpuPlan`` per GPU of ``inventory`` (by index), then one per ``desired`` key
    that names no GPU here.

    Args:
        inventory: the GPUs and devices now.
        desired: ``mig_layout``: a GPU index or UUID → its desired layout.
        held: device UUID → the container holding it (``AllocationState.held()``).
        offered: GPU index → the MIG profiles it offers; absent or ``None``: not known, any
            valid profile name is taken.
        tables: GPU index → its placement table; absent or ``None``: not known, only
            compute slices are checked and the driver places the instances.
    """
    plans: list[GpuPlan] = []
    used: set[int | str] = set()
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        key = next((k for k in (gpu.index, gpu.uuid) if k in desired), None)
        instances = [d for d in inventory.devices if d.kind == "mig" and d.gpu_uuid == gpu.uuid]
        if key is not None:
            used.add(key)
        plans.append(
            _plan_gpu(
                gpu,
                None if key is None else str(key),
                None if key is None else desired[key],
                instances,
                held,
                (offered or {}).get(gpu.index),
                (tables or {}).get(gpu.index),
            )
        )
    plans += [
        GpuPlan(
            key=str(key),
            gpu_index=None,
            gpu_uuid=None,
            model=None,
            current=None,
            desired=wanted,
            status="missing",
            reason=f"mig_layout names GPU {key}, which this machine does not have",
        )
        for key, wanted in desired.items()
        if key not in used
    ]
    return tuple(plans)


def _plan_gpu(
    gpu: PhysicalGpu,
    key: str | None,
    wanted: Layout | None,
    instances: Sequence[Device],
    held: Mapping[str, Holding],
    offered: Sequence[str] | None,
    table: MigPlacementTable | None,
) -> GpuPlan:
    def plan(
        status: PlanStatus,
        reason: str,
        steps: tuple[MigStep, ...] = (),
        holders: tuple[str, ...] = (),
    ) -> GpuPlan:
        return GpuPlan(
            key=key,
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            model=gpu.model,
            current=current_layout(gpu, instances),
            desired=wanted,
            status=status,
            reason=reason,
            steps=steps,
            holders=holders,
        )

    if wanted is None:
        return plan("unmanaged", "not in mig_layout: left as it is")
    steps = steps_between(instances, gpu.mig_enabled, wanted)
    if not steps and not wanted.dynamic:
        return plan("unchanged", "already as desired")
    problem = _problem(gpu, wanted, offered)
    if problem is None and table is not None and wanted.mig:
        placed = place(table, wanted.profiles)
        if isinstance(placed, NoFit):
            problem = f"the instances do not fit the GPU's placement rules: {placed.reason}"
        else:
            steps = steps_between(instances, gpu.mig_enabled, wanted, placed)
    if problem is None and wanted.dynamic and gpu.mig_enabled:
        return plan(
            "unchanged",
            "MIG on demand: ds01d makes and destroys instances as requests come and go",
        )
    if problem is not None:
        return plan("invalid", problem)
    devices = [gpu.uuid, *(d.uuid for d in instances)]
    holders = tuple(sorted({f"{held[u].user}/{held[u].name}" for u in devices if u in held}))
    if holders:
        return plan(
            "held",
            f"in use by {', '.join(holders)}: not changed while a container holds one of "
            "its devices (stop and remove it, or wait)",
            steps,
            holders,
        )
    return plan("apply", "no container holds it: can be applied", steps)


__all__ = [
    "GpuPlan",
    "Layout",
    "MigStep",
    "PlanStatus",
    "current_layout",
    "plan_mig",
    "steps_between",
]
