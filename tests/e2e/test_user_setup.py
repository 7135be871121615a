"""End to end: a fresh Unix user runs ``user-setup`` and works in JupyterLab on a GPU.

The promise: from "I have an account" to "my notebook runs on a GPU" in minutes, with no
Docker knowledge. A brand-new user runs ``user-setup --yes``; the test then talks to
JupyterLab at the URL that was printed, with the token that was printed, as a browser would
through the SSH tunnel, saves a notebook and checks that it landed in the user's workspace
on the host, owned by the user. The starter image (``ds01-test/jupyter``) is built offline
by ``make images`` (scripts/build-jupyter-image.sh).

The wall time of the whole path is printed (``pytest -s``): a measurement, not an assertion.
"""

from __future__ import annotations

import json
import pwd
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from support import TEST_IMAGE, describe, ensure_user, remove_user

JUPYTER_IMAGE = "ds01-test/jupyter:latest"
FRESH_USER = "frank"

IMAGES = f"""\
images:
  - name: busybox
    image: {TEST_IMAGE}
    framework: none
    description: BusyBox test image
  - name: jupyter
    image: {JUPYTER_IMAGE}
    framework: none
    description: JupyterLab starter, built offline
starter: jupyter
"""

LIMITS = """\
defaults:
  gpu_limit: 1
  max_gpus_per_container: 1
  memory_limit: 2G
  cpu_limit: 1
"""

URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl frank@laptop"
)


@pytest.fixture
def jupyter_image(docker_client: Any) -> str:
    try:
        docker_client.images.get(JUPYTER_IMAGE)
    except Exception:
        pytest.fail(f"{JUPYTER_IMAGE} is missing: run `make images`", pytrace=False)
    return JUPYTER_IMAGE


@pytest.fixture
def fresh_user(unix_users: dict[str, Any]) -> Iterator[pwd.struct_passwd]:
    """A Unix user made for this test alone: no workspace, no ~/.ssh, no containers."""
    remove_user(FRESH_USER)
    ensure_user(FRESH_USER)
    try:
        yield pwd.getpwnam(FRESH_USER)
    finally:
        remove_user(FRESH_USER)


def http(url: str, *, token: str | None = None, method: str = "GET", body: Any = None) -> Any:
    """One request to JupyterLab; returns (status, parsed JSON or None)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
            return answer.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_a_fresh_user_gets_jupyterlab_on_a_gpu_and_their_notebook_lands_in_the_workspace(
    ds01d: Any, fresh_user: pwd.struct_passwd, jupyter_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    home = Path(fresh_user.pw_dir)
    assert not (home / "workspace").exists()
    started = time.monotonic()

    result = d.cli(
        FRESH_USER, "user-setup", "--yes", "--host", "gpu1.lab.test", "--add-ssh-key",
        PUBLIC_KEY, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    setup_seconds = time.monotonic() - started
    match = URL_RE.search(result.stdout)
    assert match, describe(result)
    url, port, token = match[0], int(match[1]), match[2]
    base = f"http://127.0.0.1:{port}"

    # JupyterLab answers at the printed URL with the printed token, and not without it.
    status, answer = http(f"{base}/api/status", token=token)
    assert status == 200 and "started" in answer
    assert http(f"{base}/api/status")[0] == 403
    # The user's notebook, saved through JupyterLab, lands in their workspace on the host.
    notebook = {
        "type": "notebook",
        "content": {
            "cells": [{"cell_type": "code", "source": "print(1 + 1)", "metadata": {},
                       "outputs": [], "execution_count": None}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
        },
    }  # fmt: skip
    status, _ = http(f"{base}/api/contents/first.ipynb", token=token, method="PUT", body=notebook)
    assert status in (200, 201)
    saved = home / "workspace" / "first.ipynb"
    assert saved.is_file() and saved.stat().st_uid == fresh_user.pw_uid
    assert "print(1 + 1)" in saved.read_text()
    landed_seconds = time.monotonic() - started
    # The notebook runs: its kernel, in the container as the user, on the MIG slice.
    source = "import os; print(os.getuid(), os.environ['DS01_GPUS'])"
    notebook["content"]["cells"].append(
        {"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
         "execution_count": None}
    )  # fmt: skip
    assert http(f"{base}/api/contents/first.ipynb", token=token, method="PUT", body=notebook)[0]
    ran = d.cli(
        FRESH_USER, "container-open", "notebook", "--", "jupyter", "nbconvert", "--to",
        "notebook", "--execute", "first.ipynb", "--output", "ran.ipynb", timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, describe(ran)
    outputs = [
        "".join(o.get("text", ""))
        for cell in json.loads((home / "workspace" / "ran.ipynb").read_text())["cells"]
        for o in cell["outputs"]
    ]
    print(
        f"\nuser-setup for a fresh user: {setup_seconds:.1f} s to JupyterLab answering; "
        f"{landed_seconds:.1f} s until the notebook was in the workspace"
    )

    # The starter got the smallest device the quota allows: a 1g.5gb MIG slice (1/7).
    (container,) = d.cli_json(FRESH_USER, "container-list")
    assert container["name"] == "notebook" and container["status"] == "running"
    assert len(container["gpus"]) == 1 and container["gpus"][0].startswith("MIG-")
    assert container["gpu_equivalents"] == pytest.approx(1 / 7, abs=1e-3)
    assert outputs == ["2\n", f"{fresh_user.pw_uid} {container['gpus'][0]}\n"]
    assert container["jupyter_url"] == url
    assert [(p["host_ip"], p["container_port"]) for p in container["ports"]] == [
        ("127.0.0.1", 8888)
    ]
    listing = d.cli(FRESH_USER, "container-list")
    assert f"notebook: JupyterLab at {url}" in listing.stdout, describe(listing)

    # What the laptop needs: the SSH block with the tunnel, the key, the guide.
    ssh_config = (home / ".ds01" / "ssh-config").read_text()
    assert "HostName gpu1.lab.test" in ssh_config
    assert f"LocalForward 8888 127.0.0.1:{port}" in ssh_config
    assert f"ssh -N -L 8888:127.0.0.1:{port} {FRESH_USER}@gpu1.lab.test" in result.stdout
    authorized = home / ".ssh" / "authorized_keys"
    assert authorized.read_text().count("AAAAC3NzaC1lZDI1NTE5") == 1
    assert authorized.stat().st_mode & 0o077 == 0
    assert not any(p.name.startswith("id_") for p in (home / ".ssh").iterdir())  # no key made
    vscode = json.loads((home / ".vscode-server/data/Machine/settings.json").read_text())
    assert vscode["files.watcherExclude"]["**/data/**"] is True
    assert (home / ".ds01" / "first-steps.txt").read_text().count(url) == 1

    # Re-running is safe: the same container, URL and token; the key is not added twice.
    again = d.cli(FRESH_USER, "user-setup", "--yes", "--add-ssh-key", PUBLIC_KEY, "--json")
    assert again.returncode == 0, describe(again)
    report = json.loads(again.stdout)
    assert report["jupyter_url"] == url
    assert len(d.cli_json(FRESH_USER, "container-list")) == 1
    assert authorized.read_text().count("AAAAC3NzaC1lZDI1NTE5") == 1
    assert "that key is authorised already" in report["ssh"]["notes"]
    # A stopped starter is started again on re-run, with the same URL (a fixed host port).
    assert d.cli(FRESH_USER, "container-stop", "notebook").returncode == 0
    assert d.cli_json(FRESH_USER, "user-setup", "--yes")["jupyter_url"] == url
    assert http(f"{base}/api/status", token=token)[0] == 200


def test_user_setup_refuses_a_private_key_and_says_when_no_starter_is_configured(
    ds01d: Any, unix_users: dict[str, Any], test_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=IMAGES.replace("starter: jupyter\n", ""))
    private = d.cli(
        "carol", "user-setup", "--yes", "--add-ssh-key",
        "-----BEGIN OPENSSH PRIVATE KEY-----", "--no-container",
    )  # fmt: skip
    assert private.returncode == 2, describe(private)
    assert "PRIVATE key" in private.stderr
    no_starter = d.cli("carol", "user-setup", "--yes")
    # The machine's set-up, in words: what the admin does, and what the user can do now
    # with an option that `--help` lists.
    assert no_starter.returncode == 1, describe(no_starter)
    assert "names none with `starter:`" in no_starter.stderr
    assert "sets `starter: NAME` in images.yaml" in no_starter.stderr
    assert "`user-setup --image NAME` with an image of `image-list` (busybox" in no_starter.stderr
    assert "--image NAME" in d.cli("carol", "user-setup", "--help").stdout
    # --image names one; --no-gpu keeps the GPUs free; a non-Jupyter image has no URL.
    busybox = d.cli_json("carol", "user-setup", "--yes", "--image", "busybox", "--no-gpu")
    assert busybox["container"]["gpus"] == [] and busybox["jupyter_url"] is None


def test_guided_user_setup_takes_only_a_public_key_file_that_exists(
    ds01d: Any, unix_users: dict[str, Any], home_dir: Any
) -> None:
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n"
    keys = home_dir("carol", {"laptop.pub": PUBLIC_KEY + "\n", "id_ed25519": private})
    here = f"~/{keys.name}"
    child = d.spawn("carol", "user-setup", "--guided")
    child.expect_exact("Name of your starter container [notebook]: ")
    child.sendline("")
    key_prompt = "Your laptop's PUBLIC key line or .pub file to authorise (Enter = none): "
    child.expect_exact(key_prompt)
    child.sendline(f"{here}/missing.pub")
    child.expect_exact(f"no such file: {here}/missing.pub")
    child.expect_exact(key_prompt)
    child.sendline(f"{here}/id_ed25519")
    child.expect_exact("that is a PRIVATE key")
    child.expect_exact(key_prompt)
    child.sendline(f"{here}/laptop.pub")
    child.expect_exact("This server's name as your laptop reaches it (Enter = its FQDN): ")
    child.sendline("gpu1.example.org")
    child.expect_exact("Start it without a GPU? [y/N]: ")
    child.sendline("")
    child.expect_exact("Go ahead without asking again? [Y/n]: ")
    child.sendline("")
    # The command names the file itself: `~` expanded, checked to hold a public key.
    child.expect_exact(f"--add-ssh-key {keys}/laptop.pub --host gpu1.example.org --yes\r\n")
    child.expect_exact("Proceed? [y/N]: ")
    child.sendline("n")
    child.expect_exact("Nothing done.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert not (Path(unix_users["carol"].pw_dir) / ".ssh" / "authorized_keys").exists()
