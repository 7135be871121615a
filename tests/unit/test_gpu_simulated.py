"""The simulated GPU backend: inventory from gpu-config.yaml, telemetry from a JSON file."""

from __future__ import annotations

import json
import logging
import re
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from ds01.config.gpu_config import GpuConfig
from ds01.errors import ConfigError, DeviceInUse, SystemFault
from ds01.gpu.backend import DeviceTelemetry, GpuProcess, make_backend
from ds01.gpu.nvml import NvmlBackend
from ds01.gpu.simulated import (
    SimulatedBackend,
    simulated_gpu_uuid,
    simulated_mig_uuid,
    write_simulated_processes,
    write_simulated_telemetry,
)

GPU_UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MIG_UUID_RE = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _config(**simulated: object) -> GpuConfig:
    return GpuConfig.model_validate({"backend": "simulated", "simulated": simulated})


# --- default inventory -------------------------------------------------------------------


def test_default_inventory_is_four_a100s_with_gpu3_split_into_four_mig_instances() -> None:
    inventory = SimulatedBackend(GpuConfig()).inventory()

    assert inventory.backend == "simulated"
    assert [g.index for g in inventory.gpus] == [0, 1, 2, 3]
    assert [g.mig_enabled for g in inventory.gpus] == [False, False, False, True]
    assert [d.kind for d in inventory.devices] == ["gpu"] * 3 + ["mig"] * 4
    assert [d.profile for d in inventory.devices if d.kind == "mig"] == [
        "3g.20gb",
        "2g.10gb",
        "1g.5gb",
        "1g.5gb",
    ]
    assert inventory.message is None
    assert inventory.unusable_gpus() == ()


def test_default_inventory_totals_exactly_four_gpu_equivalents() -> None:
    inventory = SimulatedBackend(GpuConfig()).inventory()

    total = inventory.total_gpu_equivalents
    assert isinstance(total, Fraction)
    assert total == Fraction(4)
    mig_shares = [d.gpu_equivalents for d in inventory.devices if d.kind == "mig"]
    assert mig_shares == [Fraction(3, 7), Fraction(2, 7), Fraction(1, 7), Fraction(1, 7)]


def test_mig_instances_take_memory_and_slices_from_profile_and_ids_in_order() -> None:
    inventory = SimulatedBackend(GpuConfig()).inventory()
    gpu3 = inventory.gpus[3]

    migs = [d for d in inventory.devices if d.kind == "mig"]
    assert [d.memory_mib for d in migs] == [20480, 10240, 5120, 5120]
    assert [d.slices for d in migs] == [3, 2, 1, 1]
    assert [d.instance_id for d in migs] == [1, 2, 3, 4]
    assert {d.gpu_uuid for d in migs} == {gpu3.uuid}
    assert {d.gpu_index for d in migs} == {3}
    assert {d.total_slices for d in migs} == {7}


def test_whole_gpu_devices_are_their_gpu() -> None:
    inventory = SimulatedBackend(GpuConfig()).inventory()

    for gpu, device in zip(inventory.gpus[:3], inventory.devices[:3], strict=True):
        assert device.uuid == device.gpu_uuid == gpu.uuid
        assert device.memory_mib == gpu.memory_mib == 40960
        assert device.model == gpu.model == "NVIDIA A100-SXM4-40GB"
        assert device.profile is None
        assert device.instance_id is None
        assert device.gpu_equivalents == 1


# --- UUIDs -------------------------------------------------------------------------------


def test_uuids_are_stable_across_backend_instances_and_distinct() -> None:
    first = SimulatedBackend(GpuConfig()).inventory()
    second = SimulatedBackend(GpuConfig()).inventory()

    assert [d.uuid for d in first.devices] == [d.uuid for d in second.devices]
    assert [g.uuid for g in first.gpus] == [g.uuid for g in second.gpus]
    all_uuids = [g.uuid for g in first.gpus] + [d.uuid for d in first.devices if d.kind == "mig"]
    assert len(set(all_uuids)) == len(all_uuids) == 8


def test_uuids_look_like_real_nvidia_uuids() -> None:
    inventory = SimulatedBackend(GpuConfig()).inventory()

    for gpu in inventory.gpus:
        assert GPU_UUID_RE.match(gpu.uuid), gpu.uuid
    for device in inventory.devices:
        pattern = GPU_UUID_RE if device.kind == "gpu" else MIG_UUID_RE
        assert pattern.match(device.uuid), device.uuid


def test_uuids_derive_from_seed_and_position() -> None:
    inventory = SimulatedBackend(_config(uuid_seed="lab-a")).inventory()
    other_seed = SimulatedBackend(_config(uuid_seed="lab-b")).inventory()

    assert inventory.gpus[2].uuid == simulated_gpu_uuid("lab-a", 2)
    assert inventory.devices[4].uuid == simulated_mig_uuid("lab-a", 3, 1)
    assert not {d.uuid for d in inventory.devices} & {d.uuid for d in other_seed.devices}


def test_explicit_uuids_in_config_win() -> None:
    gpu_uuid = "GPU-11111111-2222-3333-4444-555555555555"
    mig_uuid = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    config = _config(
        gpus=[
            {"uuid": gpu_uuid},
            {
                "mig": True,
                "mig_instances": [{"profile": "1g.5gb", "uuid": mig_uuid}, {"profile": "1g.5gb"}],
            },
        ]
    )

    inventory = SimulatedBackend(config).inventory()

    assert inventory.devices[0].uuid == gpu_uuid
    assert inventory.devices[1].uuid == mig_uuid
    assert inventory.devices[2].uuid == simulated_mig_uuid("ds01-simulated", 1, 1)


def test_two_devices_with_the_same_uuid_are_a_config_error() -> None:
    same = "GPU-11111111-2222-3333-4444-555555555555"
    config = _config(gpus=[{"uuid": same}, {"uuid": same}])

    with pytest.raises(ConfigError, match="used by two devices"):
        SimulatedBackend(config)


# --- custom layouts, reserved devices, device nodes ---------------------------------------


def test_custom_layout_with_other_model_and_slice_count() -> None:
    config = _config(
        gpus=[
            {
                "model": "NVIDIA A30",
                "memory_mib": 24576,
                "total_slices": 4,
                "mig": True,
                "mig_instances": [{"profile": "2g.12gb"}, {"profile": "1g.6gb"}],
            },
            {"model": "NVIDIA RTX A6000", "memory_mib": 49140},
        ]
    )

    inventory = SimulatedBackend(config).inventory()

    a30_half, a30_quarter, a6000 = inventory.devices
    assert (a30_half.model, a30_half.memory_mib, a30_half.total_slices) == ("NVIDIA A30", 12288, 4)
    assert a30_half.gpu_equivalents == Fraction(1, 2)
    assert a30_quarter.gpu_equivalents == Fraction(1, 4)
    assert (a6000.kind, a6000.gpu_index, a6000.memory_mib) == ("gpu", 1, 49140)
    assert inventory.total_gpu_equivalents == Fraction(7, 4)
    assert inventory.gpus[0].total_slices == 4


def test_reserved_uuids_come_from_config_and_devices_stay_listed() -> None:
    gpu0 = simulated_gpu_uuid("ds01-simulated", 0)
    config = GpuConfig(reserved=[gpu0])

    inventory = SimulatedBackend(config).inventory()

    assert inventory.reserved == frozenset({gpu0})
    assert gpu0 in inventory.by_uuid()


def test_gpu_with_mig_on_and_no_instances_is_listed_but_offers_no_device() -> None:
    config = _config(gpus=[{}, {"mig": True}])

    inventory = SimulatedBackend(config).inventory()

    assert [g.mig_enabled for g in inventory.gpus] == [False, True]
    assert [d.gpu_index for d in inventory.devices] == [0]
    assert inventory.unusable_gpus() == (inventory.gpus[1],)
    assert inventory.total_gpu_equivalents == 1
    assert inventory.message is not None
    assert "GPU 1 has MIG on and no MIG instance" in inventory.message


def test_device_nodes_from_directory_own_setting_or_none(tmp_path: Path) -> None:
    missing_dir = tmp_path / "not-created"
    config = _config(
        device_node_dir=str(missing_dir),
        gpus=[
            {},
            {"device_node": "/dev/custom7"},
            {"mig": True, "mig_instances": [{"profile": "7g.40gb"}]},
        ],
    )

    inventory = SimulatedBackend(config).inventory()

    # Reported whether or not the node exists.
    assert [g.device_node for g in inventory.gpus] == [
        str(missing_dir / "nvidia0"),
        "/dev/custom7",
        str(missing_dir / "nvidia2"),
    ]
    assert [d.device_node for d in inventory.devices] == [g.device_node for g in inventory.gpus]
    assert SimulatedBackend(GpuConfig()).inventory().devices[0].device_node is None


# --- telemetry ----------------------------------------------------------------------------


@pytest.fixture
def telemetry_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "simulated-telemetry.json"


def test_without_telemetry_file_devices_read_idle_as_nvml_reports_them(
    telemetry_file: Path,
) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)
    whole, mig = backend.inventory().devices[0], backend.inventory().devices[3]

    telemetry = backend.utilization([whole.uuid, mig.uuid])

    assert telemetry == {
        whole.uuid: DeviceTelemetry(0.0, 0, 40960, 0),
        mig.uuid: DeviceTelemetry(None, 0, 20480, 0),
    }


def test_telemetry_file_sets_values_per_device_and_is_read_on_each_call(
    telemetry_file: Path,
) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)
    whole, mig = backend.inventory().devices[1], backend.inventory().devices[6]
    write_simulated_telemetry(
        telemetry_file,
        {
            whole.uuid: {"gpu_util_percent": 37, "memory_used_mib": 1024, "process_count": 1},
            mig.uuid: {"memory_used_mib": 2000},
        },
    )

    first = backend.utilization([whole.uuid, mig.uuid])
    write_simulated_telemetry(telemetry_file, {whole.uuid: {"process_count": None}})
    second = backend.utilization([whole.uuid])

    assert first[whole.uuid] == DeviceTelemetry(37.0, 1024, 40960, 1)
    assert first[mig.uuid] == DeviceTelemetry(None, 2000, 5120, 0)
    # Explicit null means "not available"; keys left out read as idle.
    assert second[whole.uuid] == DeviceTelemetry(0.0, 0, 40960, None)


def test_power_and_energy_are_unknown_unless_the_file_gives_them(telemetry_file: Path) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)
    first, second = backend.inventory().devices[:2]
    write_simulated_telemetry(
        telemetry_file, {first.uuid: {"power_watts": 251.5, "energy_joules": 3_600_000}}
    )

    telemetry = backend.utilization([first.uuid, second.uuid])

    assert telemetry[first.uuid] == DeviceTelemetry(0.0, 0, 40960, 0, 251.5, 3_600_000.0)
    assert (telemetry[second.uuid].power_watts, telemetry[second.uuid].energy_joules) == (
        None,
        None,
    )


def test_the_energy_counter_is_what_the_file_says_on_each_call(telemetry_file: Path) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)
    gpu = backend.inventory().gpus[0].uuid
    readings = []
    for joules in (1000.0, 4000.0, 50.0):  # grows, then drops: a driver reload
        write_simulated_telemetry(telemetry_file, {gpu: {"energy_joules": joules}})
        readings.append(backend.utilization([gpu])[gpu].energy_joules)

    assert readings == [1000.0, 4000.0, 50.0]


def test_a_gpu_in_mig_mode_answers_under_its_own_uuid(telemetry_file: Path) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)
    split = backend.inventory().gpus[3]
    assert split.mig_enabled and split.uuid not in backend.inventory().by_uuid()
    write_simulated_telemetry(telemetry_file, {split.uuid: {"power_watts": 90}})

    telemetry = backend.utilization([split.uuid])

    # Like NVML on a GPU in MIG mode: the board's memory and power, no utilisation.
    assert telemetry == {split.uuid: DeviceTelemetry(None, 0, 40960, 0, 90.0, None)}


def test_negative_power_or_energy_is_refused(telemetry_file: Path) -> None:
    with pytest.raises(ValidationError):
        write_simulated_telemetry(telemetry_file, {"GPU-a": {"power_watts": -1}})
    with pytest.raises(ValidationError):
        write_simulated_telemetry(telemetry_file, {"GPU-a": {"energy_joules": -0.5}})


def test_telemetry_leaves_out_unknown_uuids(telemetry_file: Path) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)

    assert backend.utilization(["GPU-00000000-0000-0000-0000-000000000000"]) == {}


def test_malformed_telemetry_file_reads_idle_and_is_logged_once(
    telemetry_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = SimulatedBackend(GpuConfig(), telemetry_file=telemetry_file)
    device = backend.inventory().devices[0]
    telemetry_file.parent.mkdir(parents=True)
    telemetry_file.write_text('{"GPU-x": {"gpu_util_percent": 250}}')

    with caplog.at_level(logging.WARNING, logger="ds01.gpu.simulated"):
        first = backend.utilization([device.uuid])
        second = backend.utilization([device.uuid])

    assert first == second == {device.uuid: DeviceTelemetry(0.0, 0, 40960, 0)}
    assert len([r for r in caplog.records if "telemetry file" in r.getMessage()]) == 1


def test_write_telemetry_replaces_file_atomically_and_rejects_bad_values(
    telemetry_file: Path,
) -> None:
    write_simulated_telemetry(telemetry_file, {"GPU-a": {"gpu_util_percent": 12.5}})
    write_simulated_telemetry(telemetry_file, {"GPU-b": {"memory_used_mib": 3}})

    assert json.loads(telemetry_file.read_text()) == {"GPU-b": {"memory_used_mib": 3}}
    assert [p.name for p in telemetry_file.parent.iterdir()] == [telemetry_file.name]
    with pytest.raises(ValidationError):
        write_simulated_telemetry(telemetry_file, {"GPU-b": {"gpu_util_percent": 101}})
    with pytest.raises(ValidationError):
        write_simulated_telemetry(telemetry_file, {"GPU-b": {"temperature_c": 50}})
    assert json.loads(telemetry_file.read_text()) == {"GPU-b": {"memory_used_mib": 3}}


def test_declared_processes_are_listed_on_known_devices(tmp_path: Path) -> None:
    process_file = tmp_path / "state" / "simulated-processes.json"
    backend = make_backend(GpuConfig(), simulated_process_file=process_file)
    assert backend.processes() == []  # no file: no process
    device = backend.inventory().devices[1].uuid
    write_simulated_processes(process_file, {device: [4242, 4243], "GPU-not-here": [1]})

    assert backend.processes() == [GpuProcess(device, 4242), GpuProcess(device, 4243)]
    process_file.write_text("{not json")
    assert backend.processes() == []  # unreadable: none, logged


# --- factory ------------------------------------------------------------------------------


def test_make_backend_picks_the_configured_backend(telemetry_file: Path) -> None:
    simulated = make_backend(GpuConfig(), simulated_telemetry_file=telemetry_file)
    nvml = make_backend(GpuConfig(backend="nvml"))

    assert isinstance(simulated, SimulatedBackend)
    assert simulated.telemetry_file == telemetry_file
    assert isinstance(nvml, NvmlBackend)
    assert nvml.name == "nvml"


def test_backend_is_a_context_manager_and_close_is_idempotent() -> None:
    with SimulatedBackend(GpuConfig()) as backend:
        assert len(backend.inventory().devices) == 7
    backend.close()


# --- MIG instances made and destroyed one at a time (MIG on demand) ------------------------


def test_one_instance_is_made_by_placement_and_destroyed_unless_a_process_runs(
    tmp_path: Path,
) -> None:
    config = _config(gpus=[{"mig": True, "mig_instances": [{"profile": "3g.20gb"}]}])
    telemetry = tmp_path / "telemetry.json"
    mig_file = tmp_path / "mig.json"
    processes = tmp_path / "processes.json"
    backend = SimulatedBackend(
        config, telemetry_file=telemetry, mig_file=mig_file, process_file=processes
    )
    gpu = backend.inventory().gpus[0]
    assert [d.start for d in backend.inventory().devices] == [0]

    made = backend.create_mig_instance(gpu, "1g.5gb", 6)

    assert (made.profile, made.start, made.kind) == ("1g.5gb", 6, "mig")
    with pytest.raises(SystemFault, match=r"no room for a 2g\.10gb instance at memory slice 2"):
        backend.create_mig_instance(gpu, "2g.10gb", 2)
    # A restarted backend finds the instance where it was made.
    again = SimulatedBackend(config, telemetry_file=telemetry, mig_file=mig_file)
    assert made.uuid in again.inventory().by_uuid()
    assert again.inventory().by_uuid()[made.uuid].start == 6

    write_simulated_telemetry(telemetry, {made.uuid: {"process_count": 1}})
    with pytest.raises(DeviceInUse, match="1 process"):
        backend.destroy_mig_instance(gpu, made.uuid)
    assert made.uuid in backend.inventory().by_uuid()
    write_simulated_telemetry(telemetry, {})
    write_simulated_processes(processes, {made.uuid: [4321]})  # as NVML lists it
    with pytest.raises(DeviceInUse):
        backend.destroy_mig_instance(gpu, made.uuid)
    write_simulated_processes(processes, {})
    backend.destroy_mig_instance(gpu, made.uuid)
    assert made.uuid not in backend.inventory().by_uuid()
