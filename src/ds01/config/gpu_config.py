"""``gpu-config.yaml``: which GPU backend to use, the simulated inventory, reserved devices,
the desired MIG layout, energy metering (grid intensity for the CO₂ figure)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ds01.model.device import Device, PhysicalGpu

# Anchored with \Z, not $: "$" also matches before a trailing newline.
MIG_PROFILE_RE = re.compile(r"^(?P<slices>[1-7])g\.(?P<mem>[0-9]+)gb\Z")
A100_40GB = "NVIDIA A100-SXM4-40GB"


def _mig_profile(profile: str) -> re.Match[str]:
    match = MIG_PROFILE_RE.match(profile)
    if not match:
        raise ValueError(f"not a MIG profile: {profile!r} (expected e.g. '3g.20gb')")
    return match


def mig_profile_slices(profile: str) -> int:
    """Compute slices of a MIG profile name (``"3g.20gb"`` → 3)."""
    return int(_mig_profile(profile)["slices"])


def mig_profile_memory_mib(profile: str) -> int:
    """Memory of a MIG profile name in MiB (``"3g.20gb"`` → 20480)."""
    return int(_mig_profile(profile)["mem"]) * 1024


def mig_profile_device(
    gpu: PhysicalGpu,
    profile: str,
    uuid: str,
    *,
    start: int | None,
    instance_id: int | None = None,
    device_node: str | None = None,
) -> Device:
    """The device that a MIG instance of ``profile`` on ``gpu`` is, its memory and compute
    slices as the profile's name says (for a simulated or a planned instance; NVML reports
    a real one's own)."""
    return gpu.device(
        uuid,
        "mig",
        memory_mib=mig_profile_memory_mib(profile),
        profile=profile,
        slices=mig_profile_slices(profile),
        instance_id=instance_id,
        device_node=device_node,
        start=start,
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedMigInstance(_Strict):
    profile: str
    uuid: str | None = Field(default=None, pattern=r"^MIG-[0-9a-fA-F-]{8,}$")
    # The memory slice the instance begins at (``ds01.model.mig_placement``); left out, the
    # first free place of its profile, in the order the instances are listed.
    start: int | None = Field(default=None, ge=0, le=7)

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


class EnergyConfig(_Strict):
    """``energy:`` in ``gpu-config.yaml``: how GPU energy is metered and turned into CO₂."""

    # Grams of CO₂ emitted per kWh taken from the grid (the site's electricity mix; about
    # 400 is a European average, look up your supplier's or your grid operator's figure).
    grid_intensity_g_per_kwh: float = Field(default=400.0, ge=0, le=5000)
    # How often ds01d reads the GPUs' energy counters into the energy ledger, in seconds.
    sample_interval_seconds: float = Field(default=30.0, ge=0.5, le=3600)


GPU_UUID_RE = re.compile(r"^GPU-[0-9a-fA-F-]{8,}\Z")


def _gpu_key(key: int | str) -> int | str:
    if isinstance(key, int) and key >= 0:
        return key
    if isinstance(key, str) and GPU_UUID_RE.match(key):
        return key
    raise ValueError(f"{key!r} is not a GPU: give its index (0, 1, …) or its UUID (GPU-…)")


DYNAMIC = "dynamic"
"""The word that turns MIG on demand on for a GPU in ``mig_layout``."""


class DynamicMig(_Strict):
    """``dynamic`` in ``mig_layout``: MIG on, instances made on demand (ds01d creates a
    slice of the asked profile where it fits and destroys it once nobody holds it).

    ``baseline``: the instances the admin wants the GPU to have when nobody uses it (written
    ``{dynamic: [3g.20gb]}``; plain ``dynamic``: none). ds01d never destroys them; it makes
    them again, where they fit, once the GPU has no slice made on demand left.
    """

    baseline: tuple[str, ...] = ()


_LAYOUT_FORMS = (
    "write the instance profiles as a list, e.g. [3g.20gb, 2g.10gb], `off` for a whole GPU, "
    "`dynamic` for MIG slices made on demand, or {dynamic: [3g.20gb]} for slices on demand "
    "beside a fixed baseline"
)


def _dynamic_layout(value: Any) -> DynamicMig:
    """``dynamic`` or ``{dynamic: [profiles]}`` as a :class:`DynamicMig`."""
    baseline = [] if value == DYNAMIC else value.get(DYNAMIC)
    if isinstance(value, dict) and set(value) != {DYNAMIC}:
        raise ValueError(f"a dynamic layout has one key, `dynamic`: {_LAYOUT_FORMS}")
    if baseline is None:
        baseline = []
    if not isinstance(baseline, list) or not all(isinstance(p, str) for p in baseline):
        raise ValueError(f"the baseline of `dynamic` is a list of profiles: {_LAYOUT_FORMS}")
    for profile in baseline:
        mig_profile_slices(profile)
    return DynamicMig(baseline=tuple(baseline))


def _mig_layout(value: Any) -> Any:
    """``off`` (YAML reads it as false): a whole GPU; a non-empty list of profiles: MIG;
    ``dynamic`` or ``{dynamic: [...]}``: MIG on demand (:class:`DynamicMig`)."""
    if value is False or isinstance(value, DynamicMig):
        return value
    if value == DYNAMIC or isinstance(value, dict):
        return _dynamic_layout(value)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(_LAYOUT_FORMS)
    if not value:
        raise ValueError(
            "an empty list leaves the GPU in MIG mode with nothing to run on: write `off` "
            "for a whole GPU"
        )
    for profile in value:
        mig_profile_slices(profile)
    return value


#: A GPU in ``mig_layout``: its index or its UUID.
GpuKey = Annotated[int | str, AfterValidator(_gpu_key)]
#: A desired layout: ``False`` (written ``off``) for a whole GPU, the instance profiles, or
#: MIG on demand (``dynamic``).
MigLayout = Annotated[list[str] | Literal[False] | DynamicMig, BeforeValidator(_mig_layout)]


class GpuConfig(_Strict):
    backend: Literal["simulated", "nvml"] = "simulated"
    simulated: SimulatedInventory = Field(default_factory=SimulatedInventory)
    # Device UUIDs (GPU-… or MIG-…) never handed out by the allocator.
    reserved: list[str] = Field(default_factory=list)
    # The desired MIG layout per GPU (index or UUID): `off` for a whole GPU, or the
    # instance profiles. `ds01 admin mig plan` compares it with the GPUs, `apply` makes it.
    # `dynamic`: MIG slices made on demand (see DynamicMig).
    mig_layout: dict[GpuKey, MigLayout] = Field(default_factory=dict)
    # Seconds a slice made on demand that nobody holds is kept (a request of its profile
    # takes it meanwhile) before ds01d destroys it.
    mig_on_demand_keep_seconds: float = Field(default=300.0, ge=0, le=86400)
    # GPU energy metering and the CO₂ figure (see docs/admin.md, "Metrics").
    energy: EnergyConfig = Field(default_factory=EnergyConfig)

    @field_validator("mig_layout", mode="before")
    @classmethod
    def _no_layout(cls, value: Any) -> Any:
        return {} if value is None else value  # `mig_layout:` with nothing under it

    def dynamic_mig(self) -> dict[int | str, DynamicMig]:
        """The GPUs (index or UUID, as ``mig_layout`` names them) with MIG on demand."""
        return {k: v for k, v in self.mig_layout.items() if isinstance(v, DynamicMig)}
