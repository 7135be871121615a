"""A model of the NVIDIA driver behind the real ``pynvml`` (nvidia-ml-py), for tests.

Only the driver is replaced. ``pynvml`` loads ``libnvidia-ml.so.1`` with ``CDLL`` in
``nvmlInit`` and looks every C function up on it (``_nvmlGetFunctionPointer``);
:func:`install` makes that ``CDLL`` return a :class:`NvmlDriver`'s library, whose
attributes are Python functions with the C functions' names and signatures. They read the
ctypes arguments ``pynvml`` passes, fill the structures it passes by reference and return
NVML return codes, so ``pynvml``'s own wrappers, structure versions, error classes
(``NVMLError_InvalidArgument``, …) and string decoding run for real.

The boards (:data:`A100_SXM4_40GB`, :data:`A100_SXM4_80GB`, :data:`H100_SXM5_80GB`) carry
the GPU-instance profile tables of NVIDIA's MIG user guide (profile indices, ids, names with
``+me`` variants, slice counts, memory, placements over 8 memory slices; the placements
themselves come from ``ds01.model.mig_placement``, which production code uses too). The
driver behaves as a real one does where ds01 cares:

- ``Invalid Argument`` for a profile index the driver does not know (``known_profiles``:
  older drivers know fewer than the 18 of these bindings), ``Not Supported`` for one it
  knows that the board lacks, and for every profile while MIG mode is off;
- ``Not Found`` for an empty MIG device slot or an unknown UUID;
- ``Not Supported`` for utilisation, power and energy of MIG devices (and utilisation of a
  GPU in MIG mode);
- ``In Use`` when a compute instance with processes, a GPU instance with compute
  instances, or MIG mode with instances is destroyed or turned off;
- ``Insufficient Resources`` for a GPU instance whose placement is taken;
- ``missing``: C functions an older driver lacks (``Function Not Found``);
- ``str_bindings=False``: bindings older than nvidia-ml-py 11.5, whose string functions
  return ``bytes``.
"""

from __future__ import annotations

import ctypes
import itertools
import uuid as uuid_module
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest

from ds01.model.mig_placement import A100_40GB_TABLE, A100_H100_80GB_TABLE, MigPlacementTable

MIB = 1024 * 1024
SUCCESS = pynvml.NVML_SUCCESS

# -- boards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GiProfile:
    """One row of a board's GPU-instance profile table (``nvidia-smi mig -lgip``).

    ``index`` is the ``NVML_GPU_INSTANCE_PROFILE_*`` constant a program asks for, ``id``
    the profile id the driver answers with (the ``ID`` column)."""

    index: int
    id: int
    name: str
    slices: int
    instance_count: int
    memory_mib: int
    size: int
    starts: tuple[int, ...]


@dataclass(frozen=True)
class Board:
    name: str
    memory_mib: int
    profiles: tuple[GiProfile, ...] = ()

    @property
    def supports_mig(self) -> bool:
        return bool(self.profiles)


# (profile index, profile id, instances) of each shape on A100 and H100 boards.
_SHAPES = {
    "7g": (pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE, 0, 1),
    "4g": (pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE, 5, 1),
    "3g": (pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 9, 2),
    "2g": (pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE, 14, 3),
    "1g.2": (pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2, 15, 4),
    "1g": (pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 19, 7),
}
_ME = (pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1, 20, 1)  # 1g +me: the one media engine


def _profiles(table: MigPlacementTable, memory_mib: dict[str, int]) -> tuple[GiProfile, ...]:
    """The table's profiles with NVML's indices, ids and memory, plus the ``+me`` one."""
    rows: list[GiProfile] = []
    for shape in table.profiles:
        key = shape.name.split(".")[0] + (".2" if shape.name[0] == "1" and shape.size == 2 else "")
        index, profile_id, count = _SHAPES[key]
        mib = memory_mib[shape.name]
        rows.append(
            GiProfile(
                index,
                profile_id,
                shape.name,
                shape.compute_slices,
                count,
                mib,
                shape.size,
                shape.starts,
            )
        )
        if key == "1g":
            index, profile_id, count = _ME
            rows.append(
                GiProfile(index, profile_id, f"{shape.name}+me", 1, count, mib, 1, shape.starts)
            )
    return tuple(sorted(rows, key=lambda r: r.index))


A100_SXM4_40GB = Board(
    "NVIDIA A100-SXM4-40GB",
    40960,
    _profiles(
        A100_40GB_TABLE,
        {
            "1g.5gb": 4864,
            "1g.10gb": 9856,
            "2g.10gb": 9856,
            "3g.20gb": 20096,
            "4g.20gb": 20096,
            "7g.40gb": 40192,
        },
    ),
)
_A100_80GB_MEMORY = {
    "1g.10gb": 9856,
    "1g.20gb": 19968,
    "2g.20gb": 19968,
    "3g.40gb": 40192,
    "4g.40gb": 40192,
    "7g.80gb": 81408,
}
A100_SXM4_80GB = Board(
    "NVIDIA A100-SXM4-80GB", 81920, _profiles(A100_H100_80GB_TABLE, _A100_80GB_MEMORY)
)
A100_PCIE_80GB = Board("NVIDIA A100 80GB PCIe", 81920, A100_SXM4_80GB.profiles)
H100_SXM5_80GB = Board(
    "NVIDIA H100 80GB HBM3",
    81559,
    _profiles(
        A100_H100_80GB_TABLE,
        {
            "1g.10gb": 9984,
            "1g.20gb": 20096,
            "2g.20gb": 20096,
            "3g.40gb": 40448,
            "4g.40gb": 40448,
            "7g.80gb": 81408,
        },
    ),
)
RTX_A6000 = Board("NVIDIA RTX A6000", 49140)
"""A board without MIG."""

# Compute-instance profile index -> compute slices (NVML_COMPUTE_INSTANCE_PROFILE_*_SLICE).
CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}

# -- driver state ---------------------------------------------------------------------------


@dataclass(eq=False)
class ComputeInstance:
    """A compute instance: one MIG device."""

    id: int
    profile_index: int
    slices: int
    uuid: str
    slot: int  # its MIG device index on the GPU
    processes: int = 0
    memory_used_mib: int = 0


@dataclass(eq=False)
class GpuInstance:
    id: int
    profile: GiProfile
    start: int
    compute: list[ComputeInstance] = field(default_factory=list)


@dataclass(eq=False)
class Gpu:
    """One physical GPU and what its driver knows about it."""

    board: Board
    uuid: str
    mig: bool = False  # current MIG mode
    pending_mig: bool | None = None  # after a reset; None: same as current
    reset_needed: bool = False  # a MIG mode change waits for a GPU reset
    instances: list[GpuInstance] = field(default_factory=list)
    utilization_percent: int = 0
    memory_used_mib: int = 0
    processes: int = 0
    power_mw: int | None = None  # None: Not Supported (no sensor)
    energy_mj: int | None = None
    lost: bool = False  # fell off the bus: every query answers GPU is lost

    def mig_devices(self) -> Iterator[tuple[GpuInstance, ComputeInstance]]:
        for gpu_instance in self.instances:
            for compute in gpu_instance.compute:
                yield gpu_instance, compute


@dataclass(eq=False)
class MigDevice:
    """The device handle of a MIG device (what nvmlDeviceGetMigDeviceHandleByIndex gives)."""

    gpu: Gpu
    gpu_instance: GpuInstance
    compute: ComputeInstance


Handle = Gpu | MigDevice | GpuInstance | ComputeInstance


class NvmlDriver:
    """The driver and its GPUs. Build GPUs with :meth:`gpu`, split them with :meth:`split`.

    Attributes:
        gpus: the GPUs, by index.
        init_error: the code ``nvmlInit`` answers (``None``: success); ``library=False``
            at :func:`install` models a machine without ``libnvidia-ml.so.1``.
        known_profiles: GPU-instance profile indices the driver knows; higher ones are
            ``Invalid Argument``.
        missing: C functions this driver lacks (set before the first call: pynvml keeps
            the functions it looked up).
        fail: C function name -> the return code it answers from now on.
        calls: every C function called, in order.
        driver_version, cuda_version: what ``nvmlSystemGetDriverVersion`` and
            ``nvmlSystemGetCudaDriverVersion`` answer (CUDA as the driver encodes it:
            12040 is 12.4).
    """

    def __init__(self, *, known_profiles: int = pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT) -> None:
        self.gpus: list[Gpu] = []
        self.init_error: int | None = None
        self.known_profiles = known_profiles
        self.missing: set[str] = set()
        self.fail: dict[str, int] = {}
        self.calls: list[str] = []
        self.driver_version = b"550.54.15"
        self.cuda_version = 12040
        self.init_calls = 0
        self.shutdown_calls = 0
        self._addresses: dict[int, Handle] = {}
        self._address_of: dict[int, int] = {}
        self._next_address = itertools.count(0x1000, 0x10)
        self._ids = itertools.count(1)
        self._mig_device_objects: dict[int, MigDevice] = {}

    # -- building the machine ----------------------------------------------------------------

    def gpu(self, board: Board = A100_SXM4_40GB, *, mig: bool = False, **state: Any) -> Gpu:
        """Add a GPU (UUID ``GPU-`` + a stable uuid5 of its index)."""
        name = f"ds01-test/gpu/{len(self.gpus)}"
        gpu = Gpu(board, f"GPU-{uuid_module.uuid5(uuid_module.NAMESPACE_DNS, name)}", mig, **state)
        self.gpus.append(gpu)
        return gpu

    def split(self, gpu: Gpu, *profiles: str | tuple[str, int]) -> list[ComputeInstance]:
        """Create GPU instances (``"3g.20gb"`` at the driver's first free start, or
        ``("3g.20gb", 4)``) each with one compute instance over all of it, as ``nvidia-smi
        mig -cgi … -C`` does; returns the compute instances (the MIG devices)."""
        made = []
        for wanted in profiles:
            name, start = wanted if isinstance(wanted, tuple) else (wanted, None)
            profile = next(p for p in gpu.board.profiles if p.name == name)
            code, gpu_instance = self._create_gpu_instance(gpu, profile, start)
            assert code == SUCCESS and gpu_instance is not None, f"cannot place {wanted}"
            made.append(self._create_compute(gpu, gpu_instance, _ci_index(profile.slices)))
        return made

    def gpu_instance_without_compute(self, gpu: Gpu, profile_name: str) -> GpuInstance:
        """A GPU instance nobody gave a compute instance: no MIG device, but it takes slices."""
        profile = next(p for p in gpu.board.profiles if p.name == profile_name)
        code, gpu_instance = self._create_gpu_instance(gpu, profile, None)
        assert code == SUCCESS and gpu_instance is not None
        return gpu_instance

    def add_compute(self, gpu: Gpu, gpu_instance: GpuInstance, slices: int) -> ComputeInstance:
        """A compute instance of ``slices`` in ``gpu_instance`` (``nvidia-smi mig -cci``)."""
        return self._create_compute(gpu, gpu_instance, _ci_index(slices))

    # -- the library pynvml loads --------------------------------------------------------

    @property
    def library(self) -> _Library:
        return _Library(self)

    def address(self, obj: Handle) -> int:
        """The opaque handle value the driver gives out for ``obj`` (stable)."""
        key = id(obj)
        if key not in self._address_of:
            address = next(self._next_address)
            self._address_of[key] = address
            self._addresses[address] = obj
        return self._address_of[key]

    def resolve(self, handle: Any) -> Handle | None:
        address = ctypes.cast(handle, ctypes.c_void_p).value
        return None if address is None else self._addresses.get(address)

    def _set_handle(self, ref: Any, obj: Handle) -> None:
        ctypes.c_void_p.from_buffer(ref._obj).value = self.address(obj)

    def _pointer(self, obj: Handle, pointer_type: Any) -> Any:
        return ctypes.cast(ctypes.c_void_p(self.address(obj)), pointer_type)

    # -- what creating and destroying does ------------------------------------------------

    def _free(self, gpu: Gpu, profile: GiProfile, start: int) -> bool:
        span = set(range(start, start + profile.size))
        taken = {s for gi in gpu.instances for s in range(gi.start, gi.start + gi.profile.size)}
        used = sum(gi.profile.slices for gi in gpu.instances)
        same = sum(1 for gi in gpu.instances if gi.profile.id == profile.id)
        return (
            span.isdisjoint(taken) and used + profile.slices <= 7 and same < profile.instance_count
        )

    def _create_gpu_instance(
        self, gpu: Gpu, profile: GiProfile, start: int | None
    ) -> tuple[int, GpuInstance | None]:
        if not gpu.mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED, None
        if start is not None and start not in profile.starts:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT, None
        starts = profile.starts if start is None else (start,)
        for candidate in starts:
            if self._free(gpu, profile, candidate):
                gpu_instance = GpuInstance(next(self._ids), profile, candidate)
                gpu.instances.append(gpu_instance)
                return SUCCESS, gpu_instance
        return pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES, None

    def _create_compute(
        self, gpu: Gpu, gpu_instance: GpuInstance, ci_index: int
    ) -> ComputeInstance:
        taken = {c.slot for _, c in gpu.mig_devices()}
        slot = next(s for s in itertools.count() if s not in taken)
        number = next(self._ids)
        name = f"{gpu.uuid}/ci/{number}"
        compute = ComputeInstance(
            number,
            ci_index,
            CI_SLICES[ci_index],
            f"MIG-{uuid_module.uuid5(uuid_module.NAMESPACE_DNS, name)}",
            slot,
        )
        gpu_instance.compute.append(compute)
        return compute

    def gpu_of(self, obj: Handle) -> Gpu:
        if isinstance(obj, Gpu):
            return obj
        if isinstance(obj, MigDevice):
            return obj.gpu
        for gpu in self.gpus:
            for gpu_instance in gpu.instances:
                if obj is gpu_instance or obj in gpu_instance.compute:
                    return gpu
        raise LookupError(obj)


def _ci_index(slices: int) -> int:
    return next(index for index, s in CI_SLICES.items() if s == slices)


def _out(ref: Any) -> Any:
    """The object a ``byref(...)`` argument points to."""
    return ref._obj


class _Library:
    """``libnvidia-ml.so.1``: ``getattr(lib, "nvmlX")`` is the C function ``nvmlX``."""

    def __init__(self, driver: NvmlDriver) -> None:
        self._driver = driver

    def __getattr__(self, name: str) -> Callable[..., Any]:
        implementation = getattr(_CFunctions, name, None)
        if implementation is None or name in self._driver.missing or name.startswith("_"):
            raise AttributeError(name)
        driver = self._driver

        def call(*args: Any) -> Any:
            driver.calls.append(name)
            if name in driver.fail:
                return driver.fail[name]
            return implementation(driver, *args)

        return call


_ERROR_STRINGS = {
    pynvml.NVML_ERROR_IN_USE: b"In use by another client",
    pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES: b"Insufficient resources",
    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH: b"Argument version mismatch",
}


class _CFunctions:
    """The C functions, as plain functions of (driver, *C arguments) -> return code."""

    # -- library -----------------------------------------------------------------------------

    @staticmethod
    def nvmlInitWithFlags(d: NvmlDriver, flags: int) -> int:
        d.init_calls += 1
        return SUCCESS if d.init_error is None else d.init_error

    @staticmethod
    def nvmlErrorString(d: NvmlDriver, code: int) -> bytes:
        """The driver's words for the codes pynvml has no text of its own for."""
        return _ERROR_STRINGS.get(int(code), b"Unknown Error")

    @staticmethod
    def nvmlShutdown(d: NvmlDriver) -> int:
        d.shutdown_calls += 1
        return SUCCESS

    @staticmethod
    def nvmlSystemGetDriverVersion(d: NvmlDriver, buffer: Any, size: Any) -> int:
        if len(d.driver_version) >= size.value:
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        buffer.value = d.driver_version
        return SUCCESS

    @staticmethod
    def nvmlSystemGetCudaDriverVersion(d: NvmlDriver, version: Any) -> int:
        _out(version).value = d.cuda_version
        return SUCCESS

    # -- physical GPUs ---------------------------------------------------------------------

    @staticmethod
    def nvmlDeviceGetCount_v2(d: NvmlDriver, count: Any) -> int:
        _out(count).value = len(d.gpus)
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetHandleByIndex_v2(d: NvmlDriver, index: Any, device: Any) -> int:
        if not 0 <= index.value < len(d.gpus):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        d._set_handle(device, d.gpus[index.value])
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetHandleByUUID(d: NvmlDriver, uuid: Any, device: Any) -> int:
        wanted = uuid.value
        for gpu in d.gpus:
            if gpu.uuid.encode() == wanted:
                d._set_handle(device, gpu)
                return SUCCESS
            for gpu_instance, compute in gpu.mig_devices():
                if compute.uuid.encode() == wanted:
                    d._set_handle(device, _mig_device(d, gpu, gpu_instance, compute))
                    return SUCCESS
        return pynvml.NVML_ERROR_NOT_FOUND

    @staticmethod
    def nvmlDeviceGetUUID(d: NvmlDriver, device: Any, buffer: Any, size: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        buffer.value = (obj.uuid if isinstance(obj, Gpu) else obj.compute.uuid).encode()
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetName(d: NvmlDriver, device: Any, buffer: Any, size: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, Gpu):
            buffer.value = obj.board.name.encode()
        else:
            buffer.value = f"{obj.gpu.board.name} MIG {obj.gpu_instance.profile.name}".encode()
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetMemoryInfo(d: NvmlDriver, device: Any, memory: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, Gpu):
            total, used = obj.board.memory_mib, obj.memory_used_mib
        else:
            total, used = obj.gpu_instance.profile.memory_mib, obj.compute.memory_used_mib
        info = _out(memory)
        info.total, info.used, info.free = total * MIB, used * MIB, (total - used) * MIB
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetMigMode(d: NvmlDriver, device: Any, current: Any, pending: Any) -> int:
        gpu = _gpu(d, device)
        if isinstance(gpu, int):
            return gpu
        if not gpu.board.supports_mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        _out(current).value = int(gpu.mig)
        _out(pending).value = int(gpu.mig if gpu.pending_mig is None else gpu.pending_mig)
        return SUCCESS

    @staticmethod
    def nvmlDeviceSetMigMode(d: NvmlDriver, device: Any, mode: int, status: Any) -> int:
        gpu = _gpu(d, device)
        if isinstance(gpu, int):
            return gpu
        if not gpu.board.supports_mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        enable = int(mode) == pynvml.NVML_DEVICE_MIG_ENABLE
        if (not enable and gpu.instances) or gpu.processes:
            return pynvml.NVML_ERROR_IN_USE
        if gpu.reset_needed and enable != gpu.mig:
            gpu.pending_mig = enable
        else:
            gpu.mig, gpu.pending_mig = enable, None
        _out(status).value = SUCCESS
        return SUCCESS

    # -- GPU-instance profiles -------------------------------------------------------------

    @staticmethod
    def nvmlDeviceGetGpuInstanceProfileInfoV(
        d: NvmlDriver, device: Any, index: int, info: Any
    ) -> int:
        out = _out(info)
        if out.version != pynvml.nvmlGpuInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        return _profile_info(d, device, index, out, with_name=True)

    @staticmethod
    def nvmlDeviceGetGpuInstanceProfileInfo(
        d: NvmlDriver, device: Any, index: int, info: Any
    ) -> int:
        return _profile_info(d, device, index, _out(info), with_name=False)

    @staticmethod
    def nvmlDeviceGetGpuInstancePossiblePlacements_v2(
        d: NvmlDriver, device: Any, profile_id: int, placements: Any, count: Any
    ) -> int:
        found = _profile_by_id(d, device, profile_id)
        if isinstance(found, int):
            return found
        _, profile = found
        if placements is None:
            _out(count).value = len(profile.starts)
            return SUCCESS
        if _out(count).value < len(profile.starts):
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for i, start in enumerate(profile.starts):
            placements[i].start, placements[i].size = start, profile.size
        _out(count).value = len(profile.starts)
        return SUCCESS

    # -- GPU instances -----------------------------------------------------------------------

    @staticmethod
    def nvmlDeviceCreateGpuInstance(
        d: NvmlDriver, device: Any, profile_id: int, gpu_instance: Any
    ) -> int:
        return _create(d, device, profile_id, None, gpu_instance)

    @staticmethod
    def nvmlDeviceCreateGpuInstanceWithPlacement(
        d: NvmlDriver, device: Any, profile_id: int, placement: Any, gpu_instance: Any
    ) -> int:
        # The C function takes a pointer: a structure passed by value is a caller's bug.
        if not hasattr(placement, "_obj"):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        wanted = _out(placement)
        return _create(d, device, profile_id, (wanted.start, wanted.size), gpu_instance)

    @staticmethod
    def nvmlDeviceGetGpuInstances(
        d: NvmlDriver, device: Any, profile_id: int, array: Any, count: Any
    ) -> int:
        found = _profile_by_id(d, device, profile_id)
        if isinstance(found, int):
            return found
        gpu, _profile = found
        instances = [gi for gi in gpu.instances if gi.profile.id == profile_id]
        return _handles(d, instances, pynvml.c_nvmlGpuInstance_t, array, count)

    @staticmethod
    def nvmlDeviceGetGpuInstanceById(
        d: NvmlDriver, device: Any, instance_id: int, gpu_instance: Any
    ) -> int:
        gpu = _gpu(d, device)
        if isinstance(gpu, int):
            return gpu
        if not gpu.mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        for candidate in gpu.instances:
            if candidate.id == int(instance_id):
                d._set_handle(gpu_instance, candidate)
                return SUCCESS
        return pynvml.NVML_ERROR_NOT_FOUND

    @staticmethod
    def nvmlGpuInstanceGetInfo(d: NvmlDriver, gpu_instance: Any, info: Any) -> int:
        obj = d.resolve(gpu_instance)
        if not isinstance(obj, GpuInstance):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        out = _out(info)
        out.device = d._pointer(d.gpu_of(obj), pynvml.c_nvmlDevice_t)
        out.id, out.profileId = obj.id, obj.profile.id
        out.placement.start, out.placement.size = obj.start, obj.profile.size
        return SUCCESS

    @staticmethod
    def nvmlGpuInstanceDestroy(d: NvmlDriver, gpu_instance: Any) -> int:
        obj = d.resolve(gpu_instance)
        if not isinstance(obj, GpuInstance):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        if obj.compute:
            return pynvml.NVML_ERROR_IN_USE
        d.gpu_of(obj).instances.remove(obj)
        return SUCCESS

    # -- compute instances -------------------------------------------------------------------

    @staticmethod
    def nvmlGpuInstanceGetComputeInstanceProfileInfoV(
        d: NvmlDriver, gpu_instance: Any, index: int, engines: int, info: Any
    ) -> int:
        obj = d.resolve(gpu_instance)
        out = _out(info)
        if not isinstance(obj, GpuInstance):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        if out.version != pynvml.nvmlComputeInstanceProfileInfo_v2:
            return pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        if not 0 <= index < pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        slices = CI_SLICES.get(index)
        if slices is None or slices > obj.profile.slices:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        out.id, out.sliceCount = index, slices
        out.instanceCount = obj.profile.slices // slices
        out.name = f"MIG {slices}c.{obj.profile.name}".encode()
        return SUCCESS

    @staticmethod
    def nvmlGpuInstanceGetComputeInstances(
        d: NvmlDriver, gpu_instance: Any, profile_id: int, array: Any, count: Any
    ) -> int:
        obj = d.resolve(gpu_instance)
        if not isinstance(obj, GpuInstance):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        found = [c for c in obj.compute if c.profile_index == profile_id]
        return _handles(d, found, pynvml.c_nvmlComputeInstance_t, array, count)

    @staticmethod
    def nvmlGpuInstanceCreateComputeInstance(
        d: NvmlDriver, gpu_instance: Any, profile_id: int, compute: Any
    ) -> int:
        obj = d.resolve(gpu_instance)
        if not isinstance(obj, GpuInstance):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        slices = CI_SLICES.get(int(profile_id))
        if slices is None:
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        if sum(c.slices for c in obj.compute) + slices > obj.profile.slices:
            return pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
        made = d._create_compute(d.gpu_of(obj), obj, int(profile_id))
        d._set_handle(compute, made)
        return SUCCESS

    @staticmethod
    def nvmlComputeInstanceDestroy(d: NvmlDriver, compute: Any) -> int:
        obj = d.resolve(compute)
        if not isinstance(obj, ComputeInstance):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        if obj.processes:
            return pynvml.NVML_ERROR_IN_USE
        for gpu_instance in d.gpu_of(obj).instances:
            if obj in gpu_instance.compute:
                gpu_instance.compute.remove(obj)
        return SUCCESS

    # -- MIG devices -------------------------------------------------------------------------

    @staticmethod
    def nvmlDeviceGetMaxMigDeviceCount(d: NvmlDriver, device: Any, count: Any) -> int:
        gpu = _gpu(d, device)
        if isinstance(gpu, int):
            return gpu
        if not gpu.board.supports_mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        _out(count).value = 7
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetMigDeviceHandleByIndex(
        d: NvmlDriver, device: Any, index: Any, mig_device: Any
    ) -> int:
        gpu = _gpu(d, device)
        if isinstance(gpu, int):
            return gpu
        if not gpu.mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        for gpu_instance, compute in gpu.mig_devices():
            if compute.slot == index.value:
                d._set_handle(mig_device, _mig_device(d, gpu, gpu_instance, compute))
                return SUCCESS
        return pynvml.NVML_ERROR_NOT_FOUND

    @staticmethod
    def nvmlDeviceGetAttributes_v2(d: NvmlDriver, device: Any, attributes: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, Gpu):
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        out = _out(attributes)
        out.gpuInstanceSliceCount = obj.gpu_instance.profile.slices
        out.computeInstanceSliceCount = obj.compute.slices
        out.memorySizeMB = obj.gpu_instance.profile.memory_mib
        out.multiprocessorCount = 14 * obj.compute.slices
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetGpuInstanceId(d: NvmlDriver, device: Any, instance_id: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, Gpu):
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        _out(instance_id).value = obj.gpu_instance.id
        return SUCCESS

    # -- telemetry ---------------------------------------------------------------------------

    @staticmethod
    def nvmlDeviceGetUtilizationRates(d: NvmlDriver, device: Any, utilization: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, MigDevice) or obj.mig:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        _out(utilization).gpu = obj.utilization_percent
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetComputeRunningProcesses_v3(
        d: NvmlDriver, device: Any, count: Any, processes: Any
    ) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        running = obj.processes if isinstance(obj, Gpu) else obj.compute.processes
        if processes is None or _out(count).value < running:
            _out(count).value = running
            return SUCCESS if running == 0 else pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for i in range(running):
            processes[i].pid = 1000 + i
            processes[i].usedGpuMemory = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
        _out(count).value = running
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetPowerUsage(d: NvmlDriver, device: Any, milliwatts: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, MigDevice) or obj.power_mw is None:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        _out(milliwatts).value = obj.power_mw
        return SUCCESS

    @staticmethod
    def nvmlDeviceGetTotalEnergyConsumption(d: NvmlDriver, device: Any, millijoules: Any) -> int:
        obj = _device(d, device)
        if isinstance(obj, int):
            return obj
        if isinstance(obj, MigDevice) or obj.energy_mj is None:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        _out(millijoules).value = obj.energy_mj
        return SUCCESS


# -- helpers of the C functions ------------------------------------------------------------


def _mig_device(
    d: NvmlDriver, gpu: Gpu, gpu_instance: GpuInstance, compute: ComputeInstance
) -> MigDevice:
    """The one MigDevice object of ``compute`` (so that its handle value stays the same)."""
    cache = d._mig_device_objects
    if id(compute) not in cache:
        cache[id(compute)] = MigDevice(gpu, gpu_instance, compute)
    return cache[id(compute)]


def _device(d: NvmlDriver, handle: Any) -> Gpu | MigDevice | int:
    """The GPU or MIG device of a device handle, or the code to answer."""
    obj = d.resolve(handle)
    if not isinstance(obj, Gpu | MigDevice):
        return pynvml.NVML_ERROR_INVALID_ARGUMENT
    if d.gpu_of(obj).lost:
        return pynvml.NVML_ERROR_GPU_IS_LOST
    return obj


def _handles(d: NvmlDriver, objects: list[Any], ctype: Any, array: Any, count: Any) -> int:
    """Fill a caller's ``array`` with handles of ``objects`` and set ``count``, as NVML's
    list calls do (``INSUFFICIENT_SIZE`` when the array is too short)."""
    if len(objects) > len(array):
        return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
    for i, obj in enumerate(objects):
        array[i] = d._pointer(obj, ctype)
    _out(count).value = len(objects)
    return SUCCESS


def _gpu(d: NvmlDriver, handle: Any) -> Gpu | int:
    obj = _device(d, handle)
    if isinstance(obj, MigDevice):
        return pynvml.NVML_ERROR_INVALID_ARGUMENT
    return obj


def _profile_info(d: NvmlDriver, device: Any, index: int, out: Any, *, with_name: bool) -> int:
    gpu = _gpu(d, device)
    if isinstance(gpu, int):
        return gpu
    if not 0 <= index < d.known_profiles:
        return pynvml.NVML_ERROR_INVALID_ARGUMENT
    profile = next((p for p in gpu.board.profiles if p.index == index), None)
    if profile is None or not gpu.mig:
        return pynvml.NVML_ERROR_NOT_SUPPORTED
    out.id, out.sliceCount, out.instanceCount = profile.id, profile.slices, profile.instance_count
    out.memorySizeMB, out.multiprocessorCount = profile.memory_mib, 14 * profile.slices
    if with_name:
        out.name = f"MIG {profile.name}".encode()
    return SUCCESS


def _profile_by_id(d: NvmlDriver, device: Any, profile_id: int) -> tuple[Gpu, GiProfile] | int:
    gpu = _gpu(d, device)
    if isinstance(gpu, int):
        return gpu
    if not gpu.mig:
        return pynvml.NVML_ERROR_NOT_SUPPORTED
    profile = next((p for p in gpu.board.profiles if p.id == int(profile_id)), None)
    if profile is None:
        return pynvml.NVML_ERROR_INVALID_ARGUMENT
    return gpu, profile


def _create(
    d: NvmlDriver, device: Any, profile_id: int, placement: tuple[int, int] | None, out: Any
) -> int:
    found = _profile_by_id(d, device, profile_id)
    if isinstance(found, int):
        return found
    gpu, profile = found
    if placement is not None and placement[1] != profile.size:
        return pynvml.NVML_ERROR_INVALID_ARGUMENT
    code, gpu_instance = d._create_gpu_instance(
        gpu, profile, None if placement is None else placement[0]
    )
    if gpu_instance is not None:
        d._set_handle(out, gpu_instance)
    return code


# -- installing it -------------------------------------------------------------------------

#: The string functions of nvidia-ml-py that decode what the driver gives (and encode what
#: they are given) since 11.5; older bindings handed ``bytes`` through.
STRING_FUNCTIONS = ("nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetHandleByUUID")


def install(
    monkeypatch: pytest.MonkeyPatch,
    driver: NvmlDriver | None,
    *,
    str_bindings: bool = True,
) -> NvmlDriver | None:
    """Make the real ``pynvml`` load ``driver`` as its NVML library (``None``: there is no
    ``libnvidia-ml.so.1``), with nothing loaded or looked up yet; everything is undone at
    the end of the test."""

    def load(path: str, *args: Any, **kwargs: Any) -> _Library:
        if driver is None or path != "libnvidia-ml.so.1":
            raise OSError(f"{path}: cannot open shared object file: No such file or directory")
        return driver.library

    monkeypatch.setattr(pynvml, "CDLL", load)
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setattr(pynvml, "_nvmlLib_refcount", 0)
    # pynvml keeps the driver's error texts once asked: each test asks its own driver.
    monkeypatch.setattr(
        pynvml.NVMLError, "_errcode_to_string", dict(pynvml.NVMLError._errcode_to_string)
    )
    if not str_bindings:
        for name in STRING_FUNCTIONS:
            monkeypatch.setattr(pynvml, name, getattr(pynvml, name).__wrapped__)
    return driver


__all__ = [
    "A100_PCIE_80GB",
    "A100_SXM4_40GB",
    "A100_SXM4_80GB",
    "H100_SXM5_80GB",
    "RTX_A6000",
    "Board",
    "ComputeInstance",
    "GiProfile",
    "Gpu",
    "GpuInstance",
    "NvmlDriver",
    "install",
]
