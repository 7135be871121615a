"""The NVML backend against the real nvidia-ml-py with a model of the driver behind it
(``tests/nvml_driver.py``), one fixture per hardware situation; one test also runs the real
nvidia-ml-py on this machine, which has no NVIDIA driver."""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import threading
from fractions import Fraction

import pynvml
import pytest

from ds01.config.gpu_config import GpuConfig
from ds01.errors import SystemFault
from ds01.gpu.backend import DeviceTelemetry
from ds01.gpu.nvml import NvmlBackend, mig_profile_name
from nvml_driver import (
    A100_SXM4_40GB,
    A100_SXM4_80GB,
    H100_SXM5_80GB,
    RTX_A6000,
    Board,
    GiProfile,
    Gpu,
    NvmlDriver,
    install,
)


def _backend(**config: object) -> NvmlBackend:
    return NvmlBackend(GpuConfig(backend="nvml", **config))  # type: ignore[arg-type]


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> NvmlDriver:
    """A driver with no GPU yet, loaded by the real pynvml."""
    made = NvmlDriver()
    install(monkeypatch, made)
    return made


@pytest.fixture
def mixed(driver: NvmlDriver) -> list[Gpu]:
    """GPU 0 A100 MIG off and busy, GPU 1 A100 split 3g+2g+1g+1g, GPU 2 without MIG."""
    whole = driver.gpu(utilization_percent=37, memory_used_mib=1024, processes=1)
    split = driver.gpu(mig=True)
    three, *_ = driver.split(split, ("3g.20gb", 4), ("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3))
    three.processes, three.memory_used_mib = 2, 512
    return [whole, split, driver.gpu(RTX_A6000)]


def _mig_uuids(gpu: Gpu) -> list[str]:
    return [compute.uuid for _, compute in gpu.mig_devices()]


# --- no driver ----------------------------------------------------------------------------


def test_no_driver_gives_empty_inventory_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)

    inventory = _backend(reserved=["GPU-x"]).inventory()

    assert inventory.backend == "nvml"
    assert (inventory.gpus, inventory.devices) == ((), ())
    assert inventory.reserved == frozenset({"GPU-x"})
    assert inventory.message == (
        "No NVIDIA driver found (NVML library not found): no GPUs to allocate. "
        "Install the NVIDIA driver, or set `backend: simulated` in gpu-config.yaml."
    )
    assert _backend().utilization(["GPU-x"]) == {}


def test_kernel_module_not_loaded_says_so(driver: NvmlDriver) -> None:
    driver.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    message = _backend().inventory().message

    assert message is not None
    assert message.startswith("No NVIDIA driver found (NVIDIA kernel module not loaded)")
    assert "modprobe nvidia" in message


def test_driver_loaded_later_is_picked_up_without_restart(driver: NvmlDriver) -> None:
    driver.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    backend = _backend()
    assert backend.inventory().devices == ()

    driver.init_error = None
    late = driver.gpu()

    assert [d.uuid for d in backend.inventory().devices] == [late.uuid]


def test_missing_nvidia_ml_py_gives_empty_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail

    inventory = _backend().inventory()

    assert inventory.devices == ()
    assert inventory.message is not None
    assert "nvidia-ml-py" in inventory.message


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "Reboot"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "nvidia-smi"),
    ],
)
def test_other_init_failures_are_system_faults(driver: NvmlDriver, code: int, hint: str) -> None:
    driver.init_error = code

    with pytest.raises(SystemFault, match=hint):
        _backend().inventory()


def test_zero_gpus_with_a_driver_gives_empty_inventory_with_a_message(driver: NvmlDriver) -> None:
    inventory = _backend().inventory()

    assert inventory.devices == ()
    assert inventory.message is not None
    assert "found no NVIDIA GPU" in inventory.message


# --- A100 with mixed MIG --------------------------------------------------------------------


def test_a100_mixed_mig_lists_whole_gpus_and_mig_instances(mixed: list[Gpu]) -> None:
    whole, split, a6000 = mixed
    inventory = _backend().inventory()

    assert [(g.index, g.uuid, g.mig_enabled) for g in inventory.gpus] == [
        (0, whole.uuid, False),
        (1, split.uuid, True),
        (2, a6000.uuid, False),
    ]
    ids = [gi.id for gi in split.instances]
    three, two, one_a, one_b = _mig_uuids(split)
    assert [(d.uuid, d.kind, d.gpu_index, d.profile, d.instance_id) for d in inventory.devices] == [
        (whole.uuid, "gpu", 0, None, None),
        (three, "mig", 1, "3g.20gb", ids[0]),
        (two, "mig", 1, "2g.10gb", ids[1]),
        (one_a, "mig", 1, "1g.5gb", ids[2]),
        (one_b, "mig", 1, "1g.5gb", ids[3]),
        (a6000.uuid, "gpu", 2, None, None),
    ]
    assert inventory.message is None


def test_a100_mixed_mig_counts_gpu_equivalents_exactly(mixed: list[Gpu]) -> None:
    inventory = _backend().inventory()

    assert inventory.total_gpu_equivalents == Fraction(3)
    assert [d.gpu_equivalents for d in inventory.devices if d.kind == "mig"] == [
        Fraction(3, 7),
        Fraction(2, 7),
        Fraction(1, 7),
        Fraction(1, 7),
    ]


def test_a100_mixed_mig_reports_memory_in_mib_and_slices(mixed: list[Gpu]) -> None:
    devices = _backend().inventory().devices

    assert [d.memory_mib for d in devices] == [40960, 20096, 9856, 4864, 4864, 49140]
    assert [d.slices for d in devices] == [7, 3, 2, 1, 1, 7]
    assert {d.total_slices for d in devices} == {7}
    assert {d.model for d in devices[:5]} == {A100_SXM4_40GB.name}
    assert {d.gpu_uuid for d in devices[1:5]} == {mixed[1].uuid}
    assert {d.device_node for d in devices} == {None}


@pytest.mark.parametrize(
    ("board", "profiles"),
    [
        (A100_SXM4_80GB, ["3g.40gb", "1g.20gb", "1g.10gb"]),
        (H100_SXM5_80GB, ["3g.40gb", "1g.20gb", "1g.10gb"]),
    ],
)
def test_80gb_boards_name_their_profiles_from_the_drivers_table(
    driver: NvmlDriver, board: Board, profiles: list[str]
) -> None:
    gpu = driver.gpu(board, mig=True)
    driver.split(gpu, ("3g.40gb", 4), ("1g.20gb", 0))
    driver.split(gpu, "1g.10gb")  # the driver's own placement: no start given

    inventory = _backend().inventory()

    assert [d.profile for d in inventory.devices] == profiles
    assert inventory.gpus[0].model == board.name


def test_profile_names_fall_back_to_memory_rounded_up_when_nvml_hides_the_table(
    driver: NvmlDriver, mixed: list[Gpu]
) -> None:
    driver.fail["nvmlDeviceGetGpuInstanceById"] = pynvml.NVML_ERROR_NO_PERMISSION

    devices = _backend().inventory().devices

    assert [d.profile for d in devices if d.kind == "mig"] == [
        "3g.20gb",
        "2g.10gb",
        "1g.5gb",
        "1g.5gb",
    ]


def test_total_slices_default_to_seven_when_the_profile_table_is_unreadable(
    driver: NvmlDriver, mixed: list[Gpu]
) -> None:
    driver.fail["nvmlDeviceGetGpuInstanceProfileInfoV"] = pynvml.NVML_ERROR_NO_PERMISSION

    inventory = _backend().inventory()

    assert inventory.gpus[1].total_slices == 7
    assert inventory.devices[1].profile == "3g.20gb"


A30 = Board(
    "NVIDIA A30",
    24576,
    (
        GiProfile(0, 14, "1g.6gb", 1, 4, 5836, 1, (0, 1, 2, 3)),
        GiProfile(1, 5, "2g.12gb", 2, 2, 11968, 2, (0, 2)),
        GiProfile(3, 0, "4g.24gb", 4, 1, 24192, 4, (0,)),
    ),
)


def test_total_slices_come_from_the_largest_profile(driver: NvmlDriver) -> None:
    gpu = driver.gpu(A30, mig=True)
    driver.split(gpu, "2g.12gb")

    inventory = _backend().inventory()

    assert inventory.gpus[0].total_slices == 4
    assert inventory.devices[0].profile == "2g.12gb"
    assert inventory.devices[0].gpu_equivalents == Fraction(1, 2)


def test_compute_instances_sharing_a_gpu_instance_count_their_own_slices(
    driver: NvmlDriver,
) -> None:
    gpu = driver.gpu(mig=True)
    shared = driver.gpu_instance_without_compute(gpu, "3g.20gb")
    for _ in range(3):
        driver.add_compute(gpu, shared, slices=1)

    inventory = _backend().inventory()

    assert [d.profile for d in inventory.devices] == ["1c.3g.20gb"] * 3
    assert inventory.total_gpu_equivalents == Fraction(3, 7)


def test_reserved_devices_come_from_config(mixed: list[Gpu]) -> None:
    two = _mig_uuids(mixed[1])[1]

    inventory = _backend(reserved=[two]).inventory()

    assert inventory.reserved == frozenset({two})
    assert two in inventory.by_uuid()


def test_a_lost_gpu_is_left_out_and_named_in_the_message(mixed: list[Gpu]) -> None:
    mixed[0].lost = True

    inventory = _backend().inventory()

    assert [g.index for g in inventory.gpus] == [1, 2]
    assert mixed[0].uuid not in inventory.by_uuid()
    assert inventory.message == "GPU 0 could not be read (NVML: GPU is lost); it is not offered."


def test_pending_mig_mode_change_is_noted(mixed: list[Gpu]) -> None:
    mixed[0].pending_mig = True

    inventory = _backend().inventory()

    assert inventory.gpus[0].mig_enabled is False
    assert inventory.devices[0].uuid == mixed[0].uuid
    assert inventory.message == "GPU 0: MIG mode turns on only after a GPU reset."


# --- MIG edge cases -------------------------------------------------------------------------


def test_mig_enabled_without_instances_lists_the_gpu_and_offers_nothing(
    driver: NvmlDriver,
) -> None:
    gpu = driver.gpu(mig=True)

    inventory = _backend().inventory()

    assert [(g.uuid, g.mig_enabled) for g in inventory.gpus] == [(gpu.uuid, True)]
    assert inventory.devices == ()
    assert inventory.unusable_gpus() == inventory.gpus
    assert inventory.message is not None
    assert "GPU 0 has MIG on and no MIG instance" in inventory.message


def test_sparse_mig_slots_are_all_found(driver: NvmlDriver) -> None:
    gpu = driver.gpu(mig=True)
    first, second, third = driver.split(gpu, ("3g.20gb", 4), ("1g.5gb", 0), ("1g.5gb", 1))
    gpu.instances[1].compute.clear()  # slot 1 destroyed: slots 0 and 2 remain
    gpu.instances.pop(1)

    devices = _backend().inventory().devices

    assert [(d.uuid, d.profile) for d in devices] == [
        (first.uuid, "3g.20gb"),
        (third.uuid, "1g.5gb"),
    ]
    assert second.slot == 1


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


def test_telemetry_of_whole_gpus_and_mig_instances(mixed: list[Gpu]) -> None:
    three = _mig_uuids(mixed[1])[0]

    telemetry = _backend().utilization([mixed[0].uuid, three, "GPU-unknown"])

    assert telemetry == {
        mixed[0].uuid: DeviceTelemetry(37.0, 1024, 40960, 1),
        # NVML reports no utilisation on MIG devices.
        three: DeviceTelemetry(None, 512, 20096, 2),
    }


def test_processes_of_every_device_by_host_pid(mixed: list[Gpu]) -> None:
    # The model answers no graphics query (a function this driver lacks): compute alone.
    whole, split, _ = mixed
    three = _mig_uuids(split)[0]

    found = _backend().processes()

    assert found is not None
    assert sorted((p.device_uuid, p.pid) for p in found) == [
        (whole.uuid, 1000),
        (three, 1000),
        (three, 1001),
    ]


def test_no_driver_no_process_list(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)

    assert _backend().processes() is None
    assert _backend().driver_versions() == {}


def test_driver_versions_as_nvml_gives_them(driver: NvmlDriver) -> None:
    driver.missing.add("nvmlSystemGetNVMLVersion")  # left out when the driver lacks it

    assert _backend().driver_versions() == {"driver": "550.54.15", "cuda": "12.4"}


def test_power_and_energy_of_boards_in_watts_and_joules(mixed: list[Gpu]) -> None:
    whole, split, _ = mixed
    whole.power_mw, whole.energy_mj = 251_500, 3_600_000_123
    split.power_mw, split.energy_mj = 90_000, 1_000
    three = _mig_uuids(split)[0]

    telemetry = _backend().utilization([whole.uuid, split.uuid, three])

    assert telemetry[whole.uuid].power_watts == 251.5
    assert telemetry[whole.uuid].energy_joules == 3_600_000.123
    # A GPU in MIG mode reports the board's power and energy under its own UUID ...
    assert telemetry[split.uuid].power_watts == 90.0
    assert telemetry[split.uuid].energy_joules == 1.0
    # ... and no utilisation; its instances report neither: NVML measures boards.
    assert telemetry[split.uuid].gpu_util_percent is None
    assert telemetry[three].power_watts is None
    assert telemetry[three].energy_joules is None


def test_power_and_energy_are_not_asked_of_mig_instances(
    driver: NvmlDriver, mixed: list[Gpu]
) -> None:
    _backend().utilization(_mig_uuids(mixed[1])[:2])

    assert "nvmlDeviceGetPowerUsage" not in driver.calls
    assert "nvmlDeviceGetTotalEnergyConsumption" not in driver.calls


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION])
def test_unreadable_power_and_energy_read_as_unavailable_not_zero(
    driver: NvmlDriver, mixed: list[Gpu], code: int
) -> None:
    mixed[0].power_mw, mixed[0].energy_mj = 100_000, 5_000
    driver.fail["nvmlDeviceGetPowerUsage"] = code
    driver.fail["nvmlDeviceGetTotalEnergyConsumption"] = code

    telemetry = _backend().utilization([mixed[0].uuid])[mixed[0].uuid]

    assert (telemetry.power_watts, telemetry.energy_joules) == (None, None)
    assert telemetry.gpu_util_percent == 37.0  # the rest is still read


def test_bindings_without_the_energy_query_read_it_as_unavailable(
    mixed: list[Gpu], monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed[0].power_mw, mixed[0].energy_mj = 100_000, 5_000
    monkeypatch.delattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption")

    telemetry = _backend().utilization([mixed[0].uuid])[mixed[0].uuid]

    assert (telemetry.power_watts, telemetry.energy_joules) == (100.0, None)


def test_a_driver_older_than_the_process_query_reads_it_as_unavailable_and_logs_once(
    driver: NvmlDriver, mixed: list[Gpu], caplog: pytest.LogCaptureFixture
) -> None:
    driver.missing.add("nvmlDeviceGetComputeRunningProcesses_v3")
    backend = _backend()

    with caplog.at_level(logging.WARNING, logger="ds01.gpu.nvml"):
        first = backend.utilization([mixed[0].uuid])
        backend.utilization([mixed[0].uuid])

    assert first == {mixed[0].uuid: DeviceTelemetry(37.0, 1024, 40960, None)}
    assert (
        len([r for r in caplog.records if "nvmlDeviceGetComputeRunningProcesses" in r.getMessage()])
        == 1
    )


def test_telemetry_of_an_unreadable_device_is_all_unavailable(
    driver: NvmlDriver, mixed: list[Gpu]
) -> None:
    driver.fail["nvmlDeviceGetHandleByUUID"] = pynvml.NVML_ERROR_GPU_IS_LOST

    assert _backend().utilization([mixed[0].uuid]) == {mixed[0].uuid: DeviceTelemetry()}


# --- lifecycle -------------------------------------------------------------------------------


def test_nvml_starts_once_under_concurrent_queries_and_close_shuts_it_down(
    driver: NvmlDriver, mixed: list[Gpu]
) -> None:
    backend = _backend()
    threads = [threading.Thread(target=backend.inventory) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert driver.init_calls == 1
    backend.close()
    backend.close()
    assert driver.shutdown_calls == 1

    assert len(backend.inventory().devices) == 6
    assert driver.init_calls == 2


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


def test_real_nvidia_ml_py_reports_the_driver_as_it_is_here() -> None:
    # Runs on every machine: without a driver (CI) the backend says so and lists nothing;
    # with one, it never claims the driver is missing.
    driver = _nvidia_driver_present()
    with NvmlBackend(GpuConfig(backend="nvml")) as backend:
        inventory = backend.inventory()

    missing = "No NVIDIA driver found (NVML library not found)"
    if driver:
        assert not (inventory.message or "").startswith(missing), inventory.message
    else:
        assert inventory.devices == ()
        assert inventory.message is not None
        assert inventory.message.startswith(missing)
