"""Checks of guided answers against what ds01d reports to the user
(``ds01.core.answer_checks``), and the public-key answer of ``user-setup --guided``."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from ds01.cli.validators import public_key
from ds01.core.answer_checks import (
    container_name_problem,
    container_room_problem,
    gpu_count_problem,
)


def limits(used: float = 0.0, holders: tuple[str, ...] = (), **quota: Any) -> dict[str, Any]:
    """A ``GET /v1/limits`` answer."""
    return {
        "limits": quota,
        "usage": {"gpu_equivalents": used, "containers": 0, "gpu_containers": list(holders)},
    }


def gpus(whole: int, *, reserved: int = 0, mig: int = 0) -> dict[str, Any]:
    """A ``GET /v1/gpus`` answer: ``whole`` GPUs (the last ``reserved`` of them kept out of
    allocation) and ``mig`` MIG slices."""
    devices = [{"kind": "gpu", "reserved": i >= whole - reserved} for i in range(whole)]
    devices += [{"kind": "mig", "reserved": False} for _ in range(mig)]
    return {"devices": devices}


def containers(*names: str) -> list[dict[str, Any]]:
    return [{"name": n} for n in names]


def queued(container: str, kind: str = "create", id: str = "q1") -> dict[str, Any]:
    return {"id": id, "container": container, "kind": kind}


def test_room_counts_containers_and_queued_creates_as_ds01d_does() -> None:
    full = limits(max_containers=3)
    assert container_room_problem(full, containers("a", "b"), []) is None
    assert container_room_problem(full, containers("a", "b"), [queued("c", "start")]) is None
    assert container_room_problem(full, containers("a", "b", "c"), []) == (
        "You have 3 of 3 containers (a, b, c): remove one first (`container-remove NAME`)."
    )
    problem = container_room_problem(full, containers("a", "b"), [queued("c", id="abc")])
    assert problem is not None
    assert problem.startswith("You have 3 of 3 containers (a, b, c (queued as abc))")
    assert "`ds01 queue cancel ID`" in problem
    assert container_room_problem(limits(max_containers=None), containers(*"abcdef"), []) is None
    assert container_room_problem(limits(), containers(*"abcdef"), []) is None


def test_a_taken_name_is_named_with_what_to_do() -> None:
    assert container_name_problem("thesis", containers("nb"), []) is None
    assert container_name_problem("thesis", containers("thesis"), []) == (
        "You already have a container named thesis: pick another name, or "
        "`container-remove thesis` first."
    )
    waiting = container_name_problem("thesis", [], [queued("thesis", id="f00")])
    assert waiting is not None and "already queued (f00)" in waiting
    # A queued start is for a container that exists; only creates take a new name.
    assert container_name_problem("thesis", [], [queued("thesis", "start")]) is None


@pytest.mark.parametrize(
    ("count", "quota", "server", "expected"),
    [
        (0, limits(max_gpus_per_container=0, gpu_limit=0), gpus(0), None),
        (1, limits(max_gpus_per_container=1), gpus(3), None),
        (10, limits(max_gpus_per_container=1), gpus(3), "Your limit is 1 GPU per container."),
        (3, limits(max_gpus_per_container=2), gpus(8), "Your limit is 2 GPUs per container."),
        (
            2,
            limits(used=1.0, holders=("nb",), gpu_limit=2),
            gpus(4),
            "Your limit is 2 GPUs in all (1 in use by nb): at most 1 more; ask for fewer, "
            "or stop or remove one first (`container-stop NAME`).",
        ),
        (1, limits(used=1.0, holders=("nb",), gpu_limit=2), gpus(4), None),
        (4, limits(), gpus(3, mig=4), "This server has only 3 whole GPUs for containers"),
        (3, limits(), gpus(3, reserved=1), "This server has only 2 whole GPUs for containers"),
        (1, limits(), gpus(0, mig=7), "This server has no whole GPU for containers"),
        (1, limits(allow_full_gpu=False), gpus(4), "Your limits do not allow whole GPUs"),
    ],
)
def test_gpu_counts_are_checked_in_ds01ds_order(
    count: int, quota: dict[str, Any], server: dict[str, Any], expected: str | None
) -> None:
    problem = gpu_count_problem(count, quota, server)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected), problem


def key_line(kind: str = "ssh-ed25519") -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + b"\0" * 36
    return f"{kind} {base64.b64encode(blob).decode()} me@laptop"


def test_a_key_line_is_taken_as_it_is(tmp_path: Path) -> None:
    assert public_key(key_line()) == key_line()
    with pytest.raises(ValueError, match="PRIVATE"):
        public_key("-----BEGIN OPENSSH PRIVATE KEY----- abc")
    with pytest.raises(ValueError, match="expected one line"):
        public_key("ssh-ed2559 AAAA me@laptop")


def test_a_key_file_must_exist_and_hold_a_public_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "laptop.pub").write_text(key_line("ssh-rsa") + "\n")
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n")
    (tmp_path / "notes.txt").write_text("remember the milk\n")

    assert public_key("~/laptop.pub") == str(tmp_path / "laptop.pub")  # ~ expanded
    with pytest.raises(ValueError, match=r"no such file: ~/missing\.pub"):
        public_key("~/missing.pub")
    with pytest.raises(ValueError, match="PRIVATE key"):
        public_key("~/id_ed25519")
    with pytest.raises(ValueError, match="expected one line like"):
        public_key(str(tmp_path / "notes.txt"))
