"""How a container's GPUs reach it: the variables and the Docker create payload, per backend.

``gpu_exposure`` decides, ``runtime.docker.create_arguments`` turns a spec into the keyword
arguments of docker-py's ``create_container``; ``host_config`` there is docker-py's own
HostConfig payload (built by a real ``APIClient``, which contacts no engine to build it).
Real GPUs (the NVML backend's inventory, here over the model of the driver behind the real
pynvml) go through the NVIDIA Container Toolkit as one ``DeviceRequest`` by UUID; simulated
ones never do, and their made-up UUIDs never appear in a variable a runtime reads.
"""

from __future__ import annotations

from typing import Any

import docker
import pytest

from ds01.config.gpu_config import GpuConfig
from ds01.daemon.creation import gpu_exposure
from ds01.gpu.nvml import NvmlBackend
from ds01.gpu.simulated import SimulatedBackend
from ds01.model.device import Device, Inventory
from ds01.runtime.docker import ContainerSpec, create_arguments
from nvml_driver import NvmlDriver, install


@pytest.fixture
def nvml_inventory(monkeypatch: pytest.MonkeyPatch) -> Inventory:
    """What the NVML backend finds on two whole A100s and one split 3g.20gb + 2g.10gb."""
    driver = NvmlDriver()
    driver.gpu()
    driver.gpu()
    driver.split(driver.gpu(mig=True), "3g.20gb", "2g.10gb")
    install(monkeypatch, driver)
    with NvmlBackend(GpuConfig(backend="nvml")) as backend:
        inventory = backend.inventory()
    assert inventory.backend == "nvml"
    return inventory


@pytest.fixture
def api() -> docker.APIClient:
    """docker-py's client with the API version fixed: building payloads needs no engine."""
    return docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")


def payload(api: docker.APIClient, backend: str, devices: tuple[Device, ...]) -> dict[str, Any]:
    gpus = gpu_exposure(backend, devices)
    spec = ContainerSpec(
        docker_name="nb._.1000",
        image="ds01-test/busybox:latest",
        user="1000:1000",
        hostname="nb",
        labels={},
        environment={**gpus.environment, "HOME": "/workspace"},
        mounts=(),
        cgroup_parent="ds01.slice",
        gpu_uuids=gpus.gpu_uuids,
        device_nodes=gpus.device_nodes,
    )
    return create_arguments(api, spec)


@pytest.mark.parametrize("chosen", [("gpu",), ("mig",), ("gpu", "gpu")], ids=["gpu", "mig", "gpus"])
def test_real_gpus_are_one_device_request_by_uuid_and_named_in_the_variables(
    api: docker.APIClient, nvml_inventory: Inventory, chosen: tuple[str, ...]
) -> None:
    devices = tuple(
        [d for d in nvml_inventory.devices if d.kind == kind][chosen[:n].count(kind)]
        for n, kind in enumerate(chosen)
    )
    uuids = [d.uuid for d in devices]
    assert [d.kind for d in devices] == list(chosen) and len(set(uuids)) == len(uuids)
    arguments = payload(api, nvml_inventory.backend, devices)

    assert arguments["host_config"]["DeviceRequests"] == [
        {"Driver": "", "Count": 0, "DeviceIDs": uuids, "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert "Devices" not in arguments["host_config"]
    environment = arguments["environment"]
    assert environment["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert environment["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert environment["DS01_GPUS"] == ",".join(uuids)


def test_simulated_gpus_make_no_device_request_and_no_uuid_reaches_the_toolkit(
    api: docker.APIClient, tmp_path: Any
) -> None:
    config = GpuConfig.model_validate(
        {"backend": "simulated", "simulated": {"device_node_dir": str(tmp_path)}}
    )
    inventory = SimulatedBackend(config).inventory()
    whole = next(d for d in inventory.devices if d.kind == "gpu")
    mig = next(d for d in inventory.devices if d.kind == "mig")

    arguments = payload(api, inventory.backend, (whole, mig))

    host_config = arguments["host_config"]
    assert "DeviceRequests" not in host_config
    assert host_config["Devices"] == [
        {
            "PathOnHost": str(tmp_path / f"nvidia{d.gpu_index}"),
            "PathInContainer": f"/dev/nvidia{d.gpu_index}",
            "CgroupPermissions": "rwm",
        }
        for d in sorted((whole, mig), key=lambda d: str(d.device_node))
    ]
    environment = arguments["environment"]
    assert environment["NVIDIA_VISIBLE_DEVICES"] == environment["CUDA_VISIBLE_DEVICES"] == "void"
    assert environment["DS01_GPUS"] == f"{whole.uuid},{mig.uuid}"


@pytest.mark.parametrize("backend", ["nvml", "simulated"])
def test_no_device_is_void_for_the_toolkit_and_empty_in_ds01_gpus(
    api: docker.APIClient, backend: str
) -> None:
    arguments = payload(api, backend, ())

    assert "DeviceRequests" not in arguments["host_config"]
    assert "Devices" not in arguments["host_config"]
    environment = arguments["environment"]
    assert environment["NVIDIA_VISIBLE_DEVICES"] == environment["CUDA_VISIBLE_DEVICES"] == "void"
    assert environment["DS01_GPUS"] == ""
