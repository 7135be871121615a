"""Changing a GPU's MIG layout through NVML: what ``ds01 admin mig apply`` does on real GPUs.

The steps come from ``ds01.core.mig`` (destroy every instance, switch MIG mode, create the
desired instances largest first). On NVML (Command line equivalents in brackets):

- **destroy**: every compute instance and then every GPU instance of the GPU, found through
  the GPU-instance profile table (``nvidia-smi mig -dci; nvidia-smi mig -dgi``). All of
  them, not only the listed MIG devices: a GPU instance without a compute instance is no
  MIG device but still takes slices;
- **MIG mode** (``nvidia-smi -i N -mig 1``): ``nvmlDeviceSetMigMode``. When the change
  needs a GPU reset the mode stays *pending*: the steps after it are left for the next
  ``apply``, after ``nvidia-smi -r -i N``;
- **create** (``nvidia-smi mig -cgi PROFILE -C``): a GPU instance of the profile whose name
  (``MIG 3g.20gb``) is the one asked for, then one compute instance that takes all of it.

Every NVML error stops the work on that GPU and is reported with the steps done before it.
ds01d calls this only for GPUs none of whose devices a container holds, under its
allocation lock. ``pynvml`` is passed in (the backend's, already initialised), so the unit
tests drive this with a fake module.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from ds01.config.gpu_config import MIG_PROFILE_RE
from ds01.errors import SystemFault
from ds01.gpu.backend import MigApplied
from ds01.model.mig import MigStep


def _profile_name(raw: bytes | str) -> str:
    """``b"MIG 1g.5gb"`` → ``"1g.5gb"``."""
    name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return name.strip().removeprefix("MIG ").strip()


def _gpu_instance_profiles(nvml: ModuleType, handle: Any) -> Iterator[Any]:
    """Every row of the GPU's GPU-instance profile table (``nvidia-smi mig -lgip``)."""
    for index in range(int(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0))):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
        except nvml.NVMLError_NotSupported:
            continue
        except nvml.NVMLError_FunctionNotFound:  # an old driver: the v1 structure
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index, version=1)
            except nvml.NVMLError_NotSupported:
                continue
        if int(info.sliceCount) > 0:
            yield info


def offered_profiles(nvml: ModuleType, handle: Any) -> tuple[str, ...] | None:
    """The plain MIG profiles (``3g.20gb``; not ``1g.5gb+me``) the GPU offers, largest
    first; ``None`` when its table cannot be read (MIG not supported, or turned off)."""
    try:
        rows = list(_gpu_instance_profiles(nvml, handle))
    except nvml.NVMLError:
        return None
    names = [(int(r.sliceCount), _profile_name(r.name)) for r in rows]
    plain = [name for _, name in sorted(names, key=lambda n: (-n[0], n[1]))]
    return tuple(dict.fromkeys(n for n in plain if MIG_PROFILE_RE.match(n))) or None


def _gpu_instances(nvml: ModuleType, handle: Any) -> list[Any]:
    """Every GPU instance of the GPU, of any profile."""
    found: list[Any] = []
    for info in _gpu_instance_profiles(nvml, handle):
        slots = max(int(info.instanceCount), 1)
        array = (nvml.c_nvmlGpuInstance_t * slots)()
        count = ctypes.c_uint(0)
        nvml.nvmlDeviceGetGpuInstances(handle, int(info.id), array, ctypes.byref(count))
        found += [array[i] for i in range(count.value)]
    return found


def _compute_instance_profiles(nvml: ModuleType, gpu_instance: Any) -> Iterator[Any]:
    """Every compute-instance profile a GPU instance offers (shared engines)."""
    shared = int(getattr(nvml, "NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED", 0))
    for index in range(int(getattr(nvml, "NVML_COMPUTE_INSTANCE_PROFILE_COUNT", 0))):
        try:
            info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gpu_instance, index, shared)
        except nvml.NVMLError_NotSupported:
            continue
        except nvml.NVMLError_FunctionNotFound:
            try:
                info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gpu_instance, index, shared, version=1
                )
            except nvml.NVMLError_NotSupported:
                continue
        if int(info.sliceCount) > 0:
            yield info


def _destroy_all(nvml: ModuleType, handle: Any) -> int:
    """Destroy every compute and GPU instance of the GPU; return how many GPU instances."""
    gpu_instances = _gpu_instances(nvml, handle)
    for gpu_instance in gpu_instances:
        for info in _compute_instance_profiles(nvml, gpu_instance):
            slots = max(int(info.instanceCount), 1)
            array = (nvml.c_nvmlComputeInstance_t * slots)()
            count = ctypes.c_uint(0)
            nvml.nvmlGpuInstanceGetComputeInstances(
                gpu_instance, int(info.id), array, ctypes.byref(count)
            )
            for i in range(count.value):
                nvml.nvmlComputeInstanceDestroy(array[i])
        nvml.nvmlGpuInstanceDestroy(gpu_instance)
    return len(gpu_instances)


def _set_mig_mode(nvml: ModuleType, handle: Any, enable: bool) -> bool:
    """Ask for MIG mode on or off; return whether it is in force now (``False``: pending
    until the GPU is reset)."""
    mode = nvml.NVML_DEVICE_MIG_ENABLE if enable else nvml.NVML_DEVICE_MIG_DISABLE
    nvml.nvmlDeviceSetMigMode(handle, mode)
    current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    return int(current) == int(mode)


def _create(nvml: ModuleType, handle: Any, profile: str) -> None:
    """A GPU instance of ``profile`` and one compute instance that takes all of it."""
    rows = {_profile_name(r.name): r for r in _gpu_instance_profiles(nvml, handle)}
    row = rows.get(profile)
    if row is None:
        offered = ", ".join(n for n in rows if MIG_PROFILE_RE.match(n)) or "none"
        raise SystemFault(f"this GPU has no MIG profile {profile} (it offers: {offered})")
    gpu_instance = nvml.nvmlDeviceCreateGpuInstance(handle, int(row.id))
    whole = [
        info
        for info in _compute_instance_profiles(nvml, gpu_instance)
        if int(info.sliceCount) == int(row.sliceCount)
    ]
    if not whole:
        nvml.nvmlGpuInstanceDestroy(gpu_instance)
        raise SystemFault(f"no compute-instance profile takes a whole {profile} instance")
    nvml.nvmlGpuInstanceCreateComputeInstance(gpu_instance, int(whole[0].id))


def apply_steps(
    nvml: ModuleType, handle: Any, gpu_index: int, steps: Sequence[MigStep]
) -> MigApplied:
    """Carry out ``steps`` on the GPU ``handle`` (see the module docstring).

    Raises:
        ds01.errors.SystemFault: a step failed; the message names it and the steps done.
    """
    done: list[str] = []
    destroyed = False
    for step in steps:
        try:
            if step.action == "destroy":
                if not destroyed:  # all at once, orphan GPU instances too
                    _destroy_all(nvml, handle)
                    destroyed = True
            elif step.action in ("enable_mig", "disable_mig"):
                if not _set_mig_mode(nvml, handle, step.action == "enable_mig"):
                    done.append(f"{step.describe()} (pending)")
                    return MigApplied(
                        done=tuple(done),
                        pending_reset=True,
                        message=f"GPU {gpu_index}: the MIG mode change takes effect after a "
                        f"GPU reset: `nvidia-smi -r -i {gpu_index}` (no process may use the "
                        "GPU), then `ds01 admin mig apply` again for the rest.",
                    )
            else:
                _create(nvml, handle, step.profile or "")
        except (nvml.NVMLError, SystemFault) as exc:
            reason = exc.message if isinstance(exc, SystemFault) else f"NVML: {exc}"
            if isinstance(exc, nvml.NVMLError_NoPermission):
                reason += " (ds01d must run as root)"
            elif isinstance(exc, getattr(nvml, "NVMLError_InUse", ())):
                reason += " (a process still uses the GPU: `nvidia-smi` shows it)"
            before = "; ".join(done) or "nothing"
            raise SystemFault(
                f"GPU {gpu_index}: {step.describe()} failed: {reason}. Done before: {before}. "
                "The GPU may be half changed: `ds01 admin mig plan` shows it now."
            ) from exc
        done.append(step.describe())
    return MigApplied(done=tuple(done))


__all__ = ["apply_steps", "offered_profiles"]
