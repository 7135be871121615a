"""The GPU backend interface: where the daemon's view of the GPUs comes from.

Two implementations exist:

- :class:`ds01.gpu.nvml.NvmlBackend` asks the NVIDIA driver through NVML (nvidia-ml-py).
- :class:`ds01.gpu.simulated.SimulatedBackend` builds the inventory from ``gpu-config.yaml``
  and is the default on machines without GPUs, in tests and in demos.

:func:`make_backend` picks one from the configuration.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

from ds01.config.gpu_config import GpuConfig
from ds01.errors import Ds01Error, SystemFault
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.mig_placement import MigPlacementTable, known_placement_table

if TYPE_CHECKING:
    from ds01.model.mig import MigStep


@dataclass(frozen=True)
class DeviceTelemetry:
    """What one device is doing right now. ``None`` means "not available", never zero.

    Attributes:
        gpu_util_percent: share of time a kernel ran over the last sample period, in percent
            (0-100). ``None`` on MIG instances: NVML does not report it there.
        memory_used_mib: device memory in use, in MiB.
        memory_total_mib: device memory in total, in MiB (a MIG instance's own share).
        process_count: compute processes running on the device (host PIDs, any user).
        power_watts: power the board draws now, in watts. A board-level figure: ``None`` on
            MIG instances (NVML does not measure them); ask for the physical GPU's UUID.
        energy_joules: energy the board has used since the driver was loaded, in joules, a
            counter that only grows until the driver is reloaded (then it starts again
            from 0). ``None`` on MIG instances, like ``power_watts``, and on GPUs older
            than Volta.
    """

    gpu_util_percent: float | None = None
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    process_count: int | None = None
    power_watts: float | None = None
    energy_joules: float | None = None


@dataclass(frozen=True)
class GpuProcess:
    """A process that uses a device (compute or graphics), as the driver lists it.

    Attributes:
        device_uuid: the device (a whole GPU's or a MIG instance's UUID).
        pid: the process id on the host (ds01d's pid namespace).
    """

    device_uuid: str
    pid: int


@dataclass(frozen=True)
class MigApplied:
    """What :meth:`GpuBackend.apply_mig` did to one GPU.

    Attributes:
        done: the steps carried out, described for people.
        pending_reset: a MIG mode change waits for a GPU reset; the steps after it were
            not carried out.
        message: what to do next, when something is left to do.
    """

    done: tuple[str, ...]
    pending_reset: bool = False
    message: str | None = None


class GpuBackend(abc.ABC):
    """Source of the GPU inventory and of per-device telemetry.

    Subclasses set :attr:`name` and override :meth:`inventory` and :meth:`utilization`;
    they override :meth:`close` when they hold resources. Everything else is shared.

    Contract:

    - :meth:`inventory` returns every physical GPU and every allocatable device (whole
      GPUs with MIG off, MIG instances of GPUs with MIG on) as an immutable
      :class:`~ds01.model.device.Inventory`, with ``reserved`` copied from the configuration
      (reserved UUIDs stay in ``devices``; the allocator skips them). A GPU with MIG on and
      no instances is listed in ``gpus``, offers no device, and is named in ``message``.
    - "No GPUs here" is a state, not an error: no driver, no NVML library or zero GPUs give
      an empty inventory whose ``message`` says why and what to do. A GPU that cannot be
      read is left out and named in ``message``. :class:`ds01.errors.SystemFault` is raised
      only for unexpected failures (NVML broken after it started, driver/library mismatch).
    - :meth:`utilization` is observation: it never raises for a device that cannot be
      read, it reports the values it could not read as ``None``. UUIDs the backend does
      not know (any more) are left out of the result. Like :meth:`inventory`, it raises
      :class:`ds01.errors.SystemFault` only when the backend as a whole fails. Besides
      devices it takes physical GPUs (``Inventory.gpus``): a GPU in MIG mode is not a
      device, but its UUID is where the board's power and energy are read.
    - Devices are addressed by UUID only (``GPU-…``, ``MIG-…``), never by index.
    - Both queries may be called from several threads at once and as often as the daemon
      loop likes; each call reflects the current state (nothing is cached across calls
      that could change between them, such as MIG layouts or telemetry).
    - :meth:`close` releases what the backend holds; it is idempotent, and a closed
      backend may be queried again (it reopens lazily). Backends are context managers.
    """

    name: ClassVar[str]
    """Backend name as written in ``gpu-config.yaml`` (``backend: …``) and ``Inventory.backend``."""

    def __init__(self, config: GpuConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def inventory(self) -> Inventory:
        """Physical GPUs and allocatable devices now (memory in MiB, see ``Device``).

        Raises:
            ds01.errors.SystemFault: the backend failed unexpectedly. Never raised for
                "no driver" or "no GPUs": those give an empty inventory with a message.
        """
        raise NotImplementedError("Override in subclass.")

    @abc.abstractmethod
    def utilization(self, uuids: Collection[str]) -> dict[str, DeviceTelemetry]:
        """Current telemetry of the given devices or physical GPUs, keyed by UUID.

        Units are those of :class:`DeviceTelemetry` (percent, MiB, process count, watts,
        joules). A UUID that is neither a device nor a GPU of the inventory is left out; a
        value that cannot be read is ``None`` (e.g. utilisation, power and energy of a MIG
        instance on NVML).

        Raises:
            ds01.errors.SystemFault: the backend as a whole failed unexpectedly.
        """
        raise NotImplementedError("Override in subclass.")

    def driver_versions(self) -> dict[str, str]:
        """The driver's versions it can tell (``driver``, ``nvml``, ``cuda``); ``{}`` when
        none (no driver, or GPUs that are not real). Default: ``{}``."""
        return {}

    def processes(self) -> list[GpuProcess] | None:
        """Every process using a device of :meth:`inventory` now (host pids), or ``None``
        when the backend cannot tell (no driver). Observation: a device that cannot be
        read contributes nothing. Default: ``None``."""
        return None

    def mig_profiles(self, gpu: PhysicalGpu) -> tuple[str, ...] | None:
        """The MIG instance profiles ``gpu`` can have (``"3g.20gb"``, …), or ``None`` when
        the backend cannot tell (any valid profile name is then taken). Default: ``None``."""
        return None

    def mig_placements(self, gpu: PhysicalGpu) -> MigPlacementTable | None:
        """Where ``gpu``'s MIG instances may sit (see :mod:`ds01.model.mig_placement`), or
        ``None`` when the backend cannot tell (plans then check compute slices only).
        Default: the known table of ``gpu``'s board, if it has as many compute slices."""
        table = known_placement_table(gpu.model, gpu.memory_mib)
        return table if table is not None and table.compute_slices == gpu.total_slices else None

    def apply_mig(self, gpu: PhysicalGpu, steps: Sequence[MigStep]) -> MigApplied:
        """Change ``gpu``'s MIG layout by ``steps`` (planned by ``ds01.core.mig``).

        The caller makes sure that no container holds any device of ``gpu`` and holds the
        allocation lock, so that none starts to. Afterwards :meth:`inventory` shows the new
        layout.

        Raises:
            ds01.errors.SystemFault: a step failed; the message says which, and what was
                done before it (the GPU may be half changed: plan again to see it).
        """
        raise SystemFault(f"The {self.name} GPU backend cannot change MIG layouts.")

    def create_mig_instance(self, gpu: PhysicalGpu, profile: str, start: int) -> Device:
        """Make one MIG instance of ``profile`` (a GPU instance and a compute instance that
        takes all of it) at memory slice ``start`` of ``gpu``, beside its other instances,
        which are left as they are; return the new device. The caller holds the allocation
        lock. Afterwards :meth:`inventory` lists it.

        Raises:
            ds01.errors.SystemFault: the driver refused (the place is taken, no such
                profile); nothing was made.
        """
        raise SystemFault(f"The {self.name} GPU backend cannot make MIG instances.")

    def destroy_mig_instance(self, gpu: PhysicalGpu, device_uuid: str) -> None:
        """Destroy the MIG instance ``device_uuid`` of ``gpu`` and nothing else. The caller
        makes sure no container holds it and holds the allocation lock.

        Raises:
            ds01.errors.DeviceInUse: a process still runs on it (NVML's ``InUse``): try
                again later.
            ds01.errors.SystemFault: the driver refused for another reason.
        """
        raise SystemFault(f"The {self.name} GPU backend cannot destroy MIG instances.")

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release driver handles or other resources; idempotent. Default: nothing to do."""

    def __enter__(self) -> GpuBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _make_inventory(
        self,
        gpus: Iterable[PhysicalGpu] = (),
        devices: Iterable[Device] = (),
        notes: Iterable[str] = (),
    ) -> Inventory:
        """An :class:`Inventory` of this backend, with ``reserved`` from the configuration.

        ``notes`` become the inventory's message, followed by one note per GPU that has
        MIG on and no instance; no notes, no message.
        """
        inventory = Inventory(
            backend=self.name,
            gpus=tuple(gpus),
            devices=tuple(devices),
            reserved=frozenset(self.config.reserved),
        )
        dynamic = self.config.dynamic_mig()
        all_notes = [*notes] + [
            f"GPU {gpu.index} has MIG on and no MIG instance: it is unusable until "
            "instances are created."
            for gpu in inventory.unusable_gpus()
            if gpu.index not in dynamic and gpu.uuid not in dynamic  # made on demand
        ]
        return dataclasses.replace(inventory, message=" ".join(all_notes) or None)


def whole_gpu_device(gpu: PhysicalGpu) -> Device:
    """The device that a GPU with MIG off offers: all of it (memory in MiB, all slices)."""
    return gpu.device(
        gpu.uuid,
        "gpu",
        memory_mib=gpu.memory_mib,
        slices=gpu.total_slices,
        device_node=gpu.device_node,
    )


def make_backend(
    config: GpuConfig,
    *,
    simulated_telemetry_file: Path | None = None,
    simulated_mig_file: Path | None = None,
    simulated_process_file: Path | None = None,
) -> GpuBackend:
    """The backend that ``config.backend`` names.

    Args:
        config: the parsed ``gpu-config.yaml``.
        simulated_telemetry_file: JSON file from which the simulated backend reads
            per-device telemetry (usually ``<state-dir>/simulated-telemetry.json``, see
            :mod:`ds01.gpu.simulated`); ignored by the NVML backend. ``None``: idle devices.
        simulated_mig_file: where the simulated backend keeps the MIG changes of ``ds01
            admin mig apply`` (usually ``<state-dir>/simulated-mig.json``, see
            :mod:`ds01.gpu.mig_state`); ignored by the NVML backend. ``None``: in memory.
        simulated_process_file: JSON file from which the simulated backend reads the
            processes on its devices (usually ``<state-dir>/simulated-processes.json``);
            ignored by the NVML backend. ``None``: no process anywhere.
    """
    if config.backend == "nvml":
        from ds01.gpu.nvml import NvmlBackend

        return NvmlBackend(config)
    from ds01.gpu.simulated import SimulatedBackend

    return SimulatedBackend(
        config,
        telemetry_file=simulated_telemetry_file,
        mig_file=simulated_mig_file,
        process_file=simulated_process_file,
    )


def device_telemetry(backend: GpuBackend, uuids: Collection[str]) -> dict[str, DeviceTelemetry]:
    """Telemetry of ``uuids`` in one backend call; ``{}`` when there are none or the backend
    fails (observation fails soft)."""
    if not uuids:
        return {}
    try:
        return backend.utilization(uuids)
    except Ds01Error:
        return {}
