"""Whether a new container's answers fit what ds01d reports to its user. Pure.

``--guided`` asks these as each answer is given, so that a name that is taken, more GPUs
than the user may have or this server has, or a container over ``max_containers`` is asked
again with the reason, instead of failing after the final "Proceed? y". The inputs are the
answers of the user's own API calls (``GET /v1/limits``, ``/v1/containers``, ``/v1/queue``,
``/v1/gpus``) as JSON, so nothing here needs more than the user may see, and the CLI calls
it without pydantic. ds01d still decides at the create: these checks only say early what
it would refuse.

Each function returns ``None`` when the answer fits, else one sentence for the user that
says what is wrong and what to do.
"""

from __future__ import annotations

from typing import Any

#: One object of an API answer, as parsed JSON.
Json = dict[str, Any]


def _plural(count: float, noun: str) -> str:
    return f"{count:g} {noun}{'' if count == 1 else 's'}"


def _queued_creates(queued: list[Json]) -> list[Json]:
    return [q for q in queued if q.get("kind") == "create"]


def container_room_problem(limits: Json, containers: list[Json], queued: list[Json]) -> str | None:
    """Whether the user may have one more container: their containers and their queued
    creates (each becomes one) against ``max_containers``, as ds01d counts them."""
    limit = (limits.get("limits") or {}).get("max_containers")
    creates = _queued_creates(queued)
    taken = len(containers) + len(creates)
    if limit is None or taken < limit:
        return None
    held = [str(c["name"]) for c in containers] + [
        f"{q['container']} (queued as {q['id']})" for q in creates
    ]
    what_to_do = "remove one first (`container-remove NAME`)"
    if creates:
        what_to_do += " or withdraw a queued one (`ds01 queue cancel ID`)"
    listed = f" ({', '.join(held)})" if held else ""
    return f"You have {taken} of {_plural(limit, 'container')}{listed}: {what_to_do}."


def container_name_problem(name: str, containers: list[Json], queued: list[Json]) -> str | None:
    """Whether ``name`` is free among the user's containers and queued creates."""
    if any(c.get("name") == name for c in containers):
        return (
            f"You already have a container named {name}: pick another name, or "
            f"`container-remove {name}` first."
        )
    waiting = next((q for q in _queued_creates(queued) if q.get("container") == name), None)
    if waiting is not None:
        return (
            f"A request for a container named {name} is already queued ({waiting['id']}): "
            "pick another name."
        )
    return None


def gpu_count_problem(count: int, limits: Json, gpu_status: Json) -> str | None:
    """Whether ``count`` whole GPUs fit the user's limits and this server, in ds01d's order
    of checks: whole GPUs allowed, the per-container cap, the user's total, then the whole
    GPUs this server has for users (none reserved). A count that fits but finds none free
    now is fine: the request waits in the queue."""
    if count == 0:
        return None
    quota = limits.get("limits") or {}
    if quota.get("allow_full_gpu") is False:
        instead = " (a MIG slice is asked next)" if quota.get("allow_mig") is not False else ""
        return f"Your limits do not allow whole GPUs: answer 0{instead}."
    cap = quota.get("max_gpus_per_container")
    if cap is not None and count > cap:
        return f"Your limit is {_plural(cap, 'GPU')} per container."
    total = quota.get("gpu_limit")
    usage = limits.get("usage") or {}
    used = float(usage.get("gpu_equivalents") or 0)
    if total is not None and used + count > total:
        holders = ", ".join(usage.get("gpu_containers") or [])
        in_use = f"{used:g} in use by {holders}" if holders else f"{used:g} in use"
        left = max(total - used, 0)
        return (
            f"Your limit is {_plural(total, 'GPU')} in all ({in_use}): at most {left:g} "
            "more; ask for fewer, or stop or remove one first (`container-stop NAME`)."
        )
    whole = sum(
        1
        for d in gpu_status.get("devices") or []
        if d.get("kind") == "gpu" and not d.get("reserved")
    )
    if count > whole:
        has = f"only {_plural(whole, 'whole GPU')}" if whole else "no whole GPU"
        return f"This server has {has} for containers (`gpu-status`)."
    return None


__all__ = ["container_name_problem", "container_room_problem", "gpu_count_problem"]
