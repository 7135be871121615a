"""Which processes on the GPUs are outside ds01's allocation (``ds01.core.gpu_use``)."""

from __future__ import annotations

from ds01.core.gpu_use import (
    ContainerHolding,
    ProcessFacts,
    container_id_of,
    new_uses,
    unmanaged_uses,
)

A = "a" * 64
B = "0123456789abcdef" * 4
C = "c" * 64

V1_CGROUPFS = f"12:memory:/docker/{A}\n11:devices:/docker/{A}\n1:name=systemd:/docker/{A}\n"
V1_DS01_PARENT = f"7:cpu,cpuacct:/ds01/alice/{A}\n"
V1_SYSTEMD = f"4:pids:/system.slice/docker-{A}.scope\n"
V2_SYSTEMD = f"0::/ds01.slice/ds01-alice.slice/docker-{A}.scope\n"
V2_CGROUPFS = f"0::/docker/{A}\n"
HOST_V1 = "12:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n"
HOST_V2 = "0::/user.slice/user-1000.slice/session-3.scope\n"


def test_the_container_id_is_found_in_every_cgroup_layout() -> None:
    for text in (V1_CGROUPFS, V1_DS01_PARENT, V1_SYSTEMD, V2_SYSTEMD, V2_CGROUPFS):
        assert container_id_of(text) == A, text
    assert container_id_of(HOST_V1) is None
    assert container_id_of(HOST_V2) is None
    assert container_id_of(f"0::/docker/{A}x\n") is None  # not a whole segment
    assert container_id_of("") is None


def test_processes_outside_the_allocation_are_flagged() -> None:
    holdings = {
        A: ContainerHolding(A, "train", "alice", frozenset({"GPU-0"})),
        B: ContainerHolding(B, "idle", "bob", frozenset()),
    }
    processes = [
        ProcessFacts("GPU-0", 10, V2_SYSTEMD, "alice"),  # alice's container on its GPU
        ProcessFacts("GPU-1", 11, V1_CGROUPFS, "alice"),  # alice's container, not its GPU
        ProcessFacts("GPU-1", 12, HOST_V2, "carol"),  # carol's shell
        ProcessFacts("GPU-0", 13, f"0::/docker/{C}\n", "root"),  # a container not ds01's
        ProcessFacts("MIG-2", 14, f"0::/system.slice/docker-{B}.scope\n", "bob"),  # released
        ProcessFacts("GPU-1", 15, None, "dave"),  # gone before its cgroup was read
    ]

    found = unmanaged_uses(processes, holdings)

    assert [(u.device_uuid, u.pid, u.reason, u.container, u.user) for u in found] == [
        ("GPU-0", 13, "other-container", None, "root"),
        ("GPU-1", 11, "not-held", "train", "alice"),
        ("GPU-1", 12, "host", None, "carol"),
        ("MIG-2", 14, "not-held", "idle", "bob"),
    ]
    assert found[0].container_id == C and found[2].container_id is None


def test_each_use_is_reported_once_while_it_lasts() -> None:
    holdings: dict[str, ContainerHolding] = {}
    first = unmanaged_uses([ProcessFacts("GPU-0", 12, HOST_V2, "carol")], holdings)
    fresh, reported = new_uses(first, frozenset())
    assert fresh == first
    again, reported = new_uses(first, reported)
    assert again == []
    gone, reported = new_uses([], reported)
    assert gone == [] and reported == frozenset()
    back, _ = new_uses(first, reported)  # the pid came back (a new process): new again
    assert back == first
