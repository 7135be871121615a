"""Simulated GPUs: the inventory comes from ``gpu-config.yaml``, telemetry from a JSON file.

This is the default backend on machines without GPUs, in tests and in demos. It behaves
like :mod:`ds01.gpu.nvml` on the same hardware would: devices are addressed by UUID, MIG
instances report no utilisation, a GPU with MIG on and no instances offers no device.

**UUIDs.** An explicit ``uuid`` in the configuration wins. Otherwise it is derived with
:func:`uuid.uuid5` from ``simulated.uuid_seed`` and the device's position (GPU index, and
the instance's position in ``mig_instances``), so UUIDs look real
(``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``, ``MIG-…``) and stay the same across daemon
restarts for as long as the seed and the layout do.

**Device nodes.** A GPU's ``device_node`` is its own ``device_node`` if configured, else
``<device_node_dir>/nvidia<index>`` if ``device_node_dir`` is set, else ``None``. The path
is reported whether or not it exists: creating the nodes (``mknod … c 195 N``) is up to
whoever sets up the test or demo, and a container create will fail loudly if one is
missing. MIG instances share their GPU's node.

**Telemetry.** :meth:`SimulatedBackend.utilization` reads ``telemetry_file`` on every call::

    {"GPU-…": {"gpu_util_percent": 37, "memory_used_mib": 1024, "process_count": 1,
               "power_watts": 250.5, "energy_joules": 123456.0}}

Each key is optional. A device or key that is missing reads as idle, as NVML would report
it: 0 % utilisation for a whole GPU and ``None`` for a MIG instance, 0 MiB used, 0
processes. Power and energy are not simulated unless the file gives them: missing, they
read as ``None`` ("not available"). ``energy_joules`` is the board's cumulative counter
since the driver was loaded: whoever writes the file makes it grow (or drop, to play a
driver reload). Like NVML, power and energy belong to boards: give them under a physical
GPU's UUID (for a GPU in MIG mode, the GPU's, not an instance's). :meth:`utilization`
accepts physical GPUs' UUIDs as well as devices'. An explicit ``null`` means "not
available". Write the file with :func:`write_simulated_telemetry`, which replaces it
atomically.

**Processes.** :meth:`SimulatedBackend.processes` reads ``process_file`` on every call: the
host pids using each device, as NVML would list them (``{"GPU-…": [1234, 5678]}``), so
tests can declare a process on a device (ds01d then finds its container through
``/proc/<pid>/cgroup``). Pids are not checked: whoever writes the file gives real ones.
UUIDs that are not devices of the inventory are left out. No file: no process. Write it
with :func:`write_simulated_processes`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ds01.config.gpu_config import (
    GpuConfig,
    SimulatedGpu,
    SimulatedMigInstance,
    mig_profile_device,
)
from ds01.errors import ConfigError, DeviceInUse, InvalidInput, SystemFault
from ds01.files import read_json_file, replace_file
from ds01.gpu.backend import (
    DeviceTelemetry,
    GpuBackend,
    GpuProcess,
    MigApplied,
    whole_gpu_device,
)
from ds01.gpu.mig_state import (
    SimulatedMigLayout,
    applied,
    read_mig_changes,
    resolved_starts,
    write_mig_changes,
)
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.mig import MigStep
from ds01.problem_log import ProblemLog

log = logging.getLogger(__name__)

SIMULATED_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "simulated-gpu.ds01")
"""Namespace of derived UUIDs. Changing it would change every simulated UUID."""


def simulated_gpu_uuid(seed: str, gpu_index: int) -> str:
    """Stable ``GPU-<uuid>`` of simulated GPU ``gpu_index`` (0-based) for ``seed``."""
    return f"GPU-{uuid.uuid5(SIMULATED_UUID_NAMESPACE, f'{seed}/gpu/{gpu_index}')}"


def simulated_mig_uuid(seed: str, gpu_index: int, position: int) -> str:
    """Stable ``MIG-<uuid>`` of the ``position``-th (0-based) MIG instance of a GPU."""
    name = f"{seed}/gpu/{gpu_index}/mig/{position}"
    return f"MIG-{uuid.uuid5(SIMULATED_UUID_NAMESPACE, name)}"


class SimulatedReading(BaseModel):
    """One device's entry in the telemetry file; a key left out reads as idle.

    Attributes:
        gpu_util_percent: utilisation in percent (0-100).
        memory_used_mib: device memory in use, in MiB.
        process_count: compute processes on the device.
        power_watts: power the board draws, in watts.
        energy_joules: the board's energy counter since the driver was loaded, in joules.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_util_percent: float | None = Field(default=None, ge=0, le=100)
    memory_used_mib: int | None = Field(default=None, ge=0)
    process_count: int | None = Field(default=None, ge=0)
    power_watts: float | None = Field(default=None, ge=0)
    energy_joules: float | None = Field(default=None, ge=0)


_READINGS_BY_UUID = TypeAdapter(dict[str, SimulatedReading])


def read_simulated_telemetry(path: Path) -> dict[str, SimulatedReading]:
    """The readings in ``path`` by device UUID; ``{}`` if the file does not exist. Raises
    what ``ds01.files.read_json_file`` raises (a file that cannot be read, or not of this
    shape)."""
    return read_json_file(path, _READINGS_BY_UUID, {})


def write_simulated_telemetry(
    path: Path, readings: Mapping[str, Mapping[str, float | int | None]]
) -> None:
    """Validate ``readings`` and replace ``path`` with them atomically.

    Args:
        path: the telemetry file; its directory is created if needed.
        readings: ``{uuid: {"gpu_util_percent": 37, "memory_used_mib": 1024,
            "process_count": 1, "power_watts": 250.5, "energy_joules": 123456.0}}``
            (percent, MiB, count, W, J); keys may be left out.

    Raises:
        pydantic.ValidationError: an unknown key or an out-of-range value (a ValueError).
    """
    validated = _READINGS_BY_UUID.validate_python(
        {device_uuid: dict(values) for device_uuid, values in readings.items()}
    )
    document = {
        device_uuid: reading.model_dump(exclude_unset=True)
        for device_uuid, reading in validated.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(document, indent=2, sort_keys=True), mode=0o600)


_PIDS_BY_UUID = TypeAdapter(dict[str, list[int]])


def write_simulated_processes(path: Path, pids: Mapping[str, Sequence[int]]) -> None:
    """Replace ``path`` atomically with the processes on each device (``{uuid: [pid, …]}``)."""
    document = _PIDS_BY_UUID.validate_python({u: list(p) for u, p in pids.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(document, indent=2, sort_keys=True), mode=0o600)


def idle_telemetry(device: Device | PhysicalGpu) -> DeviceTelemetry:
    """What NVML reports for an idle device or GPU: 0 %, 0 MiB used, 0 processes.

    Utilisation is ``None`` for a MIG instance and for a GPU in MIG mode: NVML does not
    report it there. Power and energy are ``None`` (not simulated unless the file says).
    """
    if isinstance(device, PhysicalGpu):
        reports_utilization = not device.mig_enabled
    else:
        reports_utilization = device.kind == "gpu"
    return DeviceTelemetry(
        gpu_util_percent=0.0 if reports_utilization else None,
        memory_used_mib=0,
        memory_total_mib=device.memory_mib,
        process_count=0,
    )


class SimulatedBackend(GpuBackend):
    """GPUs as ``config.simulated`` describes them (see the module docstring).

    The inventory is built at construction, from the configuration and the MIG changes
    in ``mig_file``, and again after each :meth:`apply_mig`, which alone changes it.

    Args:
        config: the parsed ``gpu-config.yaml``; ``config.simulated`` is used.
        telemetry_file: JSON file read by :meth:`utilization` on every call (usually
            ``<state-dir>/simulated-telemetry.json``); ``None``: all devices idle.
        mig_file: where :meth:`apply_mig` keeps its changes, read at construction (usually
            ``<state-dir>/simulated-mig.json``, see :mod:`ds01.gpu.mig_state`); ``None``:
            changes are kept in memory only.
        process_file: JSON file read by :meth:`processes` on every call (usually
            ``<state-dir>/simulated-processes.json``); ``None``: no process anywhere.

    Raises:
        ds01.errors.ConfigError: two simulated devices end up with the same UUID.
    """

    name = "simulated"

    def __init__(
        self,
        config: GpuConfig,
        *,
        telemetry_file: Path | None = None,
        mig_file: Path | None = None,
        process_file: Path | None = None,
    ) -> None:
        super().__init__(config)
        self.telemetry_file = telemetry_file
        self.mig_file = mig_file
        self.process_file = process_file
        self._telemetry_problem = ProblemLog(
            log,
            logging.WARNING,
            "simulated telemetry file %s ignored, all devices read as idle: %s",
        )
        self._mig_lock = threading.Lock()
        self._mig_changes = self._read_mig_changes()
        self._starts: dict[str, int | None] = {}  # MIG instance UUID -> its start
        self._inventory = self._build_inventory()

    def inventory(self) -> Inventory:
        """The configured GPUs and devices (memory in MiB, see ``Device``)."""
        return self._inventory

    def utilization(self, uuids: Collection[str]) -> dict[str, DeviceTelemetry]:
        """Telemetry of devices and physical GPUs from ``telemetry_file`` (percent, MiB,
        count, W, J), idle where unset.

        An unreadable or malformed file is logged once and read as "all idle".
        """
        devices: dict[str, Device | PhysicalGpu] = {g.uuid: g for g in self._inventory.gpus}
        devices.update(self._inventory.by_uuid())
        readings = self._read_telemetry_file()
        telemetry: dict[str, DeviceTelemetry] = {}
        for device_uuid in uuids:
            device = devices.get(device_uuid)
            if device is None:
                continue
            reading = readings.get(device_uuid)
            overrides = reading.model_dump(exclude_unset=True) if reading else {}
            telemetry[device_uuid] = dataclasses.replace(idle_telemetry(device), **overrides)
        return telemetry

    def processes(self) -> list[GpuProcess]:
        """The processes ``process_file`` declares on devices of the inventory; an
        unreadable or malformed file reads as none (and is logged)."""
        if self.process_file is None:
            return []
        try:
            declared = read_json_file(self.process_file, _PIDS_BY_UUID, {})
        except (OSError, ValidationError) as exc:
            log.warning("simulated process file %s ignored: %s", self.process_file, exc)
            return []
        devices = self._inventory.by_uuid()
        return [
            GpuProcess(device_uuid, pid)
            for device_uuid, pids in sorted(declared.items())
            if device_uuid in devices
            for pid in pids
        ]

    def _read_telemetry_file(self) -> dict[str, SimulatedReading]:
        if self.telemetry_file is None:
            return {}
        try:
            readings = read_simulated_telemetry(self.telemetry_file)
        except (OSError, ValidationError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            self._telemetry_problem.failed(problem, self.telemetry_file)
            return {}
        self._telemetry_problem.cleared()
        return readings

    def _build_inventory(self) -> Inventory:
        simulated = self.config.simulated
        gpus: list[PhysicalGpu] = []
        devices: list[Device] = []
        for index, configured in enumerate(simulated.gpus):
            gpu_uuid = configured.uuid or simulated_gpu_uuid(simulated.uuid_seed, index)
            changed = self._mig_changes.get(gpu_uuid)
            if changed is not None:  # `ds01 admin mig apply` changed it
                configured = changed.on(configured)
            gpu = PhysicalGpu(
                index=index,
                uuid=gpu_uuid,
                model=configured.model,
                memory_mib=configured.memory_mib,
                mig_enabled=configured.mig,
                total_slices=configured.total_slices,
                device_node=self._device_node(index, configured),
            )
            gpus.append(gpu)
            if not gpu.mig_enabled:
                devices.append(whole_gpu_device(gpu))
            table = self.mig_placements(gpu)
            starts = (
                [i.start for i in configured.mig_instances]
                if table is None
                else resolved_starts(table, configured.mig_instances)
            )
            for position, instance in enumerate(configured.mig_instances):
                mig_uuid = instance.uuid or simulated_mig_uuid(simulated.uuid_seed, index, position)
                self._starts[mig_uuid] = instance.start
                devices.append(
                    mig_profile_device(
                        gpu,
                        instance.profile,
                        mig_uuid,
                        start=starts[position],
                        # GPU-instance ids 1..n in configuration order.
                        instance_id=position + 1,
                        device_node=gpu.device_node,
                    )
                )
        _refuse_duplicate_uuids(gpus, devices)
        return self._make_inventory(gpus, devices)

    def apply_mig(self, gpu: PhysicalGpu, steps: Sequence[MigStep]) -> MigApplied:
        """Change a simulated GPU's layout at once (no reset needed) and keep the change in
        ``mig_file``. Instances are placed as on the real board where its placement table
        is known (:meth:`mig_placements`, see :mod:`ds01.gpu.mig_state`).

        Raises:
            ds01.errors.SystemFault: ``gpu`` is not one of these GPUs, a step is one a real
                GPU would refuse, or ``mig_file`` cannot be written; nothing is changed.
        """
        with self._mig_lock:
            inventory = self._inventory
            if gpu.uuid not in {g.uuid for g in inventory.gpus}:
                raise SystemFault(f"GPU {gpu.index} ({gpu.uuid}) is not a simulated GPU here.")
            current = SimulatedMigLayout(
                mig=gpu.mig_enabled,
                instances=tuple(
                    SimulatedMigInstance(
                        profile=d.profile or "", uuid=d.uuid, start=self._starts.get(d.uuid)
                    )
                    for d in inventory.devices
                    if d.kind == "mig" and d.gpu_uuid == gpu.uuid
                ),
            )
            try:
                layout = applied(current, steps, gpu.total_slices, self.mig_placements(gpu))
            except InvalidInput as exc:
                raise SystemFault(f"GPU {gpu.index}: {exc.message}") from exc
            changes = {**self._mig_changes, gpu.uuid: layout}
            if self.mig_file is not None:
                try:
                    write_mig_changes(self.mig_file, changes)
                except OSError as exc:
                    raise SystemFault(
                        f"cannot keep the MIG change in {self.mig_file}: {exc}"
                    ) from exc
            self._mig_changes = changes
            self._inventory = self._build_inventory()
        return MigApplied(done=tuple(step.describe() for step in steps))

    def create_mig_instance(self, gpu: PhysicalGpu, profile: str, start: int) -> Device:
        """Make one ``profile`` instance at memory slice ``start``, placed as on the real
        board (a taken place is refused as the driver refuses it).

        Raises:
            ds01.errors.SystemFault: the place is taken or ``gpu`` is not here.
        """
        before = {d.uuid for d in self._inventory.devices}
        self.apply_mig(gpu, [MigStep("create", profile, start=start)])
        return next(
            d
            for d in self._inventory.devices
            if d.gpu_uuid == gpu.uuid and d.kind == "mig" and d.uuid not in before
        )

    def destroy_mig_instance(self, gpu: PhysicalGpu, device_uuid: str) -> None:
        """Destroy one instance; refused, as NVML refuses it (``InUse``), while a process
        runs on it: the process file lists one, or the telemetry file gives it a
        ``process_count`` above 0.

        Raises:
            ds01.errors.DeviceInUse: a process runs on it.
            ds01.errors.SystemFault: there is no such instance on ``gpu``.
        """
        reading = self._read_telemetry_file().get(device_uuid)
        listed = sum(1 for p in self.processes() if p.device_uuid == device_uuid)
        running = max(listed, (reading.process_count or 0) if reading is not None else 0)
        if running:
            raise DeviceInUse(
                f"GPU {gpu.index}: MIG instance {device_uuid} cannot be destroyed: "
                f"{running} process(es) run on it (NVML: In use by another client)"
            )
        profile = next((d.profile for d in self._inventory.devices if d.uuid == device_uuid), None)
        self.apply_mig(gpu, [MigStep("destroy", profile, device_uuid)])

    def _read_mig_changes(self) -> dict[str, SimulatedMigLayout]:
        """The changes ``mig_file`` holds; a broken file is logged and ignored (the GPUs are
        then as configured)."""
        if self.mig_file is None:
            return {}
        try:
            return read_mig_changes(self.mig_file)
        except (OSError, ValidationError) as exc:
            log.error("simulated MIG changes in %s ignored: %s", self.mig_file, exc)
            return {}

    def _device_node(self, index: int, configured: SimulatedGpu) -> str | None:
        if configured.device_node:
            return configured.device_node
        node_dir = self.config.simulated.device_node_dir
        return str(Path(node_dir) / f"nvidia{index}") if node_dir else None


def _refuse_duplicate_uuids(gpus: list[PhysicalGpu], devices: list[Device]) -> None:
    seen: set[str] = set()
    for device_uuid in [g.uuid for g in gpus] + [d.uuid for d in devices if d.kind == "mig"]:
        if device_uuid in seen:
            raise ConfigError(
                f"gpu-config.yaml: simulated UUID {device_uuid} is used by two devices. "
                "Give every simulated GPU and MIG instance its own `uuid`, or leave "
                "`uuid` out to derive one from `uuid_seed`."
            )
        seen.add(device_uuid)
