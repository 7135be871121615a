"""GPU allocation decisions as pure functions over plain data.

Nothing here touches Docker, NVML, files or the clock. The daemon builds an
:class:`AllocationState` from the labels of its containers, calls :func:`allocate` under its
lock, creates the container with the chosen devices and records the result with
:meth:`AllocationState.with_holding`. Every rule the reference allocator got wrong is decided
here, once:

- devices are addressed by UUID; a device is free when nobody holds it and it is not
  reserved; a GPU in MIG mode offers only its MIG instances (none at all when it has none);
- quotas count GPU-equivalents with exact :class:`~fractions.Fraction` arithmetic: a whole
  GPU is 1, a MIG instance is its slices over its GPU's slices (never "every request weighs
  1.0", never "every MIG slice weighs 0.0");
- ``gpu_limit`` bounds a user's total over all their containers, ``max_gpus_per_container``
  bounds one container; the two are never confused;
- placement is deterministic best fit (smallest sufficient MIG instance, packed onto the GPU
  with the fewest free slices), not "first free slot by string order".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import NamedTuple

from ds01.config.gpu_config import mig_profile_memory_mib, mig_profile_slices
from ds01.errors import InvalidInput, NoCapacity, NotFound, QuotaExceeded
from ds01.model.device import DEFAULT_TOTAL_SLICES, Device, Inventory
from ds01.model.quota import GpuQuota

_STOP_OR_REMOVE_COMMANDS = "`container-stop NAME` / `container-remove NAME`"

#: The most devices one create may name (``docker run --gpus device=…``).
MAX_NAMED_DEVICES = 64
#: A device id a caller may name: a GPU's index as ``gpu-status`` shows it, a GPU's UUID or a
#: MIG instance's UUID (``MIG-<uuid>``, or a driver's older ``MIG-GPU-<uuid>/<gi>/<ci>``).
DEVICE_ID_PATTERN = r"^(?:[0-9]{1,3}|(?:GPU|MIG)-[A-Za-z0-9/-]{1,80})$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def is_device_id(text: str) -> bool:
    """Whether ``text`` has the form of a device id a caller may name (``DEVICE_ID_PATTERN``)."""
    return _DEVICE_ID.fullmatch(text) is not None


# --------------------------------------------------------------------------------------------
# Formatting of GPU-equivalents (the one place that turns a Fraction into text or JSON)
# --------------------------------------------------------------------------------------------


def format_equivalents(value: Fraction) -> str:
    """Render GPU-equivalents for people: two decimals at most, at least one.

    Rounds half up: ``1 → "1.0"``, ``3/7 → "0.43"``, ``5/2 → "2.5"``, ``1/8 → "0.13"``.
    """
    hundredths = abs(value) * 100
    rounded = int(hundredths + Fraction(1, 2))  # int() floors a non-negative Fraction
    sign = "-" if value < 0 and rounded else ""
    whole, cents = divmod(rounded, 100)
    decimals = f"{cents:02d}".rstrip("0") or "0"
    return f"{sign}{whole}.{decimals}"


def equivalents_to_float(value: Fraction) -> float:
    """GPU-equivalents as a float for JSON and labels, rounded to 4 decimals (3/7 → 0.4286)."""
    return round(float(value), 4)


# --------------------------------------------------------------------------------------------
# Who holds what
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """One ds01 container and the devices it holds.

    Attributes:
        container: Docker container name (``{name}._.{uid}``); unique within a state.
        name: the name the user sees (``{name}``).
        user: owner's user name.
        devices: UUIDs of the devices it holds (empty for a container without GPUs, or a
            stopped one whose devices were released).
        gpu_equivalents: what it counts for in the owner's GPU quota.
        status: Docker status (``created``, ``running``, ``exited``, …). Informational: a
            holding counts against quotas whatever its status, because a stopped container
            keeps its devices until the lifecycle releases them.
        borrowed: placed above the owner's ``gpu_limit`` (``ds01.core.borrowing``): it
            counts against the borrowing cap instead of ``gpu_limit``, and may be reclaimed.
    """

    container: str
    name: str
    user: str
    devices: tuple[str, ...] = ()
    gpu_equivalents: Fraction = Fraction(0)
    status: str = "running"
    borrowed: bool = False

    def __post_init__(self) -> None:
        if len(set(self.devices)) != len(self.devices):
            raise ValueError(f"holding {self.container!r} lists a device twice: {self.devices}")
        if self.gpu_equivalents < 0:
            raise ValueError(f"holding {self.container!r} has negative GPU-equivalents")


@dataclass(frozen=True)
class AllocationState:
    """Every container's holding, at one instant. Immutable; updates return a new state.

    Indexes (device → holder, user → holdings) are built lazily, once per state, in
    O(holdings). If two holdings claim the same device (only possible when the state is read
    from a Docker that was changed behind ds01's back), the first one in ``holdings`` is its
    holder; :meth:`with_holding` never creates such a state.
    """

    holdings: tuple[Holding, ...] = ()

    @cached_property
    def _holder_by_device(self) -> dict[str, Holding]:
        holders: dict[str, Holding] = {}
        for holding in self.holdings:
            for uuid in holding.devices:
                holders.setdefault(uuid, holding)
        return holders

    @cached_property
    def _holdings_by_user(self) -> dict[str, tuple[Holding, ...]]:
        by_user: dict[str, list[Holding]] = {}
        for holding in self.holdings:
            by_user.setdefault(holding.user, []).append(holding)
        return {user: tuple(holdings) for user, holdings in by_user.items()}

    def held(self) -> dict[str, Holding]:
        """Map of every held device UUID to its holder (a fresh dict the caller may keep)."""
        return dict(self._holder_by_device)

    def holder_of(self, uuid: str) -> Holding | None:
        """The holding that holds device ``uuid``, or ``None`` when it is not held."""
        return self._holder_by_device.get(uuid)

    def of_user(self, user: str) -> tuple[Holding, ...]:
        """The user's holdings, in state order."""
        return self._holdings_by_user.get(user, ())

    def user_gpu_equivalents(self, user: str) -> Fraction:
        """What counts against the user's ``gpu_limit``: the sum of GPU-equivalents over
        the user's holdings that are not borrowed (exact)."""
        return sum((h.gpu_equivalents for h in self.of_user(user) if not h.borrowed), Fraction(0))

    def user_borrowed_equivalents(self, user: str) -> Fraction:
        """What counts against the user's borrowing cap: their borrowed holdings (exact)."""
        return sum((h.gpu_equivalents for h in self.of_user(user) if h.borrowed), Fraction(0))

    def with_holding(self, holding: Holding) -> AllocationState:
        """A new state with ``holding`` added, replacing any holding of the same container.

        Raises:
            ValueError: one of its devices is held by another container. The allocator
                never proposes such a device, so this signals a caller bug.
        """
        for uuid in holding.devices:
            holder = self._holder_by_device.get(uuid)
            if holder is not None and holder.container != holding.container:
                raise ValueError(f"device {uuid} is already held by container {holder.container!r}")
        others = tuple(h for h in self.holdings if h.container != holding.container)
        return AllocationState((*others, holding))

    def without(self, container: str) -> AllocationState:
        """A new state without the holding of ``container`` (the same state if it has none)."""
        remaining = tuple(h for h in self.holdings if h.container != container)
        if len(remaining) == len(self.holdings):
            return self
        return AllocationState(remaining)


# --------------------------------------------------------------------------------------------
# What is asked for, and what is allowed
# --------------------------------------------------------------------------------------------


class _MigNeed(NamedTuple):
    """One requested MIG profile, parsed."""

    profile: str
    slices: int
    memory_mib: int


#: Why a container gets at most one MIG instance (the refusal of a request for more).
ONE_MIG_INSTANCE_REASON = (
    "a CUDA process uses only one MIG instance; ask for a larger profile, or whole GPUs "
    "with --gpus"
)


def describe_gpus(whole_gpus: int, mig_profiles: Sequence[str]) -> str:
    """Short human text of a GPU request: ``"2 whole GPUs"``, ``"3g.20gb"``, ``"no GPU"``.

    Unchecked, so that it can also describe what was stored before a rule applied (a queue
    entry that asked for two MIG instances).
    """
    if whole_gpus:
        return f"{whole_gpus} whole GPU{'s' if whole_gpus > 1 else ''}"
    return " + ".join(mig_profiles) or "no GPU"


@dataclass(frozen=True)
class GpuRequest:
    """The GPUs one container asks for: ``whole_gpus`` whole GPUs *or* one MIG instance.

    A container gets either whole GPUs or a MIG instance, never both: CUDA does not support
    mixing MIG and non-MIG devices in one process (the reference allocator saw CUDA errors
    when it did). It gets at most one MIG instance: a CUDA process enumerates only one, so a
    second would count against the quota and never be used (``ONE_MIG_INSTANCE_REASON``).
    Whole GPUs may be several. An empty request means "no GPU". ``mig_profiles`` is a tuple
    of at most one profile.

    ``devices``: the UUIDs of the exact devices asked for (``docker run --gpus device=…``,
    resolved by :func:`named_request`), empty when ds01 may pick. A request naming devices
    counts one whole GPU per named whole GPU, or the named MIG instance's profile, and is
    placed on exactly them or refused (:func:`place`).

    Raises:
        InvalidInput: a count is not a non-negative integer, a profile is not of the form
            ``<slices>g.<memory>gb``, more than one MIG instance is requested, or both kinds
            are requested.
    """

    whole_gpus: int = 0
    mig_profiles: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.whole_gpus, bool) or not isinstance(self.whole_gpus, int):
            raise InvalidInput(
                f"GPU count must be a whole number, got {self.whole_gpus!r}.",
                details={"whole_gpus": repr(self.whole_gpus)},
            )
        if self.whole_gpus < 0:
            raise InvalidInput(
                f"GPU count cannot be negative (got {self.whole_gpus}).",
                details={"whole_gpus": self.whole_gpus},
            )
        if not isinstance(self.mig_profiles, tuple):
            raise InvalidInput(
                "MIG profiles must be given as a tuple of profile names such as '1g.5gb'.",
                details={"mig_profiles": repr(self.mig_profiles)},
            )
        for profile in self.mig_profiles:
            if not isinstance(profile, str):
                raise InvalidInput(
                    f"MIG profile must be a string such as '1g.5gb', got {profile!r}.",
                    details={"mig_profile": repr(profile)},
                )
            try:
                mig_profile_slices(profile)
            except ValueError:
                raise InvalidInput(
                    f"Unknown MIG profile {profile!r}: expected <slices>g.<memory>gb, "
                    "e.g. '1g.5gb' or '3g.20gb'. `gpu-status` lists the profiles on this "
                    "server.",
                    details={"mig_profile": profile},
                ) from None
        if len(self.mig_profiles) > 1:
            raise InvalidInput(
                f"A container gets one MIG instance, not {len(self.mig_profiles)} "
                f"({', '.join(self.mig_profiles)}): {ONE_MIG_INSTANCE_REASON}.",
                details={"mig_profiles": list(self.mig_profiles), "most": 1},
            )
        if self.whole_gpus and self.mig_profiles:
            raise InvalidInput(
                f"A container gets either whole GPUs or MIG instances, not both (asked for "
                f"{self.whole_gpus} whole GPU(s) and {', '.join(self.mig_profiles)}). "
                "Ask for one kind.",
                details={"whole_gpus": self.whole_gpus, "mig_profiles": list(self.mig_profiles)},
            )
        if self.devices and len(set(self.devices)) != self.device_count:
            raise ValueError(f"named devices {self.devices} do not match {self.describe()}")

    @property
    def is_empty(self) -> bool:
        """True when no GPU is requested."""
        return self.whole_gpus == 0 and not self.mig_profiles

    @property
    def device_count(self) -> int:
        """Number of devices the container will hold."""
        return self.whole_gpus + len(self.mig_profiles)

    def min_gpu_equivalents(self, total_slices: int = DEFAULT_TOTAL_SLICES) -> Fraction:
        """The least this request can count for: its profile placed on an exact match.

        ``total_slices`` is the slices of the GPUs the instances would come from (7 on
        A100/H100). A larger instance than asked for counts for more.
        """
        if total_slices < 1:
            raise ValueError(f"total_slices must be positive, got {total_slices}")
        need = self._mig_need()
        return self.whole_gpus + Fraction(need.slices if need else 0, total_slices)

    def _mig_need(self) -> _MigNeed | None:
        """The requested MIG profile parsed; ``None`` when it asks for no MIG instance."""
        if not self.mig_profiles:
            return None
        [profile] = self.mig_profiles
        return _MigNeed(profile, mig_profile_slices(profile), mig_profile_memory_mib(profile))

    def describe(self) -> str:
        """Short human text: ``"2 whole GPUs"``, ``"3g.20gb"``, ``"no GPU"``."""
        return describe_gpus(self.whole_gpus, self.mig_profiles)


@dataclass(frozen=True)
class Placement:
    """The devices chosen for one request, in the order they were picked."""

    devices: tuple[Device, ...] = ()

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(d.uuid for d in self.devices)

    @property
    def gpu_equivalents(self) -> Fraction:
        """What this placement counts for in quotas (exact)."""
        return sum((d.gpu_equivalents for d in self.devices), Fraction(0))

    def holding(self, container: str, user: str, *, borrowed: bool = False) -> Holding:
        """The holding of a queued request once it starts here (``container`` is its id and
        the name it holds the devices under)."""
        return Holding(
            container=container,
            name=container,
            user=user,
            devices=self.uuids,
            gpu_equivalents=self.gpu_equivalents,
            borrowed=borrowed,
        )


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------


def free_devices(inventory: Inventory, state: AllocationState) -> tuple[Device, ...]:
    """Devices that can be handed out now, in inventory order.

    A device is free when nobody holds it and it is not in ``inventory.reserved``. A whole-GPU
    device is never free when its physical GPU is in MIG mode or has MIG instances: a GPU in
    MIG mode offers only its instances, and none at all when it has none (such a GPU is
    unusable, not free). O(devices + holdings).
    """
    mig_gpus = {g.uuid for g in inventory.gpus if g.mig_enabled}
    mig_gpus.update(d.gpu_uuid for d in inventory.devices if d.kind == "mig")
    return tuple(
        d
        for d in inventory.devices
        if state.holder_of(d.uuid) is None
        and d.uuid not in inventory.reserved
        and not (d.kind == "gpu" and d.gpu_uuid in mig_gpus)
    )


def describe_devices(devices: Sequence[Device]) -> str:
    """Human summary such as ``"whole GPUs 1, 2; 1g.5gb on GPU 3, 2x 1g.5gb on GPU 4"``.

    MIG instances are grouped per GPU and profile, by GPU index, then smallest first.
    """
    whole = sorted(d.gpu_index for d in devices if d.kind == "gpu")
    mig = Counter((d.gpu_index, d.slices, d.profile or "?") for d in devices if d.kind == "mig")
    groups: list[str] = []
    if whole:
        groups.append(f"whole GPU{'s' if len(whole) > 1 else ''} {', '.join(map(str, whole))}")
    if mig:
        groups.append(
            ", ".join(
                f"{f'{count}x ' if count > 1 else ''}{profile} on GPU {gpu_index}"
                for (gpu_index, _slices, profile), count in sorted(mig.items())
            )
        )
    return "; ".join(groups) or "nothing"


def _nominal_memory_mib(device: Device) -> int:
    """Memory a MIG instance is sold as (its profile's), else what the backend reported.

    Drivers report a little less than the profile name says (a 3g.20gb shows ~19.5 GiB), so
    comparing reported memory with a requested profile would refuse an exact match.
    """
    try:
        return mig_profile_memory_mib(device.profile or "")
    except ValueError:
        return device.memory_mib


def _satisfies(device: Device, need: _MigNeed) -> bool:
    return device.profile == need.profile or (
        device.slices >= need.slices and _nominal_memory_mib(device) >= need.memory_mib
    )


def could_take(request: GpuRequest, device: Device) -> bool:
    """Whether ``device`` could be (part of) a placement of ``request`` were it free: a whole
    GPU for whole GPUs, a MIG instance that satisfies the profile for a MIG request (as
    :func:`place` chooses); never for an empty request."""
    need = request._mig_need()
    if need is None:
        return request.whole_gpus > 0 and device.kind == "gpu"
    return device.kind == "mig" and _satisfies(device, need)


def _largest_total_slices(devices: Iterable[Device]) -> int:
    return max((d.total_slices for d in devices if d.kind == "mig"), default=DEFAULT_TOTAL_SLICES)


def _place_whole_gpus(
    count: int,
    free: Sequence[Device],
    max_gpu_equivalents: Fraction | None,
) -> tuple[Device, ...]:
    """The ``count`` free whole GPUs with the lowest indices."""
    whole = sorted((d for d in free if d.kind == "gpu"), key=lambda d: (d.gpu_index, d.uuid))
    if len(whole) < count:
        raise NoCapacity(
            f"Not enough free whole GPUs: {count} requested, {len(whole)} free. "
            f"Free now: {describe_devices(free)}. Ask for fewer, or wait until one is released.",
            details={"requested": count, "free": [d.label for d in free]},
        )
    if max_gpu_equivalents is not None and count > max_gpu_equivalents:
        raise NoCapacity(
            f"{count} whole GPUs count for more than the "
            f"{format_equivalents(max_gpu_equivalents)} GPU-equivalents that may be placed.",
            details={"requested": count, "limit": equivalents_to_float(max_gpu_equivalents)},
        )
    return tuple(whole[:count])


def _place_mig(
    need: _MigNeed,
    free: Sequence[Device],
    max_gpu_equivalents: Fraction | None,
) -> Device:
    """Best fit for ``need`` within ``max_gpu_equivalents``.

    The smallest free instance that satisfies it (slices, then memory); ties go to the
    physical GPU with the fewest free slices (packing keeps large blocks free), then the
    lowest GPU index, then the UUID. With a budget, instances that count for more are
    skipped, so the result is best fit whenever best fit is within budget, and never above.
    """
    candidates = [d for d in free if d.kind == "mig"]
    free_slices: Counter[str] = Counter()
    for d in candidates:
        free_slices[d.gpu_uuid] += d.slices
    fitting = [d for d in candidates if _satisfies(d, need)]
    affordable = fitting
    if max_gpu_equivalents is not None:
        affordable = [d for d in fitting if d.gpu_equivalents <= max_gpu_equivalents]
    if not affordable:
        raise _no_mig_capacity(need, free, within_quota=bool(fitting), limit=max_gpu_equivalents)
    return min(
        affordable,
        key=lambda d: (
            d.slices,
            _nominal_memory_mib(d),
            free_slices[d.gpu_uuid],
            d.gpu_index,
            d.uuid,
        ),
    )


def _no_mig_capacity(
    need: _MigNeed, free: Sequence[Device], *, within_quota: bool, limit: Fraction | None
) -> NoCapacity:
    details = {"requested": need.profile, "free": [d.label for d in free]}
    if within_quota and limit is not None:
        return NoCapacity(
            f"No free {need.profile} MIG instance fits within your remaining GPU quota of "
            f"{format_equivalents(limit)} GPU-equivalents: the free instances that are large "
            f"enough count for more. Free now: {describe_devices(free)}. Ask for a smaller "
            "profile, or wait until a matching one is released.",
            details={**details, "limit": equivalents_to_float(limit)},
        )
    return NoCapacity(
        f"No free {need.profile} MIG instance: free now: {describe_devices(free)}. "
        "Ask for a smaller profile, or wait until one is released.",
        details=details,
    )


def place(
    request: GpuRequest,
    inventory: Inventory,
    state: AllocationState,
    *,
    max_gpu_equivalents: Fraction | None = None,
    user: str | None = None,
) -> Placement:
    """Choose devices for ``request`` among the free ones; deterministic best fit; exactly
    the devices it names, if it names any (:func:`named_request`; ``user``, who asks, is
    told which of their own containers holds one).

    Whole GPUs: the free whole GPUs with the lowest indices. MIG: for each requested profile,
    largest first, the smallest free instance with at least its slices and memory, packed
    onto the GPU with the fewest free slices (then lowest index, then UUID); a device is
    never picked twice. ``max_gpu_equivalents`` (optional) bounds what the placement may count
    for: a larger-than-asked instance that would break it is avoided when a placement within
    it exists. Quotas are :func:`allocate`'s business; this only looks at capacity.

    Raises:
        NoCapacity: the request cannot be satisfied from the free devices (within the bound);
            the message says what is free, or who holds a named device.
        NotFound: a named device is no longer in ``inventory``.
    """
    if request.is_empty:
        return Placement()
    if request.devices:
        return _place_named(request.devices, inventory, state, max_gpu_equivalents, user)
    if not inventory.devices:
        reason = f" ({inventory.message})" if inventory.message else ""
        raise NoCapacity(
            f"This server offers no GPUs{reason}; {request.describe()} cannot be placed. "
            "Create the container without GPUs, or ask an admin.",
            details={"requested": request.describe(), "free": []},
        )
    free = free_devices(inventory, state)
    need = request._mig_need()
    if need is None:
        return Placement(_place_whole_gpus(request.whole_gpus, free, max_gpu_equivalents))
    return Placement((_place_mig(need, free, max_gpu_equivalents),))


def _device_names(inventory: Inventory) -> str:
    """The ids a caller may name, as ``gpu-status`` shows them: whole GPUs by index, MIG
    instances by UUID."""
    names = [d.label if d.kind == "gpu" else d.uuid for d in inventory.devices]
    return ", ".join(names) or "none (this server offers no GPUs)"


def not_a_device_id(given: object) -> str:
    """What a device id that is none of the forms ``gpu-status`` shows is told."""
    return (
        f"{str(given)[:90]!r} is not a device id: name a GPU's index, a GPU-<uuid> or a "
        "MIG-<uuid>, as `gpu-status` shows them."
    )


def named_request(ids: Sequence[str], inventory: Inventory) -> GpuRequest:
    """The request for exactly the devices ``ids`` name (``docker run --gpus device=…``):
    each a GPU's index as ``gpu-status`` shows it, a whole GPU's UUID, or a MIG instance's
    UUID. The MIG and whole-GPU rules of :class:`GpuRequest` apply to what they name.

    Raises:
        InvalidInput: no id, too many, an id that is not of a device id's form, a device named
            twice, a GPU in MIG mode named as a whole, or MIG and whole GPUs mixed.
        NotFound: an id names no device here; the message lists those that may be named.
    """
    if not ids or len(ids) > MAX_NAMED_DEVICES:
        raise InvalidInput(
            f"Name between 1 and {MAX_NAMED_DEVICES} devices, not {len(ids)}.",
            details={"devices": len(ids)},
        )
    by_uuid = inventory.by_uuid()
    whole_by_index = {str(d.gpu_index): d for d in inventory.devices if d.kind == "gpu"}
    mig_by_index = {str(g.index) for g in inventory.gpus if g.mig_enabled}
    mig_by_index.update(str(d.gpu_index) for d in inventory.devices if d.kind == "mig")
    named: list[Device] = []
    for given in ids:
        if not isinstance(given, str) or not is_device_id(given):
            raise InvalidInput(not_a_device_id(given), details={"device": str(given)[:90]})
        if given in mig_by_index and given not in whole_by_index:
            raise InvalidInput(
                f"GPU {given} is in MIG mode: name one of its MIG instances by its MIG-<uuid> "
                "(`gpu-status`).",
                details={"device": given},
            )
        device = whole_by_index.get(given) or by_uuid.get(given)
        if device is None:
            raise NotFound(
                f"There is no device {given!r} here. Devices you can name: "
                f"{_device_names(inventory)} (GPU UUIDs too; see `gpu-status`).",
                details={"device": given, "available": [d.uuid for d in inventory.devices]},
            )
        if device in named:
            raise InvalidInput(
                f"Device {device.label} ({device.uuid}) is named twice.",
                details={"device": device.uuid},
            )
        named.append(device)
    whole = sum(1 for d in named if d.kind == "gpu")
    profiles = tuple(d.profile or "?" for d in named if d.kind == "mig")
    return GpuRequest(whole_gpus=whole, mig_profiles=profiles, devices=tuple(d.uuid for d in named))


def _place_named(
    uuids: Sequence[str],
    inventory: Inventory,
    state: AllocationState,
    max_gpu_equivalents: Fraction | None,
    user: str | None,
) -> Placement:
    """Exactly the devices ``uuids``, when every one is free now; else why not (who holds
    one, that it is kept for someone else, or over the bound)."""
    by_uuid = inventory.by_uuid()
    open_now = {d.uuid for d in free_devices(inventory, state)}
    devices: list[Device] = []
    for uuid in uuids:
        device = by_uuid.get(uuid)
        if device is None:
            raise NotFound(
                f"Device {uuid} is no longer here. Devices you can name: "
                f"{_device_names(inventory)} (`gpu-status`).",
                details={"device": uuid},
            )
        if uuid not in open_now:
            raise _not_free(device, state.holder_of(uuid), inventory, user)
        devices.append(device)
    placement = Placement(tuple(devices))
    if max_gpu_equivalents is not None and placement.gpu_equivalents > max_gpu_equivalents:
        raise NoCapacity(
            f"The devices named count for {format_equivalents(placement.gpu_equivalents)} "
            f"GPU-equivalents, more than the {format_equivalents(max_gpu_equivalents)} that "
            "may be placed.",
            details={
                "requested": equivalents_to_float(placement.gpu_equivalents),
                "limit": equivalents_to_float(max_gpu_equivalents),
            },
        )
    return placement


def _not_free(
    device: Device, holder: Holding | None, inventory: Inventory, user: str | None
) -> NoCapacity:
    """Why the named ``device`` cannot be had now: who holds it (the container's name only
    when it is the caller's own, as ``gpu-status`` shows them), or that it is kept."""
    kind = "GPU" if device.kind == "gpu" else "MIG instance"
    name = f"{kind} {device.label} ({device.uuid})"
    if holder is not None:
        who = (
            f"your container {holder.name!r}"
            if holder.user == user
            else f"a container of {holder.user}'s"
        )
        why = f"is held by {who}"
    elif device.uuid in inventory.reserved:
        why = "is kept for someone else (a reservation, or the request first in ds01's queue)"
    else:
        why = "is not usable as a whole: its GPU is in MIG mode"
    return NoCapacity(
        f"{name} {why}. Devices named are not waited for: name a free one (`gpu-status`), "
        "or ask for a number (--gpus N) to wait in ds01's queue.",
        details={"device": device.uuid, "holder": holder.user if holder else None},
    )


# --------------------------------------------------------------------------------------------
# The whole decision
# --------------------------------------------------------------------------------------------


def check_container_count(quota: GpuQuota, user_containers: Sequence[str]) -> None:
    """Refuse one more container when the user already has ``max_containers``.

    ``user_containers`` are the names of the user's existing containers (all of them, with or
    without GPUs).

    Raises:
        QuotaExceeded: creating one more would exceed ``quota.max_containers``.
    """
    limit = quota.max_containers
    if limit is None or len(user_containers) < limit:
        return
    details = {"limit": limit, "in_use": len(user_containers), "containers": list(user_containers)}
    if not user_containers:
        raise QuotaExceeded(
            f"Container limit reached: your limits allow {limit} containers. Ask an admin.",
            details=details,
        )
    raise QuotaExceeded(
        f"Container limit reached: {len(user_containers)} of {limit} containers "
        f"({', '.join(user_containers)}). Remove one with `container-remove NAME`.",
        details=details,
    )


def _check_gpu_kind_allowed(request: GpuRequest, quota: GpuQuota) -> None:
    if request.whole_gpus and not quota.allow_full_gpu:
        instead = "Ask for a MIG instance instead" if quota.allow_mig else "Ask an admin"
        raise QuotaExceeded(
            f"Your limits do not allow whole GPUs. {instead}.",
            details={"requested": request.describe(), "allow_full_gpu": False},
        )
    if request.mig_profiles and not quota.allow_mig:
        instead = "Ask for a whole GPU instead" if quota.allow_full_gpu else "Ask an admin"
        raise QuotaExceeded(
            f"Your limits do not allow MIG instances. {instead}.",
            details={"requested": request.describe(), "allow_mig": False},
        )


def check_mig_profiles_exist(request: GpuRequest, inventory: Inventory) -> None:
    """Refuse a MIG profile that no instance of this server can ever serve (neither one of
    that profile nor a larger one), naming the profiles that are here: a request for it
    would otherwise count against the quota or wait in the queue for ever.

    Raises:
        NotFound: a profile no instance of ``inventory``, free or not, can serve.
    """
    instances = [d for d in inventory.devices if d.kind == "mig"]
    need = request._mig_need()
    if need is None or any(_satisfies(d, need) for d in instances):
        return
    missing = [need.profile]
    here = sorted({d.profile for d in instances if d.profile}, key=mig_profile_slices)
    if here:
        instead = f"MIG profiles here: {', '.join(here)}. Ask for one of them"
    else:
        instead = "This server has no MIG instances. Ask for a whole GPU"
    raise NotFound(
        f"There is no MIG instance of profile {missing[0]} (or larger) on this server. "
        f"{instead}, or see `gpu-status`.",
        details={"requested": missing, "available": here},
    )


def _check_per_container_cap(quota: GpuQuota, needed: Fraction) -> None:
    cap = quota.max_gpus_per_container
    if cap is not None and needed > cap:
        raise QuotaExceeded(
            f"Per-container GPU limit: this request needs {format_equivalents(needed)} "
            f"GPU-equivalents, one container may have at most {format_equivalents(cap)}. "
            "Ask for less.",
            details={
                "limit": equivalents_to_float(cap),
                "requested": equivalents_to_float(needed),
            },
        )


def _check_user_total(
    quota: GpuQuota, holdings: Sequence[Holding], in_use: Fraction, needed: Fraction
) -> None:
    limit = quota.gpu_limit
    if limit is None or in_use + needed <= limit:
        return
    holders = sorted({h.name for h in holdings if h.gpu_equivalents > 0})
    details = {
        "limit": equivalents_to_float(limit),
        "in_use": equivalents_to_float(in_use),
        "requested": equivalents_to_float(needed),
        "containers": holders,
    }
    limit_text, in_use_text = format_equivalents(limit), format_equivalents(in_use)
    if not holders:
        message = (
            f"GPU quota exceeded: this request needs {format_equivalents(needed)} "
            f"GPU-equivalents, your limit is {limit_text}. Ask for less."
        )
    elif in_use >= limit:
        message = (
            f"GPU quota reached: {in_use_text} of {limit_text} GPU-equivalents in use by "
            f"{', '.join(holders)}. Stop or remove one with {_STOP_OR_REMOVE_COMMANDS}, "
            "or ask for less."
        )
    else:
        message = (
            f"GPU quota exceeded: this request needs {format_equivalents(needed)} "
            f"GPU-equivalents, {format_equivalents(limit - in_use)} of {limit_text} are left "
            f"({in_use_text} in use by {', '.join(holders)}). Ask for less, or stop or "
            f"remove one with {_STOP_OR_REMOVE_COMMANDS}."
        )
    raise QuotaExceeded(message, details=details)


def least_gpu_equivalents(request: GpuRequest, inventory: Inventory) -> Fraction:
    """The least ``request`` can count for on ``inventory``: each MIG profile on an exact
    match, over the slices of the largest MIG-mode GPU there (7 when it has none); what its
    named devices count for when it names them."""
    by_uuid = inventory.by_uuid()
    if request.devices and all(u in by_uuid for u in request.devices):
        return sum((by_uuid[u].gpu_equivalents for u in request.devices), Fraction(0))
    return request.min_gpu_equivalents(_largest_total_slices(inventory.devices))


def _smallest(*bounds: Fraction | None) -> Fraction | None:
    present = [b for b in bounds if b is not None]
    return min(present) if present else None


def allocate(
    request: GpuRequest,
    user: str,
    quota: GpuQuota,
    inventory: Inventory,
    state: AllocationState,
    user_containers: Sequence[str],
) -> Placement:
    """Decide whether ``user`` may create a container with ``request``, and on which devices.

    Checks, in order: the container count (``max_containers``), the kind of GPU is allowed
    (``allow_full_gpu`` / ``allow_mig``), the per-container cap, the user's total
    (``gpu_limit``: GPU-equivalents of all the user's holdings plus this placement), then
    places. Quota checks first use the least the request can count for, so a request over
    quota gets :class:`QuotaExceeded` even when nothing is free; the placement is then bounded
    by what is left, so a larger-than-asked MIG instance can never break a limit.

    ``user_containers`` are the names of the user's existing containers (those counting
    against ``max_containers``). To re-acquire devices for an existing stopped container,
    leave it out of ``user_containers`` and pass ``state.without(its container)``.

    Nothing is changed: the caller records the result with :meth:`AllocationState.with_holding`.

    Raises:
        QuotaExceeded: a limit would be exceeded; message and ``details`` say which and how.
        NoCapacity: within quota, but the free devices cannot satisfy the request.
    """
    check_container_count(quota, user_containers)
    if request.is_empty:
        return Placement()
    _check_gpu_kind_allowed(request, quota)
    needed = least_gpu_equivalents(request, inventory)
    _check_per_container_cap(quota, needed)
    in_use = state.user_gpu_equivalents(user)
    own = tuple(h for h in state.of_user(user) if not h.borrowed)
    _check_user_total(quota, own, in_use, needed)
    left = None if quota.gpu_limit is None else quota.gpu_limit - in_use
    budget = _smallest(left, quota.max_gpus_per_container)
    return place(request, inventory, state, max_gpu_equivalents=budget, user=user)


__all__ = [
    "DEVICE_ID_PATTERN",
    "MAX_NAMED_DEVICES",
    "ONE_MIG_INSTANCE_REASON",
    "AllocationState",
    "GpuRequest",
    "Holding",
    "Placement",
    "allocate",
    "check_container_count",
    "check_mig_profiles_exist",
    "could_take",
    "describe_devices",
    "describe_gpus",
    "equivalents_to_float",
    "format_equivalents",
    "free_devices",
    "is_device_id",
    "least_gpu_equivalents",
    "named_request",
    "not_a_device_id",
    "place",
]
