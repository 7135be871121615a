"""MIG changes through NVML (``ds01 admin mig apply`` on real GPUs), against the real
nvidia-ml-py with a model of the driver behind it (``tests/nvml_driver.py``): GPU and
compute instances, placements, MIG mode switches (pending until a reset where the GPU needs
one), older drivers and older bindings."""

from __future__ import annotations

import pynvml
import pytest

from ds01.config.gpu_config import GpuConfig
from ds01.core.mig import Layout, plan_mig
from ds01.errors import DeviceInUse, SystemFault
from ds01.gpu.nvml import NvmlBackend
from ds01.model.mig import MigStep
from nvml_driver import A100_SXM4_40GB, H100_SXM5_80GB, Gpu, NvmlDriver, install


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> NvmlDriver:
    made = NvmlDriver()
    install(monkeypatch, made)
    return made


def backend() -> NvmlBackend:
    return NvmlBackend(GpuConfig(backend="nvml"))


def split_gpu(driver: NvmlDriver) -> Gpu:
    """An A100 split 3g+2g+1g, plus a GPU instance nobody gave a compute instance."""
    gpu = driver.gpu(mig=True)
    driver.split(gpu, ("3g.20gb", 4), ("2g.10gb", 0), ("1g.5gb", 2))
    driver.gpu_instance_without_compute(gpu, "1g.5gb")
    return gpu


def plan_for(nvml: NvmlBackend, layout: Layout) -> tuple[MigStep, ...]:
    inventory = nvml.inventory()
    offered = {g.index: nvml.mig_profiles(g) for g in inventory.gpus}
    tables = {g.index: nvml.mig_placements(g) for g in inventory.gpus}
    (plan,) = plan_mig(inventory, {0: layout}, {}, offered, tables)
    assert plan.status == "apply", plan.reason
    return plan.steps


def layout_of(gpu: Gpu) -> list[tuple[str, int]]:
    """What the driver has: (profile, start) of every GPU instance, by start."""
    return sorted(((gi.profile.name, gi.start) for gi in gpu.instances), key=lambda p: p[1])


def test_repartition_destroys_every_instance_orphans_included_and_creates_the_new_ones(
    driver: NvmlDriver,
) -> None:
    gpu = split_gpu(driver)
    nvml = backend()
    assert [d.profile for d in nvml.inventory().devices] == ["3g.20gb", "2g.10gb", "1g.5gb"]

    steps = plan_for(nvml, Layout.of(["4g.20gb", "3g.20gb"]))
    result = nvml.apply_mig(nvml.inventory().gpus[0], steps)

    assert not result.pending_reset
    assert result.done == tuple(s.describe() for s in steps)
    assert driver.calls.count("nvmlGpuInstanceDestroy") == 4  # the orphan too
    assert driver.calls.count("nvmlComputeInstanceDestroy") == 3
    assert layout_of(gpu) == [("4g.20gb", 0), ("3g.20gb", 4)]
    devices = nvml.inventory().devices
    assert [(d.kind, d.profile) for d in devices] == [("mig", "4g.20gb"), ("mig", "3g.20gb")]
    assert "nvmlDeviceSetMigMode" not in driver.calls  # MIG was on already


def test_turning_mig_on_waits_for_a_reset_when_the_gpu_needs_one(driver: NvmlDriver) -> None:
    gpu = driver.gpu(reset_needed=True)
    nvml = backend()
    steps = plan_for(nvml, Layout.of(["7g.40gb"]))
    assert [s.action for s in steps] == ["enable_mig", "create"]

    result = nvml.apply_mig(nvml.inventory().gpus[0], steps)

    assert result.pending_reset
    assert result.done == ("turn MIG mode on (pending)",)
    assert "nvidia-smi -r -i 0" in (result.message or "")
    assert "nvmlDeviceCreateGpuInstanceWithPlacement" not in driver.calls
    assert (gpu.mig, gpu.pending_mig) == (False, True)


def test_turning_mig_on_and_creating_when_no_reset_is_needed(driver: NvmlDriver) -> None:
    gpu = driver.gpu()
    nvml = backend()

    nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(["1g.5gb"] * 7)))

    inventory = nvml.inventory()
    assert inventory.gpus[0].mig_enabled
    assert [d.profile for d in inventory.devices] == ["1g.5gb"] * 7
    assert [start for _, start in layout_of(gpu)] == list(range(7))


def test_back_to_a_whole_gpu(driver: NvmlDriver) -> None:
    gpu = split_gpu(driver)
    nvml = backend()

    nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(False)))

    assert gpu.instances == []
    assert [(d.kind, d.uuid) for d in nvml.inventory().devices] == [("gpu", gpu.uuid)]


def test_a_failed_step_names_itself_and_what_was_done_before(driver: NvmlDriver) -> None:
    split_gpu(driver)
    nvml = backend()
    steps = plan_for(nvml, Layout.of(["7g.40gb"]))
    driver.fail["nvmlDeviceCreateGpuInstanceWithPlacement"] = pynvml.NVML_ERROR_NO_PERMISSION

    with pytest.raises(SystemFault) as failed:
        nvml.apply_mig(nvml.inventory().gpus[0], steps)

    message = failed.value.message
    assert (
        "GPU 0: create 7g.40gb at memory slice 0 failed: NVML: Insufficient Permissions"
        " (ds01d must run as root)" in message
    )
    assert "Done before: destroy 3g.20gb" in message
    assert "`ds01 admin mig plan` shows it now" in message


def test_a_destroy_while_a_process_runs_says_so(driver: NvmlDriver) -> None:
    gpu = split_gpu(driver)
    gpu.instances[0].compute[0].processes = 1
    nvml = backend()

    with pytest.raises(SystemFault) as failed:
        nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(["7g.40gb"])))

    assert "In use by another client (a process still uses the GPU" in failed.value.message


def test_a_profile_the_gpu_lacks_is_reported_with_what_it_offers(driver: NvmlDriver) -> None:
    driver.gpu(mig=True)
    nvml = backend()
    gpu = nvml.inventory().gpus[0]

    assert nvml.mig_profiles(gpu) == (
        "7g.40gb",
        "4g.20gb",
        "3g.20gb",
        "2g.10gb",
        "1g.10gb",
        "1g.5gb",
    )
    with pytest.raises(SystemFault, match=r"has no MIG profile 3g\.71gb"):
        nvml.apply_mig(gpu, [MigStep("create", "3g.71gb")])


def test_no_profile_table_means_profiles_are_not_known(driver: NvmlDriver) -> None:
    driver.gpu()  # MIG off: the driver has no profile table to show
    nvml = backend()

    assert nvml.mig_profiles(nvml.inventory().gpus[0]) is None


# --- older drivers and bindings (issue 16, findings 1, 2 and 6) -----------------------------


def test_a_driver_that_knows_fewer_profile_ids_answers_invalid_argument_and_is_walked_past(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = NvmlDriver(known_profiles=pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2)
    install(monkeypatch, driver)
    gpu = split_gpu(driver)
    nvml = backend()

    assert nvml.mig_profiles(nvml.inventory().gpus[0]) == (
        "7g.40gb",
        "4g.20gb",
        "3g.20gb",
        "2g.10gb",
        "1g.5gb",
    )
    nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(["3g.20gb", "3g.20gb"])))
    assert layout_of(gpu) == [("3g.20gb", 0), ("3g.20gb", 4)]


def test_a_driver_with_only_the_version_1_profile_query_names_profiles_from_their_memory(
    driver: NvmlDriver,
) -> None:
    driver.missing.add("nvmlDeviceGetGpuInstanceProfileInfoV")
    gpu = split_gpu(driver)
    nvml = backend()
    inventory = nvml.inventory()

    assert nvml.mig_profiles(inventory.gpus[0]) == (
        "7g.40gb",
        "4g.20gb",
        "3g.20gb",
        "2g.10gb",
        "1g.10gb",
        "1g.5gb",
    )
    assert [d.profile for d in inventory.devices] == ["3g.20gb", "2g.10gb", "1g.5gb"]
    nvml.apply_mig(inventory.gpus[0], plan_for(nvml, Layout.of(["4g.20gb", "1g.5gb"])))
    assert layout_of(gpu) == [("4g.20gb", 0), ("1g.5gb", 4)]


def test_bindings_that_return_bytes_give_plain_uuids_and_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = NvmlDriver()
    install(monkeypatch, driver, str_bindings=False)
    gpu = split_gpu(driver)
    nvml = backend()

    inventory = nvml.inventory()

    assert inventory.gpus[0].uuid == gpu.uuid
    assert inventory.gpus[0].model == A100_SXM4_40GB.name
    assert [d.uuid for d in inventory.devices] == [c.uuid for _, c in gpu.mig_devices()]
    telemetry = nvml.utilization([gpu.uuid, inventory.devices[0].uuid])
    assert set(telemetry) == {gpu.uuid, inventory.devices[0].uuid}
    nvml.apply_mig(inventory.gpus[0], plan_for(nvml, Layout.of(["7g.40gb"])))
    assert layout_of(gpu) == [("7g.40gb", 0)]


# --- placement (finding 3) ------------------------------------------------------------------


def test_a_layout_whose_placements_do_not_fit_is_refused_before_the_gpu_is_touched(
    driver: NvmlDriver,
) -> None:
    gpu = split_gpu(driver)
    nvml = backend()
    inventory = nvml.inventory()
    offered = {g.index: nvml.mig_profiles(g) for g in inventory.gpus}
    tables = {g.index: nvml.mig_placements(g) for g in inventory.gpus}

    (plan,) = plan_mig(
        inventory, {0: Layout.of(["3g.20gb", "3g.20gb", "1g.5gb"])}, {}, offered, tables
    )

    assert plan.status == "invalid"
    assert "1g.5gb" in plan.reason and "memory slices 4-7" in plan.reason
    assert layout_of(gpu) == [("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3), ("3g.20gb", 4)]


def test_instances_are_made_at_the_planned_placements(driver: NvmlDriver) -> None:
    gpu = driver.gpu(H100_SXM5_80GB, mig=True)
    nvml = backend()
    steps = plan_for(nvml, Layout.of(["1g.10gb", "3g.40gb", "2g.20gb", "1g.10gb"]))

    nvml.apply_mig(nvml.inventory().gpus[0], steps)

    # A 1g.10gb may not begin at memory slice 7: with the 3g.40gb at 0 the second one
    # would not fit, so the 3g.40gb goes to 4.
    assert [(s.profile, s.start) for s in steps if s.action == "create"] == [
        ("3g.40gb", 4),
        ("2g.20gb", 0),
        ("1g.10gb", 2),
        ("1g.10gb", 3),
    ]
    assert layout_of(gpu) == [("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3), ("3g.40gb", 4)]
    assert "nvmlDeviceCreateGpuInstance" not in driver.calls


def test_a_driver_without_the_placement_api_places_instances_itself(driver: NvmlDriver) -> None:
    driver.missing |= {
        "nvmlDeviceCreateGpuInstanceWithPlacement",
        "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
    }
    gpu = driver.gpu(mig=True)
    nvml = backend()

    nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(["4g.20gb", "3g.20gb"])))

    assert layout_of(gpu) == [("4g.20gb", 0), ("3g.20gb", 4)]
    assert driver.calls.count("nvmlDeviceCreateGpuInstance") == 2


def test_a_create_where_the_driver_finds_the_place_taken_names_the_driver_error(
    driver: NvmlDriver,
) -> None:
    gpu = driver.gpu(mig=True)
    driver.split(gpu, ("3g.20gb", 4))
    nvml = backend()

    with pytest.raises(SystemFault) as refused:
        nvml.apply_mig(nvml.inventory().gpus[0], [MigStep("create", "2g.10gb", start=4)])

    assert "create 2g.10gb at memory slice 4 failed: NVML: Insufficient resources" in (
        refused.value.message
    )
    assert layout_of(gpu) == [("3g.20gb", 4)]


def test_one_instance_is_made_at_its_start_and_destroyed_alone_unless_a_process_runs(
    driver: NvmlDriver,
) -> None:
    gpu = driver.gpu(mig=True)
    (busy,) = driver.split(gpu, ("3g.20gb", 0))
    nvml = backend()
    physical = nvml.inventory().gpus[0]

    made = nvml.create_mig_instance(physical, "1g.5gb", 6)

    assert (made.profile, made.start) == ("1g.5gb", 6)
    assert layout_of(gpu) == [("3g.20gb", 0), ("1g.5gb", 6)]
    with pytest.raises(SystemFault, match="Insufficient resources"):
        nvml.create_mig_instance(physical, "2g.10gb", 2)
    other = next(d for d in nvml.inventory().devices if d.start == 0)
    busy.processes = 1
    with pytest.raises(DeviceInUse):
        nvml.destroy_mig_instance(physical, other.uuid)
    nvml.destroy_mig_instance(physical, made.uuid)
    assert layout_of(gpu) == [("3g.20gb", 0)]
