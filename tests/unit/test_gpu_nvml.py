"""The NVML backend against a fake ``pynvml`` module, one fixture per hardware situation.

The fake implements the handful of NVML calls the backend makes, with the exception
classes and the failure modes of the real nvidia-ml-py (see reference/peers.md §5). One
test also runs the real nvidia-ml-py on this machine, which has no NVIDIA driver.
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from ds01.config.gpu_config import GpuConfig
from ds01.errors import SystemFault
from ds01.gpu.backend import DeviceTelemetry
from ds01.gpu.nvml import NvmlBackend, mig_profile_name

MIB = 1024 * 1024
A100 = "NVIDIA A100-SXM4-40GB"
MIG_ON = (1, 1)
MIG_OFF = (0, 0)

# --- a fake pynvml ------------------------------------------------------------------------


class FakeNVMLError(Exception):
    """Like pynvml.NVMLError: one subclass per NVML return code."""

    value = 999

    def __str__(self) -> str:
        return type(self).__name__.removeprefix("NVMLError_")


def _nvml_error(name: str, code: int) -> type[FakeNVMLError]:
    return type(f"NVMLError_{name}", (FakeNVMLError,), {"value": code})


class FakeNVMLLibraryMismatchError(Exception):
    """Like pynvml's: raised by unversioned process queries, and not an NVMLError."""


# A100-40GB GPU-instance profile table: profile index -> (profile id, name, slices).
A100_PROFILES: dict[int, tuple[int, bytes, int]] = {
    0: (19, b"MIG 1g.5gb", 1),
    1: (14, b"MIG 2g.10gb", 2),
    2: (9, b"MIG 3g.20gb", 3),
    3: (5, b"MIG 4g.20gb", 4),
    4: (0, b"MIG 7g.40gb", 7),
    7: (20, b"MIG 1g.5gb+me", 1),
    9: (15, b"MIG 1g.10gb", 1),
}


@dataclass
class FakeMig:
    uuid: str
    gpu_instance_id: int
    profile_id: int
    slices: int
    memory_mib: int
    compute_slices: int | None = None
    memory_used_mib: int = 0
    process_count: int = 0


@dataclass
class FakeGpu:
    uuid: str
    name: str = A100
    memory_mib: int = 40960
    mig_mode: tuple[int, int] | None = MIG_OFF  # None: MIG not supported
    mig_slots: dict[int, FakeMig] = field(default_factory=dict)
    max_mig_devices: int = 7
    profiles: dict[int, tuple[int, bytes, int]] = field(default_factory=lambda: A100_PROFILES)
    utilization_percent: int = 0
    memory_used_mib: int = 0
    process_count: int = 0
    lost: bool = False  # fell off the bus: every query fails with GpuIsLost
    power_mw: int | None = None  # None: NotSupported (as on boards without the sensor)
    energy_mj: int | None = None  # None: NotSupported (pre-Volta)


def _a100_mig(uuid_suffix: str, gpu_instance_id: int, profile: str, **kwargs: Any) -> FakeMig:
    """An A100-40GB MIG device with the profile id, slices and memory NVML reports for it
    (memory in MiB, below the size in the profile name)."""
    profile_id, slices, memory_mib = {
        "1g.5gb": (19, 1, 4864),
        "2g.10gb": (14, 2, 9856),
        "3g.20gb": (9, 3, 20096),
        "7g.40gb": (0, 7, 40192),
    }[profile]
    return FakeMig(f"MIG-{uuid_suffix}", gpu_instance_id, profile_id, slices, memory_mib, **kwargs)


class FakePynvml(ModuleType):
    """Stands in for the ``pynvml`` module in ``sys.modules``."""

    NVMLError = FakeNVMLError
    NVMLLibraryMismatchError = FakeNVMLLibraryMismatchError
    NVMLError_InvalidArgument = _nvml_error("InvalidArgument", 2)
    NVMLError_NotSupported = _nvml_error("NotSupported", 3)
    NVMLError_NoPermission = _nvml_error("NoPermission", 4)
    NVMLError_NotFound = _nvml_error("NotFound", 6)
    NVMLError_DriverNotLoaded = _nvml_error("DriverNotLoaded", 9)
    NVMLError_LibraryNotFound = _nvml_error("LibraryNotFound", 12)
    NVMLError_FunctionNotFound = _nvml_error("FunctionNotFound", 13)
    NVMLError_GpuIsLost = _nvml_error("GpuIsLost", 15)
    NVMLError_LibRmVersionMismatch = _nvml_error("LibRmVersionMismatch", 18)
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12

    def __init__(self, gpus: list[FakeGpu], init_error: type[FakeNVMLError] | None = None) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0

    # lifecycle
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error()

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    # physical GPUs
    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu | FakeMig:
        for gpu in self.gpus:
            handles: list[FakeGpu | FakeMig] = [gpu, *gpu.mig_slots.values()]
            for handle in handles:
                if handle.uuid == uuid:
                    return handle
        raise self.NVMLError_NotFound()

    def nvmlDeviceGetUUID(self, handle: FakeGpu | FakeMig) -> str:
        self._check_not_lost(handle)
        return handle.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu | FakeMig) -> SimpleNamespace:
        total, used = handle.memory_mib * MIB, handle.memory_used_mib * MIB
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        if gpu.mig_mode is None:
            raise self.NVMLError_NotSupported()
        return list(gpu.mig_mode)

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, gpu: FakeGpu, profile_index: int, version: int = 2
    ) -> SimpleNamespace:
        if profile_index not in gpu.profiles:
            raise self.NVMLError_NotSupported()
        profile_id, name, slices = gpu.profiles[profile_index]
        return SimpleNamespace(id=profile_id, name=name, sliceCount=slices)

    # MIG devices
    def nvmlDeviceGetMaxMigDeviceCount(self, gpu: FakeGpu) -> int:
        return gpu.max_mig_devices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu: FakeGpu, slot: int) -> FakeMig:
        if slot not in gpu.mig_slots:
            raise self.NVMLError_NotFound()
        return gpu.mig_slots[slot]

    def nvmlDeviceGetAttributes(self, mig: FakeMig) -> SimpleNamespace:
        return SimpleNamespace(
            gpuInstanceSliceCount=mig.slices,
            computeInstanceSliceCount=mig.compute_slices or mig.slices,
            memorySizeMB=mig.memory_mib,
        )

    def nvmlDeviceGetGpuInstanceId(self, mig: FakeMig) -> int:
        return mig.gpu_instance_id

    def nvmlDeviceGetGpuInstanceById(self, gpu: FakeGpu, gpu_instance_id: int) -> FakeMig:
        for mig in gpu.mig_slots.values():
            if mig.gpu_instance_id == gpu_instance_id:
                return mig
        raise self.NVMLError_NotFound()

    def nvmlGpuInstanceGetInfo(self, gpu_instance: FakeMig) -> SimpleNamespace:
        return SimpleNamespace(id=gpu_instance.gpu_instance_id, profileId=gpu_instance.profile_id)

    # telemetry
    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu | FakeMig) -> SimpleNamespace:
        if isinstance(handle, FakeMig):
            raise self.NVMLError_NotSupported()
        return SimpleNamespace(gpu=handle.utilization_percent, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu | FakeMig) -> list[Any]:
        return [
            SimpleNamespace(pid=1000 + n, usedGpuMemory=None) for n in range(handle.process_count)
        ]

    # power (milliwatts) and energy (millijoules since the driver loaded): boards only
    power_calls: int = 0

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu | FakeMig) -> int:
        self.power_calls += 1
        if isinstance(handle, FakeMig) or handle.power_mw is None:
            raise self.NVMLError_NotSupported()
        return handle.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu | FakeMig) -> int:
        if isinstance(handle, FakeMig) or handle.energy_mj is None:
            raise self.NVMLError_NotSupported()
        return handle.energy_mj

    def _check_not_lost(self, handle: FakeGpu | FakeMig) -> None:
        if isinstance(handle, FakeGpu) and handle.lost:
            raise self.NVMLError_GpuIsLost()


def _install(monkeypatch: pytest.MonkeyPatch, fake: FakePynvml) -> FakePynvml:
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def _backend(**config: Any) -> NvmlBackend:
    return NvmlBackend(GpuConfig(backend="nvml", **config))


# --- scenarios ----------------------------------------------------------------------------


@pytest.fixture
def _scenario_no_driver(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    """nvidia-ml-py installed, libnvidia-ml.so.1 absent: nvmlInit raises LibraryNotFound."""
    return _install(monkeypatch, FakePynvml([], init_error=FakePynvml.NVMLError_LibraryNotFound))


@pytest.fixture
def _scenario_a100_mixed_mig(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    """GPU 0 A100 MIG off, GPU 1 A100 split 3g+2g+1g+1g, GPU 2 without MIG support."""
    split = {
        0: _a100_mig("3g", 2, "3g.20gb", memory_used_mib=512, process_count=2),
        1: _a100_mig("2g", 3, "2g.10gb"),
        2: _a100_mig("1g-a", 9, "1g.5gb"),
        3: _a100_mig("1g-b", 10, "1g.5gb"),
    }
    return _install(
        monkeypatch,
        FakePynvml(
            [
                FakeGpu(
                    "GPU-a100-whole", utilization_percent=37, memory_used_mib=1024, process_count=1
                ),
                FakeGpu("GPU-a100-split", mig_mode=MIG_ON, mig_slots=split),
                FakeGpu(
                    "GPU-a6000",
                    name="NVIDIA RTX A6000",
                    memory_mib=49140,
                    mig_mode=None,
                    profiles={},
                ),
            ]
        ),
    )


@pytest.fixture
def _scenario_mig_enabled_no_instances(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    """MIG mode turned on, but nobody created GPU instances: the GPU cannot run anything."""
    return _install(monkeypatch, FakePynvml([FakeGpu("GPU-empty-mig", mig_mode=MIG_ON)]))


@pytest.fixture
def _scenario_sparse_mig_indices(monkeypatch: pytest.MonkeyPatch) -> FakePynvml:
    """Instances in MIG slots 1 and 5 only (others destroyed): empty slots come first."""
    slots = {1: _a100_mig("slot1", 1, "3g.20gb"), 5: _a100_mig("slot5", 13, "1g.5gb")}
    return _install(
        monkeypatch, FakePynvml([FakeGpu("GPU-sparse", mig_mode=MIG_ON, mig_slots=slots)])
    )


# --- no driver ----------------------------------------------------------------------------


def test_no_driver_gives_empty_inventory_with_a_message(_scenario_no_driver: FakePynvml) -> None:
    inventory = _backend(reserved=["GPU-x"]).inventory()

    assert inventory.backend == "nvml"
    assert inventory.gpus == ()
    assert inventory.devices == ()
    assert inventory.reserved == frozenset({"GPU-x"})
    assert inventory.message == (
        "No NVIDIA driver found (NVML library not found): no GPUs to allocate. "
        "Install the NVIDIA driver, or set `backend: simulated` in gpu-config.yaml."
    )


def test_kernel_module_not_loaded_says_so(_scenario_no_driver: FakePynvml) -> None:
    _scenario_no_driver.init_error = FakePynvml.NVMLError_DriverNotLoaded

    message = _backend().inventory().message

    assert message is not None
    assert message.startswith("No NVIDIA driver found (NVIDIA kernel module not loaded)")
    assert "modprobe nvidia" in message


def test_no_driver_telemetry_is_empty(_scenario_no_driver: FakePynvml) -> None:
    assert _backend().utilization(["GPU-a100-whole"]) == {}


def test_driver_loaded_later_is_picked_up_without_restart(_scenario_no_driver: FakePynvml) -> None:
    backend = _backend()
    assert backend.inventory().devices == ()

    _scenario_no_driver.init_error = None
    _scenario_no_driver.gpus.append(FakeGpu("GPU-late"))

    assert [d.uuid for d in backend.inventory().devices] == ["GPU-late"]


def test_missing_nvidia_ml_py_gives_empty_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail

    inventory = _backend().inventory()

    assert inventory.devices == ()
    assert inventory.message is not None
    assert "nvidia-ml-py" in inventory.message


@pytest.mark.parametrize(
    ("init_error", "hint"),
    [("NVMLError_LibRmVersionMismatch", "Reboot"), ("NVMLError_NoPermission", "nvidia-smi")],
)
def test_other_init_failures_are_system_faults(
    _scenario_no_driver: FakePynvml, init_error: str, hint: str
) -> None:
    _scenario_no_driver.init_error = getattr(FakePynvml, init_error)

    with pytest.raises(SystemFault, match=hint):
        _backend().inventory()


def test_zero_gpus_with_a_driver_gives_empty_inventory_with_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _install(monkeypatch, FakePynvml([]))

    inventory = _backend().inventory()

    assert inventory.devices == ()
    assert inventory.message is not None
    assert "found no NVIDIA GPU" in inventory.message


# --- A100 with mixed MIG --------------------------------------------------------------------


def test_a100_mixed_mig_lists_whole_gpus_and_mig_instances(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    inventory = _backend().inventory()

    assert [(g.index, g.uuid, g.mig_enabled) for g in inventory.gpus] == [
        (0, "GPU-a100-whole", False),
        (1, "GPU-a100-split", True),
        (2, "GPU-a6000", False),
    ]
    assert [(d.uuid, d.kind, d.gpu_index, d.profile, d.instance_id) for d in inventory.devices] == [
        ("GPU-a100-whole", "gpu", 0, None, None),
        ("MIG-3g", "mig", 1, "3g.20gb", 2),
        ("MIG-2g", "mig", 1, "2g.10gb", 3),
        ("MIG-1g-a", "mig", 1, "1g.5gb", 9),
        ("MIG-1g-b", "mig", 1, "1g.5gb", 10),
        ("GPU-a6000", "gpu", 2, None, None),
    ]
    assert inventory.message is None


def test_a100_mixed_mig_counts_gpu_equivalents_exactly(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    inventory = _backend().inventory()

    assert inventory.total_gpu_equivalents == Fraction(3)
    assert [d.gpu_equivalents for d in inventory.devices if d.kind == "mig"] == [
        Fraction(3, 7),
        Fraction(2, 7),
        Fraction(1, 7),
        Fraction(1, 7),
    ]


def test_a100_mixed_mig_reports_memory_in_mib_and_slices(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    devices = _backend().inventory().devices

    assert [d.memory_mib for d in devices] == [40960, 20096, 9856, 4864, 4864, 49140]
    assert [d.slices for d in devices] == [7, 3, 2, 1, 1, 7]
    assert {d.total_slices for d in devices} == {7}
    assert {d.model for d in devices[:5]} == {A100}
    assert {d.gpu_uuid for d in devices[1:5]} == {"GPU-a100-split"}
    assert {d.device_node for d in devices} == {None}


def test_profile_names_fall_back_to_memory_rounded_up_when_nvml_hides_the_table(
    _scenario_a100_mixed_mig: FakePynvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_permission(*_: object) -> None:
        raise FakePynvml.NVMLError_NoPermission()

    monkeypatch.setattr(_scenario_a100_mixed_mig, "nvmlDeviceGetGpuInstanceById", no_permission)

    devices = _backend().inventory().devices

    assert [d.profile for d in devices if d.kind == "mig"] == [
        "3g.20gb",
        "2g.10gb",
        "1g.5gb",
        "1g.5gb",
    ]


def test_total_slices_default_to_seven_when_the_profile_table_is_unreadable(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    _scenario_a100_mixed_mig.gpus[1].profiles = {}

    inventory = _backend().inventory()

    assert inventory.gpus[1].total_slices == 7
    assert inventory.devices[1].profile == "3g.20gb"


def test_total_slices_come_from_the_largest_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    a30_profiles = {0: (14, b"MIG 1g.6gb", 1), 1: (5, b"MIG 2g.12gb", 2), 3: (0, b"MIG 4g.24gb", 4)}
    half = FakeMig("MIG-a30-half", 1, 5, 2, 11968)
    _install(
        monkeypatch,
        FakePynvml([FakeGpu("GPU-a30", "NVIDIA A30", 24576, MIG_ON, {0: half}, 4, a30_profiles)]),
    )

    inventory = _backend().inventory()

    assert inventory.gpus[0].total_slices == 4
    assert inventory.devices[0].profile == "2g.12gb"
    assert inventory.devices[0].gpu_equivalents == Fraction(1, 2)


def test_compute_instances_sharing_a_gpu_instance_count_their_own_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = {slot: _a100_mig(f"ci{slot}", 1, "3g.20gb", compute_slices=1) for slot in range(3)}
    _install(monkeypatch, FakePynvml([FakeGpu("GPU-ci", mig_mode=MIG_ON, mig_slots=shared)]))

    inventory = _backend().inventory()

    assert {d.profile for d in inventory.devices} == {"1c.3g.20gb"}
    assert inventory.total_gpu_equivalents == Fraction(3, 7)


def test_reserved_devices_come_from_config(_scenario_a100_mixed_mig: FakePynvml) -> None:
    inventory = _backend(reserved=["MIG-2g"]).inventory()

    assert inventory.reserved == frozenset({"MIG-2g"})
    assert "MIG-2g" in inventory.by_uuid()


def test_a_lost_gpu_is_left_out_and_named_in_the_message(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    _scenario_a100_mixed_mig.gpus[0].lost = True

    inventory = _backend().inventory()

    assert [g.index for g in inventory.gpus] == [1, 2]
    assert "GPU-a100-whole" not in inventory.by_uuid()
    assert inventory.message == "GPU 0 could not be read (NVML: GpuIsLost); it is not offered."


def test_pending_mig_mode_change_is_noted(_scenario_a100_mixed_mig: FakePynvml) -> None:
    _scenario_a100_mixed_mig.gpus[0].mig_mode = (0, 1)

    inventory = _backend().inventory()

    assert inventory.gpus[0].mig_enabled is False
    assert inventory.devices[0].uuid == "GPU-a100-whole"
    assert inventory.message == "GPU 0: MIG mode turns on only after a GPU reset."


# --- MIG edge cases -------------------------------------------------------------------------


def test_mig_enabled_without_instances_lists_the_gpu_and_offers_nothing(
    _scenario_mig_enabled_no_instances: FakePynvml,
) -> None:
    inventory = _backend().inventory()

    assert [(g.uuid, g.mig_enabled) for g in inventory.gpus] == [("GPU-empty-mig", True)]
    assert inventory.devices == ()
    assert inventory.unusable_gpus() == inventory.gpus
    assert inventory.message is not None
    assert "GPU 0 has MIG on and no MIG instance" in inventory.message


def test_sparse_mig_slots_are_all_found(_scenario_sparse_mig_indices: FakePynvml) -> None:
    devices = _backend().inventory().devices

    assert [(d.uuid, d.instance_id, d.profile) for d in devices] == [
        ("MIG-slot1", 1, "3g.20gb"),
        ("MIG-slot5", 13, "1g.5gb"),
    ]


@pytest.mark.parametrize(
    ("slices", "memory_mib", "name"),
    [
        (1, 4864, "1g.5gb"),
        (2, 9856, "2g.10gb"),
        (3, 20096, "3g.20gb"),
        (7, 40192, "7g.40gb"),
        (1, 9728, "1g.10gb"),
        (7, 81920, "7g.80gb"),
    ],
)
def test_mig_profile_name_rounds_memory_up_to_whole_gigabytes(
    slices: int, memory_mib: int, name: str
) -> None:
    assert mig_profile_name(slices, memory_mib) == name


# --- telemetry --------------------------------------------------------------------------------


def test_telemetry_of_whole_gpus_and_mig_instances(_scenario_a100_mixed_mig: FakePynvml) -> None:
    telemetry = _backend().utilization(["GPU-a100-whole", "MIG-3g", "GPU-unknown"])

    assert telemetry == {
        "GPU-a100-whole": DeviceTelemetry(37.0, 1024, 40960, 1),
        # NVML reports no utilisation on MIG devices.
        "MIG-3g": DeviceTelemetry(None, 512, 20096, 2),
    }


def test_processes_of_every_device_by_host_pid(_scenario_a100_mixed_mig: FakePynvml) -> None:
    # These bindings have no graphics query: the compute processes alone are listed.
    found = _backend().processes()

    assert found is not None
    assert sorted((p.device_uuid, p.pid) for p in found) == [
        ("GPU-a100-whole", 1000),
        ("MIG-3g", 1000),
        ("MIG-3g", 1001),
    ]


def test_no_driver_no_process_list(_scenario_no_driver: FakePynvml) -> None:
    assert _backend().processes() is None
    assert _backend().driver_versions() == {}


def test_driver_versions_as_nvml_gives_them(
    _scenario_a100_mixed_mig: FakePynvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _scenario_a100_mixed_mig, "nvmlSystemGetDriverVersion", lambda: b"550.54.15", raising=False
    )
    monkeypatch.setattr(
        _scenario_a100_mixed_mig, "nvmlSystemGetCudaDriverVersion", lambda: 12040, raising=False
    )
    # No NVML version query in these bindings: left out.
    assert _backend().driver_versions() == {"driver": "550.54.15", "cuda": "12.4"}


def test_power_and_energy_of_boards_in_watts_and_joules(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    whole, split, _ = _scenario_a100_mixed_mig.gpus
    whole.power_mw, whole.energy_mj = 251_500, 3_600_000_123
    split.power_mw, split.energy_mj = 90_000, 1_000

    telemetry = _backend().utilization(["GPU-a100-whole", "GPU-a100-split", "MIG-3g"])

    assert telemetry["GPU-a100-whole"].power_watts == 251.5
    assert telemetry["GPU-a100-whole"].energy_joules == 3_600_000.123
    # A GPU in MIG mode reports the board's power and energy under its own UUID ...
    assert telemetry["GPU-a100-split"].power_watts == 90.0
    assert telemetry["GPU-a100-split"].energy_joules == 1.0
    # ... and its instances report none: NVML measures boards, not instances.
    assert telemetry["MIG-3g"].power_watts is None
    assert telemetry["MIG-3g"].energy_joules is None


def test_power_and_energy_are_not_asked_of_mig_instances(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    _backend().utilization(["MIG-3g", "MIG-2g"])

    assert _scenario_a100_mixed_mig.power_calls == 0


@pytest.mark.parametrize("error", ["NVMLError_NotSupported", "NVMLError_NoPermission"])
def test_unreadable_power_and_energy_read_as_unavailable_not_zero(
    _scenario_a100_mixed_mig: FakePynvml, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    def refuse(*_: object) -> None:
        raise getattr(FakePynvml, error)()

    monkeypatch.setattr(_scenario_a100_mixed_mig, "nvmlDeviceGetPowerUsage", refuse)
    monkeypatch.setattr(_scenario_a100_mixed_mig, "nvmlDeviceGetTotalEnergyConsumption", refuse)

    telemetry = _backend().utilization(["GPU-a100-whole"])["GPU-a100-whole"]

    assert (telemetry.power_watts, telemetry.energy_joules) == (None, None)
    assert telemetry.gpu_util_percent == 37.0  # the rest is still read


def test_bindings_without_the_energy_query_read_it_as_unavailable(
    _scenario_a100_mixed_mig: FakePynvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scenario_a100_mixed_mig.gpus[0].power_mw = 100_000
    monkeypatch.delattr(FakePynvml, "nvmlDeviceGetTotalEnergyConsumption")

    telemetry = _backend().utilization(["GPU-a100-whole"])["GPU-a100-whole"]

    assert (telemetry.power_watts, telemetry.energy_joules) == (100.0, None)


def test_process_query_mismatch_reads_as_unavailable_and_is_logged_once(
    _scenario_a100_mixed_mig: FakePynvml,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def mismatch(*_: object) -> None:
        raise FakeNVMLLibraryMismatchError("Unversioned function called and the driver is too old")

    monkeypatch.setattr(_scenario_a100_mixed_mig, "nvmlDeviceGetComputeRunningProcesses", mismatch)
    backend = _backend()

    with caplog.at_level(logging.WARNING, logger="ds01.gpu.nvml"):
        first = backend.utilization(["GPU-a100-whole"])
        backend.utilization(["GPU-a100-whole"])

    assert first == {"GPU-a100-whole": DeviceTelemetry(37.0, 1024, 40960, None)}
    assert (
        len([r for r in caplog.records if "nvmlDeviceGetComputeRunningProcesses" in r.getMessage()])
        == 1
    )


def test_telemetry_of_an_unreadable_device_is_all_unavailable(
    _scenario_a100_mixed_mig: FakePynvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(*_: object) -> None:
        raise FakePynvml.NVMLError_GpuIsLost()

    monkeypatch.setattr(_scenario_a100_mixed_mig, "nvmlDeviceGetHandleByUUID", lost)

    assert _backend().utilization(["GPU-a100-whole"]) == {"GPU-a100-whole": DeviceTelemetry()}


# --- lifecycle -------------------------------------------------------------------------------


def test_nvml_starts_once_under_concurrent_queries_and_close_shuts_it_down(
    _scenario_a100_mixed_mig: FakePynvml,
) -> None:
    backend = _backend()
    threads = [threading.Thread(target=backend.inventory) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert _scenario_a100_mixed_mig.init_calls == 1
    backend.close()
    backend.close()
    assert _scenario_a100_mixed_mig.shutdown_calls == 1

    assert len(backend.inventory().devices) == 6
    assert _scenario_a100_mixed_mig.init_calls == 2


def test_importing_the_module_does_not_import_pynvml() -> None:
    code = "import sys, ds01.gpu.nvml, ds01.gpu.backend; assert 'pynvml' not in sys.modules"

    subprocess.run([sys.executable, "-c", code], check=True)


# --- the real nvidia-ml-py on this machine ---------------------------------------------------


def _nvidia_driver_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_nvidia_driver_present(), reason="an NVIDIA driver is installed here")
def test_real_nvidia_ml_py_without_driver_reports_no_gpus() -> None:
    with NvmlBackend(GpuConfig(backend="nvml")) as backend:
        inventory = backend.inventory()

    assert inventory.devices == ()
    assert inventory.message is not None
    assert inventory.message.startswith("No NVIDIA driver found (NVML library not found)")
