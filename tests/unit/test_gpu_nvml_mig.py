"""MIG changes through NVML (``ds01 admin mig apply`` on real GPUs), against a fake
``pynvml`` that keeps GPU and compute instances the way the driver does: never run on real
hardware here.

The fake extends the one of ``test_gpu_nvml.py`` with instance creation and destruction,
MIG mode switches (pending until a reset where the GPU needs one) and the ctypes-array
enumeration calls of nvidia-ml-py (``nvmlDeviceGetGpuInstances``,
``nvmlGpuInstanceGetComputeInstances``).
"""

from __future__ import annotations

import ctypes
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from test_gpu_nvml import (
    A100_PROFILES,
    MIG_OFF,
    MIG_ON,
    FakeGpu,
    FakeMig,
    FakePynvml,
    _a100_mig,
    _nvml_error,
)

from ds01.config.gpu_config import GpuConfig
from ds01.core.mig import Layout, plan_mig
from ds01.errors import SystemFault
from ds01.gpu.nvml import NvmlBackend
from ds01.model.mig import MigStep

# Compute-instance profile index -> compute slices (NVML_COMPUTE_INSTANCE_PROFILE_*_SLICE).
CI_PROFILES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}
PROFILE_BY_ID = {
    pid: (name.decode().removeprefix("MIG "), slices)
    for pid, name, slices in A100_PROFILES.values()
}


class MigFakePynvml(FakePynvml):
    """A fake ``pynvml`` whose GPUs can be re-partitioned."""

    NVMLError_InUse = _nvml_error("InUse", 19)
    NVMLError_InsufficientResources = _nvml_error("InsufficientResources", 23)
    NVML_COMPUTE_INSTANCE_PROFILE_COUNT = 9
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0
    c_nvmlGpuInstance_t = ctypes.py_object
    c_nvmlComputeInstance_t = ctypes.py_object

    def __init__(self, gpus: list[FakeGpu], *, reset_needed: bool = False) -> None:
        super().__init__(gpus)
        self.reset_needed = reset_needed
        self.with_ci: set[int] = {id(m) for g in gpus for m in g.mig_slots.values()}
        self.calls: list[str] = []
        self.fail: dict[str, type[Exception]] = {}
        self._ids = itertools.count(100)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]()

    # profile tables
    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, gpu: FakeGpu, profile_index: int, version: int = 2
    ) -> SimpleNamespace:
        info = super().nvmlDeviceGetGpuInstanceProfileInfo(gpu, profile_index, version)
        return SimpleNamespace(**vars(info), instanceCount=7 // info.sliceCount)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gpu_instance: FakeMig, profile_index: int, engine: int, version: int = 2
    ) -> SimpleNamespace:
        slices = CI_PROFILES.get(profile_index)
        if slices is None or slices > gpu_instance.slices:
            raise self.NVMLError_NotSupported()
        return SimpleNamespace(
            id=profile_index, sliceCount=slices, instanceCount=gpu_instance.slices // slices
        )

    # enumeration through ctypes arrays
    def nvmlDeviceGetGpuInstances(
        self, gpu: FakeGpu, profile_id: int, array: Any, count: Any
    ) -> int:
        found = [m for m in gpu.mig_slots.values() if m.profile_id == profile_id]
        for i, gpu_instance in enumerate(found):
            array[i] = gpu_instance
        count._obj.value = len(found)
        return 0

    def nvmlGpuInstanceGetComputeInstances(
        self, gpu_instance: FakeMig, profile_id: int, array: Any, count: Any
    ) -> int:
        full = id(gpu_instance) in self.with_ci and CI_PROFILES[profile_id] == gpu_instance.slices
        if full:
            array[0] = ("ci", gpu_instance)
        count._obj.value = 1 if full else 0
        return 0

    # changes
    def nvmlComputeInstanceDestroy(self, ci: tuple[str, FakeMig]) -> int:
        self._call("nvmlComputeInstanceDestroy")
        self.with_ci.discard(id(ci[1]))
        return 0

    def nvmlGpuInstanceDestroy(self, gpu_instance: FakeMig) -> int:
        self._call("nvmlGpuInstanceDestroy")
        if id(gpu_instance) in self.with_ci:
            raise self.NVMLError_InUse()
        for gpu in self.gpus:
            for slot, mig in list(gpu.mig_slots.items()):
                if mig is gpu_instance:
                    del gpu.mig_slots[slot]
        return 0

    def nvmlDeviceSetMigMode(self, gpu: FakeGpu, mode: int) -> int:
        self._call("nvmlDeviceSetMigMode")
        current = gpu.mig_mode[0] if gpu.mig_mode else 0
        gpu.mig_mode = (current, mode) if self.reset_needed else (mode, mode)
        return 0

    def nvmlDeviceCreateGpuInstance(self, gpu: FakeGpu, profile_id: int) -> FakeMig:
        self._call("nvmlDeviceCreateGpuInstance")
        if not gpu.mig_mode or gpu.mig_mode[0] != self.NVML_DEVICE_MIG_ENABLE:
            raise self.NVMLError_NotSupported()
        _name, slices = PROFILE_BY_ID[profile_id]
        if sum(m.slices for m in gpu.mig_slots.values()) + slices > 7:
            raise self.NVMLError_InsufficientResources()
        slot = next(i for i in range(gpu.max_mig_devices) if i not in gpu.mig_slots)
        number = next(self._ids)
        mig = FakeMig(f"MIG-new-{number}", number, profile_id, slices, slices * 4864)
        gpu.mig_slots[slot] = mig
        return mig

    def nvmlGpuInstanceCreateComputeInstance(
        self, gpu_instance: FakeMig, profile_id: int
    ) -> tuple[str, FakeMig]:
        self._call("nvmlGpuInstanceCreateComputeInstance")
        assert CI_PROFILES[profile_id] == gpu_instance.slices
        self.with_ci.add(id(gpu_instance))
        return ("ci", gpu_instance)

    # only GPU instances with a compute instance are MIG devices
    def nvmlDeviceGetMigDeviceHandleByIndex(self, gpu: FakeGpu, slot: int) -> FakeMig:
        mig = super().nvmlDeviceGetMigDeviceHandleByIndex(gpu, slot)
        if id(mig) not in self.with_ci:
            raise self.NVMLError_NotFound()
        return mig


def install(monkeypatch: pytest.MonkeyPatch, fake: MigFakePynvml) -> NvmlBackend:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    return NvmlBackend(GpuConfig(backend="nvml"))


def split_gpu(uuid: str = "GPU-split") -> FakeGpu:
    """An A100 split 3g+2g+1g, plus a GPU instance nobody gave a compute instance."""
    slots = {
        0: _a100_mig(f"{uuid}-3g", 2, "3g.20gb"),
        1: _a100_mig(f"{uuid}-2g", 3, "2g.10gb"),
        2: _a100_mig(f"{uuid}-1g", 9, "1g.5gb"),
        3: _a100_mig(f"{uuid}-orphan", 10, "1g.5gb"),
    }
    return FakeGpu(uuid, mig_mode=MIG_ON, mig_slots=slots)


def plan_for(nvml: NvmlBackend, layout: Layout) -> tuple[MigStep, ...]:
    inventory = nvml.inventory()
    offered = {g.index: nvml.mig_profiles(g) for g in inventory.gpus}
    (plan,) = plan_mig(inventory, {0: layout}, {}, offered)
    assert plan.status == "apply", plan.reason
    return plan.steps


def test_repartition_destroys_every_instance_orphans_included_and_creates_the_new_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = split_gpu()
    fake = MigFakePynvml([gpu])
    nvml = install(monkeypatch, fake)
    orphan = gpu.mig_slots[3]
    fake.with_ci.discard(id(orphan))  # a GPU instance without a compute instance
    assert [d.profile for d in nvml.inventory().devices] == ["3g.20gb", "2g.10gb", "1g.5gb"]

    steps = plan_for(nvml, Layout.of(["4g.20gb", "3g.20gb"]))
    result = nvml.apply_mig(nvml.inventory().gpus[0], steps)

    assert not result.pending_reset
    assert result.done == tuple(s.describe() for s in steps)
    assert orphan not in gpu.mig_slots.values()
    assert fake.calls.count("nvmlGpuInstanceDestroy") == 4  # the orphan too
    assert fake.calls.count("nvmlComputeInstanceDestroy") == 3
    devices = nvml.inventory().devices
    assert [(d.kind, d.profile) for d in devices] == [("mig", "4g.20gb"), ("mig", "3g.20gb")]
    assert "nvmlDeviceSetMigMode" not in fake.calls  # MIG was on already


def test_turning_mig_on_waits_for_a_reset_when_the_gpu_needs_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu("GPU-whole", mig_mode=MIG_OFF)
    fake = MigFakePynvml([gpu], reset_needed=True)
    nvml = install(monkeypatch, fake)
    steps = plan_for(nvml, Layout.of(["7g.40gb"]))
    assert [s.action for s in steps] == ["enable_mig", "create"]

    result = nvml.apply_mig(nvml.inventory().gpus[0], steps)

    assert result.pending_reset
    assert result.done == ("turn MIG mode on (pending)",)
    assert "nvidia-smi -r -i 0" in (result.message or "")
    assert "nvmlDeviceCreateGpuInstance" not in fake.calls
    assert gpu.mig_mode == (0, 1)


def test_turning_mig_on_and_creating_when_no_reset_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = MigFakePynvml([FakeGpu("GPU-whole", mig_mode=MIG_OFF)])
    nvml = install(monkeypatch, fake)

    nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(["1g.5gb"] * 7)))

    inventory = nvml.inventory()
    assert inventory.gpus[0].mig_enabled
    assert [d.profile for d in inventory.devices] == ["1g.5gb"] * 7


def test_back_to_a_whole_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = split_gpu()
    fake = MigFakePynvml([gpu])
    nvml = install(monkeypatch, fake)

    nvml.apply_mig(nvml.inventory().gpus[0], plan_for(nvml, Layout.of(False)))

    inventory = nvml.inventory()
    assert not gpu.mig_slots
    assert [(d.kind, d.uuid) for d in inventory.devices] == [("gpu", "GPU-split")]


def test_a_failed_step_names_itself_and_what_was_done_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = MigFakePynvml([split_gpu()])
    nvml = install(monkeypatch, fake)
    steps = plan_for(nvml, Layout.of(["7g.40gb"]))
    fake.fail["nvmlDeviceCreateGpuInstance"] = fake.NVMLError_NoPermission

    with pytest.raises(SystemFault) as failed:
        nvml.apply_mig(nvml.inventory().gpus[0], steps)

    message = failed.value.message
    assert "GPU 0: create 7g.40gb failed: NVML: NoPermission (ds01d must run as root)" in message
    assert "Done before: destroy 3g.20gb" in message
    assert "`ds01 admin mig plan` shows it now" in message


def test_a_profile_the_gpu_lacks_is_reported_with_what_it_offers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = MigFakePynvml([FakeGpu("GPU-x", mig_mode=MIG_ON)])
    nvml = install(monkeypatch, fake)
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


def test_no_profile_table_means_profiles_are_not_known(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = MigFakePynvml([FakeGpu("GPU-old", mig_mode=None, profiles={})])
    nvml = install(monkeypatch, fake)
    assert nvml.mig_profiles(nvml.inventory().gpus[0]) is None
