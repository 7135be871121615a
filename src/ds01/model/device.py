"""The GPU inventory as plain, immutable data.

A *device* is what ds01 allocates: a whole GPU (MIG mode off) or one MIG instance. Devices
are always addressed by UUID (``GPU-…`` or ``MIG-…``), never by index, because indices
change when MIG layouts or drivers change.

Quotas count *GPU-equivalents*: a whole GPU is 1, a MIG instance is its
compute slices over its GPU's total slices (3g.20gb on an A100 = 3/7). They are kept as
``fractions.Fraction`` so that sums are exact (3/7 + 2/7 + 1/7 + 1/7 == 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

DeviceKind = Literal["gpu", "mig"]


#: Compute slices of an A100/H100; used when nothing better is known.
DEFAULT_TOTAL_SLICES = 7


@dataclass(frozen=True)
class Device:
    """One allocatable device.

    Attributes:
        uuid: ``GPU-<uuid>`` for a whole GPU, ``MIG-<uuid>`` for a MIG instance.
        kind: ``"gpu"`` or ``"mig"``.
        gpu_index: index of the physical GPU (as NVML numbers them).
        gpu_uuid: UUID of the physical GPU (equal to ``uuid`` for a whole GPU).
        model: product name, e.g. ``"NVIDIA A100-SXM4-40GB"``.
        memory_mib: memory usable by the device, in MiB.
        profile: MIG profile (``"3g.20gb"``) or ``None`` for a whole GPU.
        slices: compute slices of a MIG instance (the ``3`` of ``3g.20gb``); for a whole
            GPU, its total slices.
        total_slices: compute slices of the physical GPU (7 on A100/H100).
        instance_id: MIG GPU-instance id, ``None`` for a whole GPU.
        device_node: host device node that a container gets with ``--device`` (simulated
            backend only; ``None`` when devices go through the NVIDIA toolkit).
        start: the memory slice a MIG instance begins at (``ds01.model.mig_placement``);
            ``None`` for a whole GPU, or when the backend cannot tell.
    """

    uuid: str
    kind: DeviceKind
    gpu_index: int
    gpu_uuid: str
    model: str
    memory_mib: int
    profile: str | None = None
    slices: int = 7
    total_slices: int = DEFAULT_TOTAL_SLICES
    instance_id: int | None = None
    device_node: str | None = None
    start: int | None = None

    @property
    def gpu_equivalents(self) -> Fraction:
        """Share of a whole GPU this device counts for in quotas (1 for a whole GPU)."""
        if self.kind == "gpu":
            return Fraction(1)
        return Fraction(self.slices, self.total_slices)

    @property
    def label(self) -> str:
        """Short human name: ``"2"`` for GPU 2, ``"3:1g.5gb#4"`` for a MIG instance."""
        if self.kind == "gpu":
            return str(self.gpu_index)
        return f"{self.gpu_index}:{self.profile}#{self.instance_id}"


@dataclass(frozen=True)
class PhysicalGpu:
    """One physical GPU, whether or not it is itself allocatable.

    Attributes:
        index: NVML index.
        uuid: ``GPU-<uuid>``.
        model: product name.
        memory_mib: total memory in MiB.
        mig_enabled: MIG mode currently on. A GPU with MIG on and no instances offers no
            device at all: CUDA cannot use it, so it is *unusable*, not free.
        total_slices: compute slices (7 on A100/H100; meaningful when MIG is on).
        device_node: simulated ``/dev/nvidiaN`` stand-in, if configured.
    """

    index: int
    uuid: str
    model: str
    memory_mib: int
    mig_enabled: bool = False
    total_slices: int = DEFAULT_TOTAL_SLICES
    device_node: str | None = None

    def device(
        self,
        uuid: str,
        kind: DeviceKind,
        *,
        memory_mib: int,
        slices: int,
        profile: str | None = None,
        instance_id: int | None = None,
        device_node: str | None = None,
        start: int | None = None,
    ) -> Device:
        """A device on this GPU: its own ``uuid``, ``kind``, memory, slices and (a MIG
        instance's) profile, instance id and start; this GPU's index, UUID, model and total
        slices."""
        return Device(
            uuid=uuid,
            kind=kind,
            gpu_index=self.index,
            gpu_uuid=self.uuid,
            model=self.model,
            memory_mib=memory_mib,
            profile=profile,
            slices=slices,
            total_slices=self.total_slices,
            instance_id=instance_id,
            device_node=device_node,
            start=start,
        )


@dataclass(frozen=True)
class Inventory:
    """Everything a backend found: physical GPUs and the devices they offer.

    ``message`` explains an empty or degraded inventory (e.g. "no NVIDIA driver").
    """

    backend: str
    gpus: tuple[PhysicalGpu, ...] = ()
    devices: tuple[Device, ...] = ()
    message: str | None = None
    reserved: frozenset[str] = field(default_factory=frozenset)

    def by_uuid(self) -> dict[str, Device]:
        return {d.uuid: d for d in self.devices}

    @property
    def total_gpu_equivalents(self) -> Fraction:
        return sum((d.gpu_equivalents for d in self.devices), Fraction(0))

    def unusable_gpus(self) -> tuple[PhysicalGpu, ...]:
        """GPUs in MIG mode without any instance: present, but nothing can run on them."""
        with_instances = {d.gpu_uuid for d in self.devices if d.kind == "mig"}
        return tuple(g for g in self.gpus if g.mig_enabled and g.uuid not in with_instances)
