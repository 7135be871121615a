"""Pure decisions of ds01d about a user's totals: defaults capped by them, memory that must
fit next to the user's other containers, and the messages that say so."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.resolve import ResolvedAggregate, resolve_aggregate, resolve_limits
from ds01.core.container_resources import memory_total_refusal
from ds01.daemon import schemas as api
from ds01.daemon.creation import container_resources as _resources
from ds01.daemon.limits_enforcement import aggregate_limits
from ds01.errors import QuotaExceeded
from ds01.runtime.cgroups import AggregateLimits

MIB = 1024**2
GIB = 1024**3


def totals(**aggregate: object) -> ResolvedAggregate:
    config = ResourceLimitsConfig.model_validate({"aggregate": {"defaults": aggregate}})
    return resolve_aggregate(config, "alice", ())


def request(**fields: object) -> api.CreateContainerRequest:
    return api.CreateContainerRequest(name="t", image="busybox", **fields)  # type: ignore[arg-type]


LIMITS = resolve_limits(
    ResourceLimitsConfig.model_validate({"defaults": {"cpu_limit": 4, "memory_limit": "8G"}}),
    "alice",
    (),
)


def test_the_message_names_the_total_the_others_and_what_is_left() -> None:
    message = memory_total_refusal(4 * GIB, None, 2 * GIB, [("thesis", 2 * GIB), ("nb", GIB)])
    assert message == (
        "Memory total reached: your containers may use 4G together; thesis and nb already "
        "have 3G; this one asks for 2G. Ask for --memory 1G or less, or stop one."
    )


def test_an_unlimited_container_counts_as_the_whole_total() -> None:
    message = memory_total_refusal(4 * GIB, None, MIB * 100, [("free", None)])
    assert message is not None
    assert "free already has 4G (free: no memory limit, which counts as all of it)" in message
    assert message.endswith("Stop or remove one of them first (`container-stop NAME`).")


def test_starting_a_container_that_does_not_fit_names_it() -> None:
    message = memory_total_refusal(4 * GIB, "nb", GIB, [("a", 2 * GIB), ("big", 2 * GIB)])
    assert message is not None
    assert "nb asks for 1G" in message
    assert message.endswith(
        "Stop one of the others first (`container-stop NAME`), or re-create nb with a "
        "smaller --memory."
    )


def test_a_container_alone_above_the_total() -> None:
    message = memory_total_refusal(GIB, None, 2 * GIB, [])
    assert message == (
        "Memory total reached: your containers may use 1G together; this one asks for 2G. "
        "Ask for --memory 1G or less, or stop one."
    )


@given(
    total=st.one_of(st.none(), st.integers(min_value=MIB, max_value=64 * GIB)),
    asked=st.one_of(st.none(), st.integers(min_value=MIB, max_value=64 * GIB)),
    others=st.lists(
        st.one_of(st.none(), st.integers(min_value=MIB, max_value=64 * GIB)), max_size=5
    ),
)
def test_refused_exactly_when_the_limits_would_add_up_to_more_than_the_total(
    total: int | None, asked: int | None, others: list[int | None]
) -> None:
    named = [(f"c{i}", size) for i, size in enumerate(others)]
    message = memory_total_refusal(total, None, asked, named)
    if total is None:
        assert message is None
        return
    need = sum(total if size is None else size for size in [*others, asked])
    assert (message is None) == (need <= total)


def test_defaults_are_capped_by_the_totals_and_requests_above_them_refused() -> None:
    aggregate = totals(cpu_limit=0.5, memory_limit="1G")
    resources = _resources(LIMITS, request(), 8, aggregate)
    assert (resources.cpus, resources.memory_bytes) == (0.5, GIB)
    asked = _resources(LIMITS, request(cpus=0.25, memory="4G"), 8, aggregate)
    assert (asked.cpus, asked.memory_bytes) == (0.25, 4 * GIB)  # memory: checked under the lock
    with pytest.raises(QuotaExceeded, match=r"above your CPU total of 0\.5 CPUs"):
        _resources(LIMITS, request(cpus=1), 8, aggregate)
    unlimited = _resources(LIMITS, request(), 8, totals())
    assert (unlimited.cpus, unlimited.memory_bytes) == (4.0, 8 * GIB)


def test_resolved_totals_become_cgroup_limits() -> None:
    assert aggregate_limits(totals(cpu_limit=2, memory_limit="96G", pids_limit=100)) == (
        AggregateLimits(cpus=2.0, memory_bytes=96 * GIB, pids=100)
    )
    assert aggregate_limits(totals()).unlimited
