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
  (``MIG 3g.20gb``) is the one asked for, at the memory slice the plan placed it
  (``nvmlDeviceCreateGpuInstanceWithPlacement``; a driver without that call places it
  itself), then one compute instance that takes all of it.

Drivers differ: an older one knows fewer profile ids (``Invalid Argument`` for the others,
skipped like ``Not Supported``), has only the version-1 profile query (whose rows have no
name: the name is made from slices and memory), or no placement calls; older bindings
return ``bytes`` where newer ones return ``str``.

Every NVML error stops the work on that GPU and is reported with the steps done before it.
ds01d calls this only for GPUs none of whose devices a container holds, under its
allocation lock. ``pynvml`` is passed in (the backend's, already initialised); the unit
tests run it with a model of the driver behind the real bindings (``tests/nvml_driver.py``).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from ds01.config.gpu_config import MIG_PROFILE_RE
from ds01.errors import DeviceInUse, SystemFault
from ds01.gpu.backend import MigApplied
from ds01.model.mig import MigStep
from ds01.model.mig_placement import MigPlacementTable, MigProfileShape


def text(value: bytes | str) -> str:
    """A string NVML gave: ``str`` from nvidia-ml-py 11.5 on, ``bytes`` from older bindings
    (and from every ``char[]`` field of a structure)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def handle_by_uuid(nvml: ModuleType, device_uuid: str) -> Any:
    """The handle of the GPU or MIG device ``device_uuid``. Given as bytes, which every
    version of the bindings passes through (older ones cannot encode a ``str``).

    Raises:
        pynvml.NVMLError: no such device (``NotFound``), or NVML failed.
    """
    return nvml.nvmlDeviceGetHandleByUUID(device_uuid.encode())


def mig_profile_name(slices: int, memory_mib: int) -> str:
    """MIG profile name from compute slices and memory in MiB: ``"{slices}g.{GB}gb"``.

    The memory is rounded *up* to whole GiB, because NVML reports an instance's memory
    below the size in its name: an A100-40GB ``1g.5gb`` has 4864 MiB, a ``2g.10gb``
    9856 MiB, a ``3g.20gb`` 20096 MiB. NVIDIA's naming is not a formula on every GPU, so
    this is only the fallback when NVML does not give the name.
    """
    return f"{slices}g.{math.ceil(memory_mib / 1024)}gb"


def profile_name(row: Any) -> str | None:
    """A GPU-instance profile row's name without ``MIG `` (``"1g.5gb"``, ``"1g.5gb+me"``).

    Drivers that only have the version-1 query give rows without a name: the name is then
    made from the row's slices and memory (``+me`` variants then read as their plain
    profile); ``None`` when the row has no memory size either.
    """
    raw = getattr(row, "name", None)
    if raw is not None:
        return text(raw).strip().removeprefix("MIG ").strip() or None
    memory_mib = int(getattr(row, "memorySizeMB", 0) or 0)
    return mig_profile_name(int(row.sliceCount), memory_mib) if memory_mib > 0 else None


def _profile_info(nvml: ModuleType, handle: Any, index: int) -> Any | None:
    """Row ``index`` of the GPU-instance profile table, ``None`` if the driver has none.

    ``Invalid Argument`` is an index this driver does not know (the bindings know up to
    ``NVML_GPU_INSTANCE_PROFILE_COUNT``, older drivers fewer), ``Not Supported`` one this
    GPU lacks (or MIG mode is off): both are skipped, as NVIDIA's mig-parted does. A driver
    without the version-2 query is asked the version-1 one.
    """
    skipped = (nvml.NVMLError_NotSupported, nvml.NVMLError_InvalidArgument)
    try:
        return nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index)
    except skipped:
        return None
    except nvml.NVMLError_FunctionNotFound:
        try:
            return nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, index, version=1)
        except skipped:
            return None


def gpu_instance_profiles(nvml: ModuleType, handle: Any) -> Iterator[Any]:
    """Every row of the GPU's GPU-instance profile table (``nvidia-smi mig -lgip``).

    Raises:
        pynvml.NVMLError: the table cannot be read (no permission, GPU lost, …).
    """
    for index in range(int(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0))):
        info = _profile_info(nvml, handle, index)
        if info is not None and int(info.sliceCount) > 0:
            yield info


def _named_rows(nvml: ModuleType, handle: Any) -> dict[str, Any]:
    """The profile table by name; of two rows with one name (a name made from memory) the
    first, which is the plain profile."""
    rows: dict[str, Any] = {}
    for row in gpu_instance_profiles(nvml, handle):
        name = profile_name(row)
        if name is not None:
            rows.setdefault(name, row)
    return rows


def offered_profiles(nvml: ModuleType, handle: Any) -> tuple[str, ...] | None:
    """The plain MIG profiles (``3g.20gb``; not ``1g.5gb+me``) the GPU offers, largest
    first; ``None`` when its table cannot be read (MIG not supported, or turned off)."""
    try:
        rows = _named_rows(nvml, handle)
    except nvml.NVMLError:
        return None
    plain = [(int(r.sliceCount), n) for n, r in rows.items() if MIG_PROFILE_RE.match(n)]
    return tuple(n for _, n in sorted(plain, key=lambda p: (-p[0], p[1]))) or None


def _possible_placements(nvml: ModuleType, handle: Any, profile_id: int) -> list[tuple[int, int]]:
    """``(start, size)`` of every placement the driver allows for ``profile_id``.

    Raises:
        pynvml.NVMLError: ``FunctionNotFound`` on a driver without placements, or another
            failure.
    """
    count = ctypes.c_uint(0)
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, None, ctypes.byref(count))
    array = (nvml.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
    nvml.nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, array, ctypes.byref(count))
    return [(int(array[i].start), int(array[i].size)) for i in range(count.value)]


def placement_table(nvml: ModuleType, handle: Any) -> MigPlacementTable | None:
    """The GPU's plain profiles and their placements as its driver gives them (``nvidia-smi
    mig -lgipp``); ``None`` when it cannot (MIG off, or a driver without placements)."""
    try:
        rows = _named_rows(nvml, handle)
        shapes = []
        for name, row in rows.items():
            if not MIG_PROFILE_RE.match(name):
                continue
            placements = _possible_placements(nvml, handle, int(row.id))
            if placements:
                size = placements[0][1]
                starts = tuple(sorted(start for start, _ in placements))
                shapes.append(MigProfileShape(name, int(row.sliceCount), size, starts))
    except nvml.NVMLError:
        return None
    if not shapes:
        return None
    return MigPlacementTable(
        memory_slices=max(start + s.size for s in shapes for start in s.starts),
        compute_slices=max(s.compute_slices for s in shapes),
        profiles=tuple(sorted(shapes, key=lambda s: (-s.size, -s.compute_slices, s.name))),
    )


def _gpu_instances(nvml: ModuleType, handle: Any) -> list[Any]:
    """Every GPU instance of the GPU, of any profile."""
    found: list[Any] = []
    for info in gpu_instance_profiles(nvml, handle):
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
        skipped = (nvml.NVMLError_NotSupported, nvml.NVMLError_InvalidArgument)
        try:
            info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gpu_instance, index, shared)
        except skipped:
            continue
        except nvml.NVMLError_FunctionNotFound:
            try:
                info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gpu_instance, index, shared, version=1
                )
            except skipped:
                continue
        if int(info.sliceCount) > 0:
            yield info


def _destroy_gpu_instance(nvml: ModuleType, gpu_instance: Any) -> None:
    """Destroy ``gpu_instance``'s compute instances, then it."""
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


def _destroy_all(nvml: ModuleType, handle: Any) -> int:
    """Destroy every compute and GPU instance of the GPU; return how many GPU instances."""
    gpu_instances = _gpu_instances(nvml, handle)
    for gpu_instance in gpu_instances:
        _destroy_gpu_instance(nvml, gpu_instance)
    return len(gpu_instances)


def _set_mig_mode(nvml: ModuleType, handle: Any, enable: bool) -> bool:
    """Ask for MIG mode on or off; return whether it is in force now (``False``: pending
    until the GPU is reset)."""
    mode = nvml.NVML_DEVICE_MIG_ENABLE if enable else nvml.NVML_DEVICE_MIG_DISABLE
    nvml.nvmlDeviceSetMigMode(handle, mode)
    current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    return int(current) == int(mode)


def _create_gpu_instance(nvml: ModuleType, handle: Any, row: Any, step: MigStep) -> Any:
    """A GPU instance of ``row``'s profile at the step's planned start; where the driver has
    no placement API, or the plan none, wherever the driver puts it.

    Raises:
        ds01.errors.SystemFault: the driver offers no placement at the planned start.
        pynvml.NVMLError: the driver refused (``InsufficientResources``: the place is taken).
    """
    if step.start is not None:
        try:
            placements = _possible_placements(nvml, handle, int(row.id))
        except nvml.NVMLError_FunctionNotFound:
            placements = None  # an older driver: it places instances itself
        if placements is not None:
            size = next((z for start, z in placements if start == step.start), None)
            if size is None:
                offered = ", ".join(str(start) for start, _ in placements) or "none"
                raise SystemFault(
                    f"the driver offers no placement of {step.profile} at memory slice "
                    f"{step.start} (it offers starts: {offered})"
                )
            placement = nvml.c_nvmlGpuInstancePlacement_t(step.start, size)
            try:
                return nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
                    handle, int(row.id), ctypes.byref(placement)
                )
            except nvml.NVMLError_FunctionNotFound:
                pass
    return nvml.nvmlDeviceCreateGpuInstance(handle, int(row.id))


def _create(nvml: ModuleType, handle: Any, step: MigStep) -> Any:
    """A GPU instance of the step's profile and one compute instance that takes all of it;
    returns the GPU instance."""
    profile = step.profile or ""
    rows = _named_rows(nvml, handle)
    row = rows.get(profile)
    if row is None:
        offered = ", ".join(n for n in rows if MIG_PROFILE_RE.match(n)) or "none"
        raise SystemFault(f"this GPU has no MIG profile {profile} (it offers: {offered})")
    gpu_instance = _create_gpu_instance(nvml, handle, row, step)
    whole = [
        info
        for info in _compute_instance_profiles(nvml, gpu_instance)
        if int(info.sliceCount) == int(row.sliceCount)
    ]
    if not whole:
        nvml.nvmlGpuInstanceDestroy(gpu_instance)
        raise SystemFault(f"no compute-instance profile takes a whole {profile} instance")
    nvml.nvmlGpuInstanceCreateComputeInstance(gpu_instance, int(whole[0].id))
    return gpu_instance


def create_one(nvml: ModuleType, handle: Any, gpu_index: int, profile: str, start: int) -> int:
    """Make one ``profile`` instance at memory slice ``start``, the others left alone;
    return its GPU-instance id.

    Raises:
        ds01.errors.SystemFault: the driver refused (the place is taken, no such profile).
    """
    step = MigStep("create", profile, start=start)
    try:
        gpu_instance = _create(nvml, handle, step)
        return int(nvml.nvmlGpuInstanceGetInfo(gpu_instance).id)
    except nvml.NVMLError as exc:
        raise SystemFault(f"GPU {gpu_index}: {step.describe()} failed: NVML: {exc}") from exc


def destroy_one(nvml: ModuleType, handle: Any, gpu_index: int, instance_id: int) -> None:
    """Destroy GPU instance ``instance_id`` (and its compute instances), the others left
    alone.

    Raises:
        ds01.errors.DeviceInUse: a process runs on it (NVML's ``InUse``).
        ds01.errors.SystemFault: the driver refused for another reason.
    """
    try:
        _destroy_gpu_instance(nvml, nvml.nvmlDeviceGetGpuInstanceById(handle, instance_id))
    except nvml.NVMLError as exc:
        what = f"GPU {gpu_index}: destroying MIG GPU instance {instance_id} failed: NVML: {exc}"
        cause: BaseException = exc
        if isinstance(cause, getattr(nvml, "NVMLError_InUse", ())):
            raise DeviceInUse(what + " (a process still runs on it)") from cause
        raise SystemFault(what) from cause


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
                _create(nvml, handle, step)
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


__all__ = [
    "apply_steps",
    "create_one",
    "destroy_one",
    "gpu_instance_profiles",
    "handle_by_uuid",
    "mig_profile_name",
    "offered_profiles",
    "placement_table",
    "profile_name",
    "text",
]
