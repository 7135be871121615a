"""GPUs as the NVIDIA driver reports them, through NVML (``pynvml`` from nvidia-ml-py).

``pynvml`` is imported, and ``nvmlInit`` called, on first use under a lock, so importing
this module costs nothing and works on machines without the package or a driver. Without a
driver the backend reports an empty inventory with a message saying what to do.

What is read (Command line equivalents in brackets):

- physical GPUs: UUID, name, total memory, MIG mode (``nvidia-smi -q``); a GPU that does
  not support MIG counts as MIG off;
- MIG devices: every slot up to ``nvmlDeviceGetMaxMigDeviceCount``, skipping empty slots,
  which may be anywhere (``nvidia-smi -L``); per device its UUID, GPU-instance id, compute
  slices and memory (``nvmlDeviceGetAttributes``);
- MIG profile names come from the GPU's own GPU-instance profile table
  (``nvidia-smi mig -lgip``) when NVML gives it, else from
  :func:`~ds01.gpu.nvml_mig.mig_profile_name`;
- strings come as ``str`` or, from older bindings, ``bytes``; both read as text;
- a GPU's total compute slices is the largest slice count in that table, else 7
  (A100/H100).

No device node is reported: on a real host devices reach containers through the NVIDIA
Container Toolkit by UUID.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ds01.config.gpu_config import GpuConfig
from ds01.errors import SystemFault
from ds01.gpu.backend import (
    DeviceTelemetry,
    GpuBackend,
    GpuProcess,
    MigApplied,
    whole_gpu_device,
)
from ds01.gpu.nvml_mig import (
    apply_steps,
    create_one,
    destroy_one,
    gpu_instance_profiles,
    handle_by_uuid,
    mig_profile_name,
    offered_profiles,
    placement_table,
    profile_name,
    text,
)
from ds01.model.device import DEFAULT_TOTAL_SLICES, Device, Inventory, PhysicalGpu
from ds01.model.mig_placement import MigPlacementTable
from ds01.model.units import MIB

if TYPE_CHECKING:
    from ds01.model.mig import MigStep

log = logging.getLogger(__name__)


def _no_gpus_message(situation: str, remedy: str) -> str:
    return (
        f"{situation}: no GPUs to allocate. {remedy}, or set `backend: simulated` in "
        "gpu-config.yaml."
    )


class _NvmlUnavailable(Exception):
    """NVML cannot start for an expected reason (no package, library or driver)."""


@dataclass(frozen=True)
class _GpuInstanceProfile:
    """One row of a GPU's GPU-instance profile table."""

    name: str | None
    slices: int


class NvmlBackend(GpuBackend):
    """Inventory and telemetry from NVML (see the module docstring for what is read).

    NVML is initialised on the first query and shut down by :meth:`close`; a later query
    initialises it again. When the driver is missing, every query tries again, so a
    driver loaded after the daemon started is picked up without a restart.
    """

    name = "nvml"

    def __init__(self, config: GpuConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._nvml: ModuleType | None = None
        self._missing_functions_logged: set[str] = set()

    def inventory(self) -> Inventory:
        """Physical GPUs and their devices (memory in MiB).

        No package, library or driver, or zero GPUs, give an empty inventory with a
        message. A GPU that NVML cannot read is left out and named in the message.

        Raises:
            ds01.errors.SystemFault: NVML failed to start for another reason (e.g.
                driver/library version mismatch) or could not count the GPUs.
        """
        try:
            nvml = self._started_nvml()
        except _NvmlUnavailable as unavailable:
            return self._make_inventory(notes=[str(unavailable)])
        try:
            gpu_count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            raise SystemFault(f"NVML could not count the GPUs: {exc}") from exc
        if gpu_count == 0:
            no_gpus = _no_gpus_message(
                "NVML found no NVIDIA GPU on this machine", "Check `nvidia-smi -L`"
            )
            return self._make_inventory(notes=[no_gpus])
        gpus: list[PhysicalGpu] = []
        devices: list[Device] = []
        notes: list[str] = []
        for index in range(gpu_count):
            try:
                gpu, gpu_devices, gpu_notes = self._read_gpu(nvml, index)
            except nvml.NVMLError as exc:
                log.warning("NVML could not read GPU %d: %s", index, exc)
                notes.append(f"GPU {index} could not be read (NVML: {exc}); it is not offered.")
                continue
            gpus.append(gpu)
            devices.extend(gpu_devices)
            notes.extend(gpu_notes)
        return self._make_inventory(gpus, devices, notes)

    def utilization(self, uuids: Collection[str]) -> dict[str, DeviceTelemetry]:
        """Utilisation (percent), memory used and total (MiB), compute process count,
        power (W, ``nvmlDeviceGetPowerUsage`` in mW) and energy since the driver was
        loaded (J, ``nvmlDeviceGetTotalEnergyConsumption`` in mJ).

        Utilisation, power and energy are ``None`` on MIG devices (NVML does not support
        them there; power and energy are not even asked): a GPU in MIG mode gives them
        under its own UUID. Any other value NVML cannot give is ``None`` too. UUIDs NVML
        does not know are left out; without a driver the result is empty.

        Raises:
            ds01.errors.SystemFault: NVML failed to start for an unexpected reason.
        """
        try:
            nvml = self._started_nvml()
        except _NvmlUnavailable:
            return {}
        telemetry: dict[str, DeviceTelemetry] = {}
        for device_uuid in uuids:
            try:
                handle = handle_by_uuid(nvml, device_uuid)
            except (nvml.NVMLError_NotFound, nvml.NVMLError_InvalidArgument):
                continue
            except nvml.NVMLError as exc:
                log.warning("NVML could not find device %s: %s", device_uuid, exc)
                telemetry[device_uuid] = DeviceTelemetry()
                continue
            rates = self._query(nvml, "nvmlDeviceGetUtilizationRates", handle)
            memory = self._query(nvml, "nvmlDeviceGetMemoryInfo", handle)
            processes = self._query(nvml, "nvmlDeviceGetComputeRunningProcesses", handle)
            board = not device_uuid.startswith("MIG-")
            power_mw = self._query(nvml, "nvmlDeviceGetPowerUsage", handle) if board else None
            energy_mj = (
                self._query(nvml, "nvmlDeviceGetTotalEnergyConsumption", handle) if board else None
            )
            telemetry[device_uuid] = DeviceTelemetry(
                gpu_util_percent=None if rates is None else float(rates.gpu),
                memory_used_mib=None if memory is None else int(memory.used) // MIB,
                memory_total_mib=None if memory is None else int(memory.total) // MIB,
                process_count=None if processes is None else len(processes),
                power_watts=None if power_mw is None else int(power_mw) / 1000,
                energy_joules=None if energy_mj is None else int(energy_mj) / 1000,
            )
        return telemetry

    def driver_versions(self) -> dict[str, str]:
        """``nvmlSystemGetDriverVersion``, ``nvmlSystemGetNVMLVersion`` and the CUDA version
        the driver supports (``nvmlSystemGetCudaDriverVersion``, 12040 → ``12.4``); those
        NVML cannot give are left out."""
        try:
            nvml = self._started_nvml()
        except _NvmlUnavailable:
            return {}
        versions: dict[str, str] = {}
        for key, query in (
            ("driver", "nvmlSystemGetDriverVersion"),
            ("nvml", "nvmlSystemGetNVMLVersion"),
        ):
            value = self._query(nvml, query)
            if value is not None:
                versions[key] = value.decode() if isinstance(value, bytes) else str(value)
        cuda = self._query(nvml, "nvmlSystemGetCudaDriverVersion")
        if isinstance(cuda, int) and cuda > 0:
            versions["cuda"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        return versions

    def processes(self) -> list[GpuProcess] | None:
        """The compute and graphics processes on every device of the inventory (whole
        GPUs and MIG instances: ``nvmlDeviceGetComputeRunningProcesses``,
        ``nvmlDeviceGetGraphicsRunningProcesses``), host pids; ``None`` without a driver.
        A device or list that cannot be read contributes nothing."""
        try:
            nvml = self._started_nvml()
        except _NvmlUnavailable:
            return None
        found: dict[tuple[str, int], GpuProcess] = {}
        for device in self.inventory().devices:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(device.uuid)
            except nvml.NVMLError:
                continue
            for query in (
                "nvmlDeviceGetComputeRunningProcesses",
                "nvmlDeviceGetGraphicsRunningProcesses",
            ):
                for process in self._query(nvml, query, handle) or ():
                    pid = int(process.pid)
                    found.setdefault((device.uuid, pid), GpuProcess(device.uuid, pid))
        return list(found.values())

    def close(self) -> None:
        """Shut NVML down if this backend started it; idempotent."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
            if nvml is None:
                return
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError as exc:
                log.warning("nvmlShutdown failed: %s", exc)

    def mig_profiles(self, gpu: PhysicalGpu) -> tuple[str, ...] | None:
        """The MIG profiles of ``gpu``'s GPU-instance profile table (``nvidia-smi mig
        -lgip``); ``None`` when it cannot be read (no driver, MIG unsupported or off)."""
        try:
            nvml = self._started_nvml()
            handle = handle_by_uuid(nvml, gpu.uuid)
        except _NvmlUnavailable:
            return None
        except Exception as exc:  # observation: an unreadable table is "not known"
            log.warning("NVML could not read the MIG profiles of GPU %d: %s", gpu.index, exc)
            return None
        return offered_profiles(nvml, handle)

    def mig_placements(self, gpu: PhysicalGpu) -> MigPlacementTable | None:
        """The placements the driver gives for ``gpu``'s profiles (``nvidia-smi mig
        -lgipp``), else (MIG off, an older driver) the known table of its board."""
        try:
            nvml = self._started_nvml()
            handle = handle_by_uuid(nvml, gpu.uuid)
        except _NvmlUnavailable:
            return super().mig_placements(gpu)
        except Exception as exc:  # observation: fall back to the board's known table
            log.warning("NVML could not read the MIG placements of GPU %d: %s", gpu.index, exc)
            return super().mig_placements(gpu)
        return placement_table(nvml, handle) or super().mig_placements(gpu)

    def apply_mig(self, gpu: PhysicalGpu, steps: Sequence[MigStep]) -> MigApplied:
        """Change ``gpu``'s MIG layout through NVML (see :mod:`ds01.gpu.nvml_mig`).

        Raises:
            ds01.errors.SystemFault: NVML is not available, or a step failed (the message
                says which, and what was done before it).
        """
        nvml, handle = self._gpu_handle(gpu)
        return apply_steps(nvml, handle, gpu.index, steps)

    def _gpu_handle(self, gpu: PhysicalGpu) -> tuple[ModuleType, Any]:
        """NVML and ``gpu``'s handle, for a change to it.

        Raises:
            ds01.errors.SystemFault: NVML is not available or does not find ``gpu``.
        """
        try:
            nvml = self._started_nvml()
        except _NvmlUnavailable as unavailable:
            raise SystemFault(str(unavailable)) from unavailable
        try:
            return nvml, handle_by_uuid(nvml, gpu.uuid)
        except nvml.NVMLError as exc:
            raise SystemFault(f"NVML cannot find GPU {gpu.index} ({gpu.uuid}): {exc}") from exc

    def create_mig_instance(self, gpu: PhysicalGpu, profile: str, start: int) -> Device:
        """Make one instance through NVML at ``start`` (see :mod:`ds01.gpu.nvml_mig`)."""
        nvml, handle = self._gpu_handle(gpu)
        instance_id = create_one(nvml, handle, gpu.index, profile, start)
        made = [
            d
            for d in self.inventory().devices
            if d.gpu_uuid == gpu.uuid and d.instance_id == instance_id
        ]
        if not made:
            raise SystemFault(
                f"GPU {gpu.index}: NVML made GPU instance {instance_id} ({profile}) but lists "
                "no MIG device for it"
            )
        return made[0]

    def destroy_mig_instance(self, gpu: PhysicalGpu, device_uuid: str) -> None:
        """Destroy one instance through NVML; ``DeviceInUse`` while a process runs on it."""
        device = self.inventory().by_uuid().get(device_uuid)
        if device is None or device.instance_id is None or device.gpu_uuid != gpu.uuid:
            raise SystemFault(f"GPU {gpu.index} has no MIG instance {device_uuid}")
        nvml, handle = self._gpu_handle(gpu)
        destroy_one(nvml, handle, gpu.index, device.instance_id)

    def _started_nvml(self) -> ModuleType:
        """``pynvml`` after a successful ``nvmlInit``.

        Raises:
            _NvmlUnavailable: no nvidia-ml-py, no NVML library or no kernel driver; the
                message is meant for the admin.
            ds01.errors.SystemFault: ``nvmlInit`` failed for any other reason.
        """
        with self._lock:
            if self._nvml is not None:
                return self._nvml
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                raise _NvmlUnavailable(
                    _no_gpus_message(
                        "NVML is not available (the nvidia-ml-py package is not installed)",
                        "Install nvidia-ml-py",
                    )
                ) from exc
            try:
                nvml.nvmlInit()
            except nvml.NVMLError_LibraryNotFound as exc:
                raise _NvmlUnavailable(
                    _no_gpus_message(
                        "No NVIDIA driver found (NVML library not found)",
                        "Install the NVIDIA driver",
                    )
                ) from exc
            except nvml.NVMLError_DriverNotLoaded as exc:
                raise _NvmlUnavailable(
                    _no_gpus_message(
                        "No NVIDIA driver found (NVIDIA kernel module not loaded)",
                        "Load it (`modprobe nvidia`) or reboot",
                    )
                ) from exc
            except nvml.NVMLError_LibRmVersionMismatch as exc:
                raise SystemFault(
                    f"NVML could not start ({exc}): the NVIDIA driver was updated but the "
                    "old kernel module is still loaded. Reboot, or reload the nvidia modules."
                ) from exc
            except nvml.NVMLError as exc:
                raise SystemFault(
                    f"NVML could not start ({exc}). Check that `nvidia-smi` works."
                ) from exc
            self._nvml = nvml
            return nvml

    def _query(self, nvml: ModuleType, function_name: str, *args: Any) -> Any:
        """``pynvml.<function_name>(*args)``, or ``None`` when NVML cannot give the value.

        For optional values only. Any ``NVMLError`` (not supported, no permission, …)
        gives ``None``; so do a function the binding or the driver lacks and
        ``NVMLLibraryMismatchError`` (not an ``NVMLError``) from the unversioned process
        queries, which are logged once per function: they mean bindings newer than the
        driver.
        """
        function = getattr(nvml, function_name, None)
        if function is None:
            self._log_missing_function_once(function_name, "not in this nvidia-ml-py")
            return None
        try:
            return function(*args)
        except (nvml.NVMLError_FunctionNotFound, nvml.NVMLLibraryMismatchError) as exc:
            self._log_missing_function_once(function_name, f"bindings newer than driver: {exc}")
            return None
        except nvml.NVMLError:
            return None

    def _log_missing_function_once(self, function_name: str, reason: str) -> None:
        if function_name not in self._missing_functions_logged:
            self._missing_functions_logged.add(function_name)
            log.warning(
                "NVML cannot run %s (%s); its values read as unavailable", function_name, reason
            )

    def _read_gpu(
        self, nvml: ModuleType, index: int
    ) -> tuple[PhysicalGpu, list[Device], list[str]]:
        """GPU ``index``, its devices, and notes for the inventory message.

        Raises:
            pynvml.NVMLError: a required value could not be read.
        """
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        mig_mode = self._mig_mode(nvml, handle)
        profiles = {} if mig_mode is None else self._gpu_instance_profiles(nvml, handle)
        gpu = PhysicalGpu(
            index=index,
            uuid=text(nvml.nvmlDeviceGetUUID(handle)),
            model=text(nvml.nvmlDeviceGetName(handle)),
            memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
            mig_enabled=mig_mode is not None and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE,
            total_slices=max((p.slices for p in profiles.values()), default=DEFAULT_TOTAL_SLICES),
        )
        notes: list[str] = []
        if mig_mode is not None and mig_mode[0] != mig_mode[1]:
            pending = "on" if mig_mode[1] == nvml.NVML_DEVICE_MIG_ENABLE else "off"
            notes.append(f"GPU {index}: MIG mode turns {pending} only after a GPU reset.")
        if not gpu.mig_enabled:
            return gpu, [whole_gpu_device(gpu)], notes
        return gpu, list(self._mig_devices(nvml, handle, gpu, profiles)), notes

    @staticmethod
    def _mig_mode(nvml: ModuleType, handle: Any) -> tuple[int, int] | None:
        """``(current, pending)`` MIG mode, or ``None`` on a GPU without MIG support."""
        try:
            current, pending = nvml.nvmlDeviceGetMigMode(handle)
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            return None
        return int(current), int(pending)

    def _gpu_instance_profiles(
        self, nvml: ModuleType, handle: Any
    ) -> dict[int, _GpuInstanceProfile]:
        """The GPU's GPU-instance profile table by profile id; ``{}`` if unreadable."""
        try:
            return {
                int(info.id): _GpuInstanceProfile(
                    name=profile_name(info), slices=int(info.sliceCount)
                )
                for info in gpu_instance_profiles(nvml, handle)
            }
        except nvml.NVMLError as exc:
            log.warning("NVML could not read a GPU's MIG profile table: %s", exc)
            return {}

    def _mig_devices(
        self,
        nvml: ModuleType,
        handle: Any,
        gpu: PhysicalGpu,
        profiles: dict[int, _GpuInstanceProfile],
    ) -> Iterator[Device]:
        """The MIG devices of ``gpu``; empty slots are skipped wherever they are."""
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError_NotFound:
                continue
            attributes = nvml.nvmlDeviceGetAttributes(mig_handle)
            instance_slices = int(attributes.gpuInstanceSliceCount)
            compute_slices = int(attributes.computeInstanceSliceCount) or instance_slices
            memory_mib = int(attributes.memorySizeMB)
            instance_id = int(nvml.nvmlDeviceGetGpuInstanceId(mig_handle))
            name, start = self._instance_profile(nvml, handle, instance_id, profiles)
            profile = name or mig_profile_name(instance_slices, memory_mib)
            if compute_slices < instance_slices:
                # A compute instance using part of its GPU instance: "1c.3g.20gb".
                profile = f"{compute_slices}c.{profile}"
            yield gpu.device(
                text(nvml.nvmlDeviceGetUUID(mig_handle)),
                "mig",
                memory_mib=memory_mib,
                profile=profile,
                slices=compute_slices,
                instance_id=instance_id,
                start=start,
            )

    def _instance_profile(
        self,
        nvml: ModuleType,
        handle: Any,
        instance_id: int,
        profiles: dict[int, _GpuInstanceProfile],
    ) -> tuple[str | None, int | None]:
        """NVML's name of GPU instance ``instance_id``'s profile and the memory slice it
        begins at, each ``None`` if unreadable."""
        gpu_instance = self._query(nvml, "nvmlDeviceGetGpuInstanceById", handle, instance_id)
        if gpu_instance is None:
            return None, None
        info = self._query(nvml, "nvmlGpuInstanceGetInfo", gpu_instance)
        if info is None:
            return None, None
        profile = profiles.get(int(info.profileId))
        placement = getattr(info, "placement", None)
        start = None if placement is None else int(placement.start)
        return (None if profile is None else profile.name), start
