"""Borrowing above quota and reclaiming it, as pure functions of (state, time).

Nothing here touches Docker, the database or the clock. The policy is
:class:`~ds01.config.borrowing.BorrowingConfig` (``borrowing:`` in ``resource-limits.yaml``).

**Borrowing** (:func:`allocate_borrowing`). A request that :func:`~ds01.core.allocation.
allocate` refuses only for the owner's ``gpu_limit`` may still be placed, *borrowed*, when:

- borrowing is enabled and the request asks to borrow (``--borrow`` or ``borrow: auto``);
- no request that waits for devices could be placed on a device it would take
  (``waiting``: the requests of the queue's last plan that wait for devices,
  :meth:`~ds01.core.scheduler.Plan.waiting_requests`; :func:`wanted_by`): a waiting
  MIG request does not stop a whole GPU from being borrowed, nor a request that a
  reservation keeps from the device (its ``blocked``). A borrowed request never waits in
  the queue, so every request that waits for devices is within its owner's quota;
- the owner's borrowed GPU-equivalents plus this request stay within ``max_borrowed_gpus``;
- every other limit holds (``max_containers``, the kind of GPU, ``max_gpus_per_container``)
  and free devices fit it.

A container is borrowed or not as a whole, decided each time it is placed (created, or
started again after its devices were released): a request within quota is never borrowed,
a borrowed one counts against the borrowing cap and not against ``gpu_limit``
(:meth:`~ds01.core.allocation.AllocationState.user_gpu_equivalents`). A container that
was borrowed and is placed within quota at a later start is no longer borrowed
(:func:`in_place`: it is re-created without the label), so that what a user holds is
always within ``gpu_limit`` plus ``max_borrowed_gpus``. Its GPU-equivalents count in the
fair-share usage like any other (the usage ledger records every container that holds
devices), so a borrower ranks behind lighter users in the queue.

**Reclaim** (:func:`choose_reclaim`). When the head of the queue (a request within quota
that cannot be placed) would fit if some borrowed containers gave their devices back,
ds01 reclaims them by one rule:

1. only borrowed holdings with devices of an owner above quota are candidates: an owner
   whose holdings, borrowed ones included, add up to no more than their ``gpu_limit``
   (the ``limits`` of :class:`HoldingFacts`) borrows nothing any more (their other
   containers ended after the borrow), so none of theirs is taken, and a container is
   taken from an owner only while those not taken before it still add up to more than
   that limit. Never one that the reservation hook (``is_reserved``) protects, and never
   a running one younger than ``min_runtime_minutes``, counted from when its borrowed
   devices were placed (a restart does not make it younger), unless it was warned
   already: a warning stands until the stop or until nobody needs its devices.
   ds01d's hook is :func:`reserved_by_holder`: a holding on a device of its owner's
   reservation in force is its holder's, not borrowed from anyone; the pure functions
   default to nothing reserved;
2. candidates already being reclaimed (warned in an earlier pass) come first, then the
   stopped ones (which hold devices but run nothing), then the running ones newest first;
3. candidates are taken in that order until the head fits, then any of them the head does
   not need after all is dropped: only as many as needed;
4. if the head would not fit even with every candidate reclaimed, nothing is reclaimed.

:func:`reclaim_steps` turns the chosen containers into actions at ``now``: warn the ones
not warned yet, stop those whose warning is ``reclaim_grace_minutes`` old, and cancel the
warnings of containers no longer chosen (when nobody within quota waits, nothing is
chosen, so nothing is reclaimed).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction

from ds01.config.borrowing import BorrowingConfig
from ds01.core.allocation import (
    AllocationState,
    GpuRequest,
    Holding,
    Placement,
    allocate,
    could_take,
    format_equivalents,
    least_gpu_equivalents,
)
from ds01.core.reservations import Reservation, protected
from ds01.core.scheduler import PendingRequest
from ds01.errors import NoCapacity, QuotaExceeded
from ds01.model.device import Device, Inventory
from ds01.model.quota import GpuQuota

#: The reservation hook's type: whether a holding is protected by a reservation.
ReservedPredicate = Callable[[Holding], bool]


def nothing_reserved(_holding: Holding) -> bool:
    """The default reservation hook: no holding is protected by a reservation."""
    return False


def reserved_by_holder(reservations: Sequence[Reservation], now: datetime) -> ReservedPredicate:
    """The reservation hook at ``now``: a holding is protected when it holds a device of a
    reservation of its owner in force at ``now``."""
    return lambda holding: protected(reservations, holding.user, holding.devices, now)


@dataclass(frozen=True)
class BorrowDecision:
    """Where a request goes, and whether it is borrowed (placed above ``gpu_limit``)."""

    placement: Placement
    borrowed: bool


def _borrow_refusal(
    over_quota: QuotaExceeded, why: str, details: Mapping[str, object]
) -> QuotaExceeded:
    return QuotaExceeded(
        f"{over_quota.message} Borrowing above your quota is not possible now: {why}",
        details={**over_quota.details, "borrow": dict(details)},
    )


def allocate_borrowing(
    request: GpuRequest,
    user: str,
    quota: GpuQuota,
    inventory: Inventory,
    state: AllocationState,
    user_containers: Sequence[str],
    *,
    policy: BorrowingConfig,
    borrow: bool,
    waiting: Sequence[PendingRequest],
) -> BorrowDecision:
    """:func:`~ds01.core.allocation.allocate`, borrowing above ``gpu_limit`` when allowed
    (rules in the module docstring).

    A request within quota is placed as ``allocate`` places it, never borrowed.

    Raises:
        QuotaExceeded: over a limit and not allowed to borrow; the message says why
            borrowing is not possible when ``borrow`` was asked for (off, someone within
            quota waits for the devices it would take, the cap, or nothing free to borrow).
        NoCapacity: within quota, but the free devices cannot satisfy the request.
    """

    def place(limits: GpuQuota) -> Placement:
        return allocate(request, user, limits, inventory, state, user_containers)

    try:
        return BorrowDecision(place(quota), borrowed=False)
    except QuotaExceeded as over_quota:
        if not borrow:
            raise
        return _borrow(
            over_quota,
            place,
            quota,
            borrowed=state.user_borrowed_equivalents(user),
            needed=least_gpu_equivalents(request, inventory),
            policy=policy,
            waiting=waiting,
        )


def _borrow(
    over_quota: QuotaExceeded,
    place: Callable[[GpuQuota], Placement],
    quota: GpuQuota,
    *,
    borrowed: Fraction,
    needed: Fraction,
    policy: BorrowingConfig,
    waiting: Sequence[PendingRequest],
) -> BorrowDecision:
    """The borrowed placement of a request refused ``over_quota``: ``place`` places it under
    other limits, ``borrowed`` is what its owner borrows already and ``needed`` the least it
    takes."""
    if not policy.enabled:
        raise _borrow_refusal(over_quota, "borrowing is off on this server.", {"enabled": False})
    # Every limit but gpu_limit still holds: a refusal for another limit is raised here.
    unbounded = replace(quota, gpu_limit=None)
    with suppress(NoCapacity):  # whether idle devices fit is decided below, within the cap
        place(unbounded)
    cap = policy.max_borrowed_equivalents
    if borrowed + needed > cap:
        raise _borrow_refusal(
            over_quota,
            f"this request needs {format_equivalents(needed)} GPU-equivalents, you borrow "
            f"{format_equivalents(borrowed)} of at most {format_equivalents(cap)} "
            "(max_borrowed_gpus).",
            {"cap": float(cap), "borrowed": float(borrowed), "requested": float(needed)},
        )
    per_container = quota.max_gpus_per_container
    left = cap - borrowed
    bound = left if per_container is None else min(left, per_container)
    try:
        placement = place(replace(unbounded, max_gpus_per_container=bound))
    except NoCapacity as busy:
        raise _borrow_refusal(
            over_quota, f"no idle device fits it. {busy.message}", {"free": False}
        ) from None
    if wanted_by(waiting, placement.devices) is not None:
        raise _borrow_refusal(
            over_quota,
            "requests within quota wait for the devices it would take, and they go first.",
            {"within_quota_waiting": True},
        )
    return BorrowDecision(placement, borrowed=True)


def in_place(
    own: Sequence[str],
    *,
    labelled: bool,
    borrowed: bool,
    state: AllocationState,
    reserved: Collection[str],
) -> bool:
    """Whether a container whose devices were released gets them back as it is, when it is
    placed again ``borrowed`` or not: only when it was not borrowed (``labelled``: its
    ``ds01.borrowed`` label) and is not now, and its own devices ``own`` are all free (no
    holding of ``state`` holds one, none is ``reserved``).

    Otherwise it is re-created (its files kept): on other devices, so that it takes none
    that is not free; with the label of how it is placed now, so that a container placed
    within quota counts against ``gpu_limit`` and one above it against the cap; and, when
    borrowed, with a fresh ``ds01.created_at``, the time its borrowed devices were placed,
    from which the reclaim's ``min_runtime_minutes`` counts (:class:`HoldingFacts`)."""
    if labelled or borrowed:
        return False
    return all(state.holder_of(uuid) is None and uuid not in reserved for uuid in own)


def wanted_by(
    waiting: Iterable[PendingRequest], devices: Iterable[Device]
) -> PendingRequest | None:
    """The first of ``waiting`` that could be placed on one of ``devices`` (the kind it asks
    for, :func:`~ds01.core.allocation.could_take`, and not among its ``blocked``), or
    ``None``: borrowing those devices keeps nobody waiting from them."""
    devices = tuple(devices)
    for request in waiting:
        if any(d.uuid not in request.blocked and could_take(request.request, d) for d in devices):
            return request
    return None


# --------------------------------------------------------------------------------------------
# Reclaim
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReclaimChoice:
    """The borrowed containers to reclaim for the head of the queue.

    Attributes:
        containers: their Docker names, in the order of the rule (module docstring); empty
            when nothing is to be reclaimed.
        for_request: the head's id, or ``None`` when nobody within quota waits.
        reason: one sentence for the owners and the audit log.
    """

    containers: tuple[str, ...] = ()
    for_request: str | None = None
    reason: str = "Nobody within quota waits for devices."


def _fits(head: PendingRequest, inventory: Inventory, state: AllocationState) -> bool:
    """Whether ``head`` is placed now, never on a device it is ``blocked`` from."""
    try:
        allocate(
            head.request, head.user, head.quota, head.open_in(inventory), state,
            head.user_containers,
        )  # fmt: skip
    except (NoCapacity, QuotaExceeded):
        return False
    return True


def _freed(state: AllocationState, containers: Collection[str]) -> AllocationState:
    for container in containers:
        state = state.without(container)
    return state


#: Each owner's ``gpu_limit`` (``None``: unlimited); an owner missing from it counts as
#: above quota whatever they hold.
GpuLimits = Mapping[str, Fraction | None]


def _above_quota(limits: GpuLimits, user: str, holds: Fraction) -> bool:
    """Whether ``user``, holding ``holds`` GPU-equivalents in all, holds more than their
    ``gpu_limit``."""
    if user not in limits:
        return True
    limit = limits[user]
    return limit is not None and holds > limit


def _totals(state: AllocationState) -> dict[str, Fraction]:
    """Each owner's GPU-equivalents, borrowed holdings included."""
    totals: dict[str, Fraction] = {}
    for holding in state.holdings:
        totals[holding.user] = totals.get(holding.user, Fraction(0)) + holding.gpu_equivalents
    return totals


@dataclass(frozen=True)
class HoldingFacts:
    """What the reclaim rule knows of the holdings beyond the allocation state.

    Attributes:
        placed_at: when each running container's devices were placed (its creation, or
            the start that gave it devices again after they were released; never a later
            restart); ``None`` or absent means it is not running (it holds devices while
            stopped).
        is_reserved: the reservation hook (:data:`ReservedPredicate`).
        reclaiming: containers already warned.
        limits: the owners' ``gpu_limit`` (:data:`GpuLimits`); ``None``: every owner counts
            as above quota.
    """

    placed_at: Mapping[str, datetime | None]
    is_reserved: ReservedPredicate = nothing_reserved
    reclaiming: Collection[str] = ()
    limits: GpuLimits | None = None

    @property
    def known_limits(self) -> GpuLimits:
        """``limits``, empty when not given (every owner then counts as above quota)."""
        return {} if self.limits is None else self.limits


def reclaimable(
    state: AllocationState, now: datetime, policy: BorrowingConfig, facts: HoldingFacts
) -> list[Holding]:
    """The borrowed holdings that may be reclaimed at ``now``, in the rule's order."""
    min_runtime = timedelta(minutes=policy.min_runtime_minutes)
    totals = _totals(state)
    known = facts.known_limits

    def eligible(holding: Holding) -> bool:
        placed = facts.placed_at.get(holding.container)
        warned = holding.container in facts.reclaiming
        old_enough = placed is None or warned or now - placed >= min_runtime
        above = _above_quota(known, holding.user, totals[holding.user])
        return holding.borrowed and bool(holding.devices) and old_enough and above

    candidates = [h for h in state.holdings if eligible(h) and not facts.is_reserved(h)]

    def rank(holding: Holding) -> tuple[bool, bool, float]:
        placed = facts.placed_at.get(holding.container)
        newest_first = 0.0 if placed is None else -placed.timestamp()
        return (holding.container not in facts.reclaiming, placed is not None, newest_first)

    return sorted(candidates, key=rank)


def choose_reclaim(
    head: PendingRequest | None,
    inventory: Inventory,
    state: AllocationState,
    now: datetime,
    policy: BorrowingConfig,
    facts: HoldingFacts,
) -> ReclaimChoice:
    """What to reclaim at ``now`` so that ``head`` can be placed (rule in the module
    docstring). ``head`` is the first request within quota that cannot be placed (the
    queue's head), ``None`` when nobody within quota waits.

    The result only ever names borrowed holdings of ``state``, each once, of owners above
    quota (``facts.limits``) without the ones named before; with them gone ``head`` fits,
    and without any one of them it would not.
    """
    if head is None or not policy.enabled:
        return ReclaimChoice()
    if _fits(head, inventory, state):
        return ReclaimChoice(for_request=head.id, reason=f"{head.id} fits without a reclaim.")
    order = reclaimable(state, now, policy, facts)
    left = _totals(state)
    known = facts.known_limits
    taken: list[str] = []
    for holding in order:
        if not _above_quota(known, holding.user, left[holding.user]):
            continue  # what its owner still holds is within their quota
        left[holding.user] -= holding.gpu_equivalents
        taken.append(holding.container)
        if _fits(head, inventory, _freed(state, taken)):
            break
    else:
        return ReclaimChoice(
            for_request=head.id,
            reason=f"Reclaiming borrowed containers would not make room for {head.id} now.",
        )
    for container in list(taken):
        rest = [c for c in taken if c != container]
        if _fits(head, inventory, _freed(state, rest)):
            taken = rest
    return ReclaimChoice(
        containers=tuple(taken),
        for_request=head.id,
        reason=f"Its devices are needed by {head.user}'s request within quota ({head.id}, "
        f"{head.request.describe()}).",
    )


@dataclass(frozen=True)
class ReclaimSteps:
    """What to do at ``now`` with the chosen containers.

    Attributes:
        warn: chosen and not warned yet: warn their owners now.
        stop: warned at least ``reclaim_grace_minutes`` ago and still chosen: stop them and
            give their devices back.
        cancel: warned earlier but no longer chosen (nobody needs them now): forget the
            warning.
    """

    warn: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()


def stop_due(warned_at: datetime, policy: BorrowingConfig) -> datetime:
    """When a container warned at ``warned_at`` is stopped."""
    return warned_at + timedelta(minutes=policy.reclaim_grace_minutes)


def reclaim_steps(
    choice: ReclaimChoice,
    warned: Mapping[str, datetime],
    now: datetime,
    policy: BorrowingConfig,
) -> ReclaimSteps:
    """The warnings, stops and cancelled warnings of ``choice`` at ``now``; ``warned`` maps
    each container warned earlier to when."""
    chosen = choice.containers
    return ReclaimSteps(
        warn=tuple(c for c in chosen if c not in warned),
        stop=tuple(c for c in chosen if c in warned and now >= stop_due(warned[c], policy)),
        cancel=tuple(sorted(c for c in warned if c not in chosen)),
    )


__all__ = [
    "BorrowDecision",
    "GpuLimits",
    "HoldingFacts",
    "ReclaimChoice",
    "ReclaimSteps",
    "ReservedPredicate",
    "allocate_borrowing",
    "choose_reclaim",
    "in_place",
    "nothing_reserved",
    "reclaim_steps",
    "reclaimable",
    "reserved_by_holder",
    "stop_due",
    "wanted_by",
]
