"""``gpu-config.yaml``: which GPU backend to use, the simulated inventory, reserved devices."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MIG_PROFILE_RE = re.compile(r"^(?P<slices>[1-7])g\.(?P<mem>\d+)gb$")
A100_40GB = "NVIDIA A100-SXM4-40GB"


def mig_profile_slices(profile: str) -> int:
    """Compute slices of a MIG profile name (``"3g.20gb"`` → 3)."""
    match = MIG_PROFILE_RE.match(profile)
    if not match:
        raise ValueError(f"not a MIG profile: {profile!r} (expected e.g. '3g.20gb')")
    return int(match["slices"])


def mig_profile_memory_mib(profile: str) -> int:
    """Memory of a MIG profile name in MiB (``"3g.20gb"`` → 20480)."""
    match = MIG_PROFILE_RE.match(profile)
    if not match:
        raise ValueError(f"not a MIG profile: {profile!r} (expected e.g. '3g.20gb')")
    return int(match["mem"]) * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedMigInstance(_Strict):
    profile: str
    uuid: str | None = Field(default=None, pattern=r"^MIG-[0-9a-fA-F-]{8,}$")

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        mig_profile_slices(value)
        return value


class SimulatedGpu(_Strict):
    model: str = A100_40GB
    memory_mib: int = Field(default=40960, gt=0)
    uuid: str | None = Field(default=None, pattern=r"^GPU-[0-9a-fA-F-]{8,}$")
    mig: bool = False
    total_slices: int = Field(default=7, ge=1, le=8)
    mig_instances: list[SimulatedMigInstance] = Field(default_factory=list)
    device_node: str | None = None

    @model_validator(mode="after")
    def _layout_fits(self) -> SimulatedGpu:
        if self.mig_instances and not self.mig:
            raise ValueError("mig_instances given but mig is false")
        used = sum(mig_profile_slices(i.profile) for i in self.mig_instances)
        if used > self.total_slices:
            raise ValueError(
                f"MIG instances use {used} compute slices, the GPU has {self.total_slices}"
            )
        return self


def _default_simulated_gpus() -> list[SimulatedGpu]:
    """Four A100-SXM4-40GB: GPUs 0-2 whole, GPU 3 split 3g+2g+1g+1g (4.0 GPU-equivalents)."""
    mig = [SimulatedMigInstance(profile=p) for p in ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")]
    return [
        SimulatedGpu(),
        SimulatedGpu(),
        SimulatedGpu(),
        SimulatedGpu(mig=True, mig_instances=mig),
    ]


class SimulatedInventory(_Strict):
    gpus: list[SimulatedGpu] = Field(default_factory=_default_simulated_gpus)
    # Simulated UUIDs are derived from this seed and the device's position, so they stay
    # the same across daemon restarts.
    uuid_seed: str = "ds01-simulated"
    # If set, GPU N gets the device node DIR/nvidiaN unless it names its own (the node is
    # not checked here: a missing node makes container creation fail loudly).
    device_node_dir: str | None = None


class GpuConfig(_Strict):
    backend: Literal["simulated", "nvml"] = "simulated"
    simulated: SimulatedInventory = Field(default_factory=SimulatedInventory)
    # Device UUIDs (GPU-… or MIG-…) never handed out by the allocator.
    reserved: list[str] = Field(default_factory=list)
