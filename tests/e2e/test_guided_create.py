"""End to end: ``container-create --guided`` through a pty, as a real user, against a real
ds01d (its embedded default inventory: 4 simulated A100s, GPU 3 in MIG slices).

A bad answer is asked again with the reason, the choices come from the daemon, the
equivalent command line is shown, "n" creates nothing and "y" creates exactly that. Answers
are checked against ds01d as they are given (a name in use, more GPUs than the user's
limit or the server has), and a user at their container limit is told before the first
question.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pexpect

from support import TEST_IMAGES_YAML, Ds01Daemon


def managed_names(docker_client: Any) -> list[str]:
    containers = docker_client.containers.list(all=True, filters={"label": "ds01.managed=true"})
    return sorted(c.labels.get("ds01.name", "") for c in containers)


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus if child.exitstatus is not None else -1)


def test_guided_create_asks_again_shows_the_command_and_n_creates_nothing(
    ds01d: Callable[..., Ds01Daemon], docker_client: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    child = d.spawn("alice", "container-create", "--guided")
    child.expect_exact("Name of the new container (e.g. thesis): ")
    child.sendline("a/b")
    child.expect_exact("Invalid container name 'a/b'")
    child.expect_exact("Name of the new container (e.g. thesis): ")
    child.sendline("guided")
    # The images present here, from ds01d; a name that is not one of them is asked again.
    child.expect_exact("1) busybox ")
    child.expect_exact("Image to start from [busybox]: ")
    child.sendline("pytorch")
    child.expect_exact("'pytorch' is not one of: busybox, busybox-alt.")
    child.sendline("2")
    child.expect_exact("How many whole GPUs? (0 = none, or a MIG slice next) [0]: ")
    child.sendline("two")
    child.expect_exact("expected a whole number from 0 to 64")
    child.sendline("1")
    child.expect_exact("Memory, e.g. 16G (Enter = your limit): ")
    child.sendline("lots")
    child.expect_exact("invalid size 'lots'")
    child.sendline("")
    child.expect_exact("Publish a port, e.g. 8888 for Jupyter (Enter = none): ")
    child.sendline("")
    child.expect_exact("Start it right away? [Y/n]: ")
    child.sendline("n")
    child.expect_exact("The command:")
    child.expect_exact("container-create guided --image busybox-alt --gpus 1\r\n")
    child.expect_exact("Proceed? [y/N]: ")
    child.sendline("n")
    child.expect_exact("Nothing done.")
    assert finish(child) == 0
    assert managed_names(docker_client) == []
    assert d.cli_json("alice", "container-list") == []
    assert not d.events_where(action="container.create")


def test_guided_create_yes_creates_it_with_a_mig_slice(
    ds01d: Callable[..., Ds01Daemon], docker_client: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    child = d.spawn("alice", "container-create", "--guided")
    child.expect_exact("Name of the new container (e.g. thesis): ")
    child.sendline("nb")
    child.expect_exact("Image to start from [busybox]: ")
    child.sendline("")
    child.expect_exact("[0]: ")
    child.sendline("0")
    # The MIG profiles of this server, from ds01d, with how many are free.
    child.expect_exact("1) 3g.20gb  1 free now")
    child.expect_exact("3) 1g.5gb   2 free now")
    child.expect_exact("A MIG slice instead? (a profile, or Enter for no GPU): ")
    child.sendline("3")
    child.expect_exact("Memory, e.g. 16G (Enter = your limit): ")
    child.sendline("64m")
    child.expect_exact("Publish a port, e.g. 8888 for Jupyter (Enter = none): ")
    child.sendline("80:8888")
    child.expect_exact("host port 80 is below 1024")
    child.sendline("8888")
    child.expect_exact("Start it right away? [Y/n]: ")
    child.sendline("")
    child.expect_exact(
        "container-create nb --image busybox --mig 1g.5gb --memory 64m --port 8888 --start\r\n"
    )
    child.expect_exact("Proceed? [y/N]: ")
    child.sendline("y")
    child.expect_exact("Created and started nb (busybox) with MIG-")
    assert finish(child) == 0

    assert managed_names(docker_client) == ["nb"]
    (row,) = d.cli_json("alice", "container-list")
    assert row["name"] == "nb" and row["status"] == "running"
    assert len(row["gpus"]) == 1 and row["gpus"][0].startswith("MIG-")
    assert [p["container_port"] for p in row["ports"]] == [8888]


def test_guided_create_checks_each_answer_with_ds01d_as_it_is_given(
    ds01d: Callable[..., Ds01Daemon], docker_client: Any
) -> None:
    """The embedded default limits: 1 GPU per container, 3 containers."""
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "thesis", "--image", "busybox")
    child = d.spawn("alice", "container-create", "--guided")
    child.expect_exact("Name of the new container (e.g. thesis): ")
    child.sendline("thesis")
    child.expect_exact("You already have a container named thesis: pick another name")
    child.expect_exact("Name of the new container (e.g. thesis): ")
    child.sendline("nb")
    child.expect_exact("Image to start from [busybox]: ")
    child.sendline("")
    child.expect_exact("[0]: ")
    child.sendline("10")
    child.expect_exact("Your limit is 1 GPU per container. Please try again.")
    child.expect_exact("[0]: ")
    child.sendline("1")
    child.expect_exact("Memory, e.g. 16G (Enter = your limit): ")
    child.sendline("")
    child.expect_exact("Publish a port, e.g. 8888 for Jupyter (Enter = none): ")
    child.sendline("")
    child.expect_exact("Start it right away? [Y/n]: ")
    child.sendline("n")
    child.expect_exact("container-create nb --image busybox --gpus 1\r\n")
    child.expect_exact("Proceed? [y/N]: ")
    child.sendline("y")
    child.expect_exact("Created nb (busybox)")
    assert finish(child) == 0
    assert managed_names(docker_client) == ["nb", "thesis"]
    rows = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert len(rows["nb"]["gpus"]) == 1


def test_guided_create_refuses_more_gpus_than_the_server_has(
    ds01d: Callable[..., Ds01Daemon], docker_client: Any
) -> None:
    """4 simulated A100s, GPU 3 in MIG slices: 3 whole GPUs, whatever bob's limits allow."""
    d = ds01d(
        images=TEST_IMAGES_YAML,
        resource_limits="""
            users:
              bob: {gpu_limit: null, max_gpus_per_container: null}
        """,
    )
    child = d.spawn("bob", "container-create", "--guided")
    child.expect_exact("Name of the new container (e.g. thesis): ")
    child.sendline("big")
    child.expect_exact("Image to start from [busybox]: ")
    child.sendline("")
    child.expect_exact("[0]: ")
    child.sendline("10")
    child.expect_exact("This server has only 3 whole GPUs for containers (`gpu-status`).")
    child.expect_exact("[0]: ")
    child.sendintr()
    child.expect_exact("Stopped: nothing done.")
    finish(child)
    assert managed_names(docker_client) == []


def test_guided_create_over_the_container_limit_says_so_before_the_first_question(
    ds01d: Callable[..., Ds01Daemon], docker_client: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    for name in ("a", "b", "c"):
        d.cli_json("alice", "container-create", name, "--image", "busybox")
    child = d.spawn("alice", "container-create", "--guided")
    index = child.expect_exact(["You have 3 of 3 containers (a, b, c)", "Name of the new"])
    assert index == 0, "the first question was asked over the limit"
    child.expect_exact("remove one first (`container-remove NAME`).")
    assert finish(child) == 3  # quota
    assert managed_names(docker_client) == ["a", "b", "c"]
