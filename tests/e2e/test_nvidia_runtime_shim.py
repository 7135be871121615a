"""End to end: simulated GPUs are safe on a GPU server whose Docker default runtime is nvidia.

nvidia-container-runtime reads ``NVIDIA_VISIBLE_DEVICES`` from the OCI bundle of every
container it starts and injects those devices; a made-up simulated UUID there would fail
the start. The test registers with the machine's dockerd a runtime named ``nvidia`` that is
a shim: it copies the bundle's ``config.json`` (what a real nvidia runtime would read) and
then execs ``runc`` with its arguments unchanged. ds01d (simulated backend) creates a
container with a GPU while ``nvidia`` is the *default* runtime, as on a GPU server; the
container starts through the shim, and the recorded environment must name no simulated
UUID in ``NVIDIA_VISIBLE_DEVICES`` (``void``), while ``DS01_GPUS`` names what ds01
allocated.

Why the default runtime, and why that is safe here: ds01 has no runtime option (a GPU
server needs none: real GPUs go by ``DeviceRequest``), and adding one only for a test would
test something no server runs. dockerd reloads ``runtimes`` and ``default-runtime`` from
``/etc/docker/daemon.json`` on SIGHUP, without touching running containers; the test keeps
every key the file had, waits until ``docker info`` shows each change, and restores the
file (and reloads) in a ``finally``. A container takes the default runtime when it is
*created*, so ``nvidia`` is the default only around the one create: the runtime stays
registered (a start needs it) until the container is removed. All this happens under the
machine lock that every docker/e2e session and benchmark holds, so no other test creates
a container meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import skip_or_fail
from support import TEST_IMAGES_YAML, describe, wait_until

DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKERD_PID = Path("/var/run/docker.pid")
RUNTIME = "nvidia"

SHIM = """#!/bin/sh
# A Docker runtime named nvidia for a test: keeps a copy of each bundle's config.json (the
# OCI spec, whose process.env a real nvidia runtime reads) and then is runc.
previous=""
for argument in "$@"; do
    if [ "$previous" = "--bundle" ]; then
        cp "$argument/config.json" "{records}/$(basename "$argument").json"
    fi
    previous="$argument"
done
exec {runc} "$@"
"""


class DockerdRuntimes:
    """Edits of dockerd's runtimes through /etc/docker/daemon.json and SIGHUP, undone by
    :meth:`restore`.

    A reload replaces the runtimes dockerd has with those the file names (``runc`` is
    always kept) and changes the default only to one the file names; a file without the
    keys changes nothing. So every edit names all the runtimes ``docker info`` showed
    before, and :meth:`restore` reloads exactly those and the old default, then puts the
    file back as it was (or removes it) without another reload: what dockerd runs then is
    what that file gives."""

    def __init__(self, docker_client: Any) -> None:
        self.docker = docker_client
        self.original = DAEMON_JSON.read_text() if DAEMON_JSON.exists() else None
        self.settings: dict[str, Any] = json.loads(self.original) if self.original else {}
        info = docker_client.info()
        self.runtimes: dict[str, Any] = info["Runtimes"]
        self.default: str = info["DefaultRuntime"]
        if RUNTIME in self.runtimes:
            skip_or_fail(
                f"dockerd has a runtime named nvidia already ({self.runtimes[RUNTIME]}): the "
                "shim cannot be it. If its path ends in /nvidia-shim, a run of this test was "
                f"killed: take it out of {DAEMON_JSON} (and set default-runtime back to runc), "
                "then send dockerd SIGHUP"
            )

    def apply(self, shim: Path, *, default: bool) -> None:
        """Register ``shim`` as runtime ``nvidia``, the default one if ``default``."""
        runtimes = {**self.runtimes, RUNTIME: {"path": str(shim)}}
        self._reload(runtimes, RUNTIME if default else self.default)

    def restore(self) -> None:
        try:
            self._reload(self.runtimes, self.default)
        finally:
            if self.original is None:
                DAEMON_JSON.unlink(missing_ok=True)
            else:
                DAEMON_JSON.write_text(self.original)

    def _reload(self, runtimes: dict[str, Any], default: str) -> None:
        named = {name: runtime for name, runtime in runtimes.items() if name != "runc"}
        settings = {**self.settings, "runtimes": named, "default-runtime": default}
        DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
        DAEMON_JSON.write_text(json.dumps(settings, indent=2) + "\n")
        os.kill(int(DOCKERD_PID.read_text()), signal.SIGHUP)

        def reloaded() -> bool:
            info = self.docker.info()
            return bool(info["Runtimes"] == runtimes and info["DefaultRuntime"] == default)

        wait_until(f"dockerd to reload: runtimes {sorted(runtimes)}, default {default}", reloaded)


@contextmanager
def nvidia_runtime_shim(
    docker_client: Any, directory: Path
) -> Iterator[tuple[DockerdRuntimes, Path, Path]]:
    """The shim registered as runtime ``nvidia`` (not yet the default); yields the editor,
    the shim and the directory of its records; restores daemon.json on the way out."""
    runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin")
    if runc is None:
        skip_or_fail("runc is not installed: the shim runtime execs it")
    records = directory / "records"
    records.mkdir()
    shim = directory / "nvidia-shim"
    shim.write_text(SHIM.format(records=records, runc=runc))
    shim.chmod(0o755)
    runtimes = DockerdRuntimes(docker_client)
    try:
        runtimes.apply(shim, default=False)
        yield runtimes, shim, records
    finally:
        runtimes.restore()


def env_of(config_json: Path) -> dict[str, str]:
    spec = json.loads(config_json.read_text())
    return dict(item.split("=", 1) for item in spec["process"]["env"])


def test_a_default_nvidia_runtime_never_sees_a_simulated_uuid(
    ds01d: Any, unix_users: Any, docker_client: Any, tmp_path: Path
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    with nvidia_runtime_shim(docker_client, tmp_path) as (runtimes, shim, records):
        runtimes.apply(shim, default=True)
        try:
            made = d.cli("alice", "container-create", "gpu", "--image", "busybox", "--gpus", "1")
        finally:
            runtimes.apply(shim, default=False)
        assert made.returncode == 0, describe(made)
        [info] = d.cli_json("alice", "container-list")
        container = docker_client.containers.get(info["docker_name"])
        assert container.attrs["HostConfig"]["Runtime"] == RUNTIME  # it is the shim's

        started = d.cli("alice", "container-start", "gpu")
        assert started.returncode == 0, describe(started)
        seen = env_of(records / f"{container.id}.json")
        removed = d.cli("alice", "container-remove", "gpu", "--force")
        assert removed.returncode == 0, describe(removed)

    simulated = [g["uuid"] for g in d.cli_json("alice", "gpu-status")]
    assert info["gpus"] and set(info["gpus"]) <= set(simulated)
    assert seen["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert seen["CUDA_VISIBLE_DEVICES"] == "void"
    toolkit = {k: v for k, v in seen.items() if k.startswith("NVIDIA_")}
    assert not [u for u in simulated if any(u in v for v in toolkit.values())], toolkit
    assert seen["DS01_GPUS"] == ",".join(info["gpus"])
