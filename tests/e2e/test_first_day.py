"""End to end: the answers a user gets on their first day say what happened.

A start or stop that finds its container in that state already says so; on a terminal a
Jupyter container's address is printed once JupyterLab answers, not before.
"""

from __future__ import annotations

import os
import re
import urllib.request
from typing import Any

import pexpect

from support import TEST_IMAGES_YAML, describe

JUPYTER_IMAGES_YAML = (
    TEST_IMAGES_YAML
    + """\
  - name: jupyter
    image: ds01-test/jupyter:latest
    framework: none
    description: JupyterLab, built offline
"""
)
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")


def test_start_and_stop_say_when_there_was_nothing_to_do(ds01d: Any, unix_users: Any) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "box", "--image", "busybox", "--start")
    starts_before = len(d.events_where(action="container.start"))

    again = d.cli("alice", "container-start", "box")
    assert again.returncode == 0, describe(again)
    assert "box was running already; nothing to do." in again.stdout, describe(again)
    assert "Started" not in again.stdout
    assert len(d.events_where(action="container.start")) == starts_before  # nothing was done

    assert d.cli("alice", "container-stop", "box").returncode == 0
    stopped = d.cli("alice", "container-stop", "box")
    assert stopped.returncode == 0, describe(stopped)
    assert "box was not running already; nothing to do." in stopped.stdout, describe(stopped)
    assert d.cli_json("alice", "container-stop", "box")["already"] is True
    assert len(d.events_where(action="container.stop")) == 1


def test_a_jupyter_address_is_printed_once_jupyterlab_answers(
    ds01d: Any, unix_users: Any
) -> None:
    d = ds01d(images=JUPYTER_IMAGES_YAML)
    d.cli_json("alice", "container-create", "lab", "--image", "jupyter")

    terminal = d.spawn("alice", "container-start", "lab", timeout=120)
    terminal.expect("Waiting for JupyterLab to answer")
    terminal.expect(URL_RE)
    port, token = terminal.match.group(1), terminal.match.group(2)

    # At once, without retrying: the address answers when the user first sees it.
    status_url = f"http://127.0.0.1:{port}/api/status"
    request = urllib.request.Request(status_url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0


def test_a_mig_profile_this_server_lacks_is_not_found_and_the_ones_it_has_are_named(
    ds01d: Any, unix_users: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)

    result = d.cli("alice", "container-create", "big", "--image", "busybox", "--mig", "4g.20gb")

    assert result.returncode == 4, describe(result)
    assert "no MIG instance of profile 4g.20gb" in result.stderr, describe(result)
    assert "1g.5gb, 2g.10gb, 3g.20gb" in result.stderr, describe(result)
    assert "quota" not in result.stderr.lower(), describe(result)
    assert d.cli_json("alice", "container-list") == []


def test_a_second_mig_slice_is_refused_with_the_reason_and_nothing_is_made(
    ds01d: Any, unix_users: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    two = ("--image", "busybox", "--mig", "2g.10gb", "--mig", "1g.5gb")

    create = d.cli("alice", "container-create", "pair", *two)
    deploy = d.cli("alice", "container-deploy", "pair", *two, "--json")

    assert create.returncode == 2, describe(create)
    assert "A container gets one MIG instance, not 2 (2g.10gb, 1g.5gb)" in create.stderr
    assert (
        "a CUDA process uses only one MIG instance; ask for a larger profile, or whole GPUs "
        "with --gpus" in create.stderr
    ), describe(create)
    assert deploy.returncode == 2, describe(deploy)
    assert "one MIG instance" in deploy.stdout + deploy.stderr, describe(deploy)
    assert d.cli_json("alice", "container-list") == []
    devices = d.cli_json("alice", "gpu-status")
    assert devices and all(g["holder"] is None for g in devices), devices


def test_a_mistyped_image_is_not_found_with_the_registry_name_meant(
    ds01d: Any, unix_users: Any
) -> None:
    d = ds01d(images=JUPYTER_IMAGES_YAML)

    typo = d.cli("alice", "container-create", "lab", "--image", "jupiter")
    unknown = d.cli("alice", "container-create", "lab", "--image", "tensorflow")
    mistyped_flag = d.cli("alice", "container-create", "lab", "--img", "jupyter")

    assert typo.returncode == 4, describe(typo)
    assert "Did you mean 'jupyter'?" in typo.stderr, describe(typo)
    assert unknown.returncode == 4, describe(unknown)
    assert "Did you mean" not in unknown.stderr and "image-list" in unknown.stderr
    assert mistyped_flag.returncode == 2, describe(mistyped_flag)
    assert "Did you mean '--image'?" in mistyped_flag.stderr, describe(mistyped_flag)
    assert d.cli_json("alice", "container-list") == []


def test_check_limits_says_what_a_limit_comes_to_on_this_host_and_of_how_many(
    ds01d: Any, unix_users: Any
) -> None:
    cores = os.cpu_count() or 1
    limits = f"defaults:\n  cpu_limit: {cores + 6}\n  max_containers: 3\n"
    d = ds01d(resource_limits=limits, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "one", "--image", "busybox")

    text = d.cli("alice", "check-limits")

    assert text.returncode == 0, describe(text)
    assert f"{cores + 6} (this host has {cores}: {cores} in effect)" in text.stdout, describe(text)
    assert "1 of 3 containers" in text.stdout, describe(text)
    assert d.cli_json("alice", "check-limits")["host_cpus"] == cores


def test_retire_without_a_terminal_asks_for_yes_and_removes_nothing(
    ds01d: Any, unix_users: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "env", "--image", "busybox")

    refused = d.cli("alice", "container-retire", "env", "--discard")

    assert refused.returncode == 2, describe(refused)
    assert "--yes" in refused.stderr, describe(refused)
    assert [c["name"] for c in d.cli_json("alice", "container-list")] == ["env"]
    retired = d.cli("alice", "container-retire", "env", "--discard", "--yes")
    assert retired.returncode == 0, describe(retired)
    assert d.cli_json("alice", "container-list") == []


def test_config_check_and_audit_verify_read_the_directories_the_daemon_uses(
    ds01d: Any, unix_users: Any
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)

    checked = d.cli(None, "config", "check")
    verified = d.cli(None, "audit", "verify")

    assert checked.returncode == 0, describe(checked)
    assert f"Checking {d.paths.config_dir} (the one ds01d uses)." in checked.stdout
    assert verified.returncode == 0, describe(verified)
    assert f"in {d.paths.log_dir} (the one ds01d uses)." in verified.stdout
    d.stop()
    default = d.cli(None, "config", "check", "--config-dir", str(d.paths.config_dir))
    assert "(from the command line)" in default.stdout, describe(default)
