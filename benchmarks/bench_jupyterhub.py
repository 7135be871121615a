"""Click "Start" to JupyterLab loaded: ds01's spawner against DockerSpawner, in a real browser.

Budget (issue 19): with the same image on the same machine, ds01 at most 1.5 times
DockerSpawner (median against median).

Two real JupyterHubs run side by side on the hub configuration the tests use
(``tests/e2e/hubproc.py``: ``deploy/jupyterhub/jupyterhub_config.py`` with a poll interval
of 1 s), each with its own configurable-http-proxy: one with the ds01 spawner, run as its
hub identity against a ds01d of its own (``tests/support.py``'s ``Ds01Daemon``, the
embedded simulated GPUs); one with DockerSpawner (``DOCKERSPAWNER``, installed for this run
only into a throwaway directory on that hub's ``PYTHONPATH``, never a dependency of ds01),
run as root as DockerSpawner needs Docker's socket. Both start the offline starter image
(``ds01-test/jupyter``) as the same user, with ``jupyterhub-singleuser`` on port 8888 and
that user's ``workspace`` as ``/workspace``; DockerSpawner removes a stopped server's
container (``remove = True``), as ds01 makes a new one at each start.

One user (``LAB_USER``, made for the run, with a password for PAM) logs in to both hubs in
Debian's Chromium, driven by Playwright (``tests/e2e/hubbrowser.py``, as the browser test
does). A round, for each side in turn (the order alternating between rounds): from the
click that starts the server (ds01's form's Start, with no GPU; DockerSpawner's "Start My
Server", which has no form) until JupyterLab's launcher shows; then the server is stopped
through the hub's API and the next side goes (the last server is removed with the rest at
the end). One warm-up round is not counted. For ds01
the time from the home page's "Start My Server" to its options form is reported apart (the
form asks ds01d for the user's limits, the devices and the images): a user spends it
choosing, before the click that is timed.

Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_jupyterhub.py [--rounds N] [--json]``
(as root; it holds the test machine's lock while it runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from hubbrowser import chromium, hub_passwords, log_in, open_form, start, wait_for_lab  # noqa: E402
from hubproc import Hub, docker0_gateway, stop_hubs  # noqa: E402

from quick import parse_args  # noqa: E402
from support import (  # noqa: E402
    BIN_DIR,
    OFFLINE_STARTER_IMAGE,
    Ds01Daemon,
    ensure_user,
    hold_machine_lock,
    remove_managed_containers,
    remove_user,
    wait_until,
)

BUDGET = 1.5
#: The DockerSpawner compared against (the newest on PyPI when this was written).
DOCKERSPAWNER = ("dockerspawner==14.0.0", "escapism==1.1.0")
HUB_IDENTITY = "ds01bh"
LAB_USER = "ds01bj"
#: DockerSpawner's container of the user (its name template below).
DSP_CONTAINER = f"ds01-bench-{LAB_USER}"
LIMITS_YAML = f"""\
defaults:
  gpu_limit: 1
  memory_limit: 2G
hub:
  users: [{HUB_IDENTITY}]
"""
IMAGES_YAML = f"""\
images:
  - name: jupyter
    image: {OFFLINE_STARTER_IMAGE}
    framework: none
    description: JupyterLab with jupyterhub-singleuser, built offline
starter: jupyter
"""


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """A line on stderr, with the seconds since the benchmark began."""
    elapsed = time.monotonic() - _STARTED
    print(f"bench_jupyterhub: {elapsed:6.1f} s  {message}", file=sys.stderr, flush=True)


def dockerspawner_config(uid: int, gid: int, home: str) -> str:
    """DockerSpawner's settings, as close to ds01's servers as DockerSpawner allows."""
    return f"""
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.JupyterHub.default_url = "/hub/home"  # no form: /hub/spawn would start the server at login
c.DockerSpawner.image = {OFFLINE_STARTER_IMAGE!r}
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.remove = True
c.DockerSpawner.name_template = "ds01-bench-{{username}}"
c.DockerSpawner.cmd = ["jupyterhub-singleuser", "--ip=0.0.0.0", "--port=8888"]
c.DockerSpawner.port = 8888
c.DockerSpawner.extra_create_kwargs = {{"user": "{uid}:{gid}"}}
c.DockerSpawner.volumes = {{{home + "/workspace"!r}: "/workspace"}}
c.DockerSpawner.notebook_dir = "/workspace"
c.DockerSpawner.environment = {{"HOME": "/workspace"}}
"""


def install_dockerspawner(target: Path) -> subprocess.Popen[bytes]:
    """Begin installing DockerSpawner and its one dependency the hub's venv lacks into
    ``target`` only; the caller waits for the process (and checks its exit status)."""
    progress(f"installing {' '.join(DOCKERSPAWNER)} into {target}")
    return subprocess.Popen(
        [str(BIN_DIR / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-deps", "--target", str(target), *DOCKERSPAWNER]
    )  # fmt: skip


def stop_server(hub: Hub, user: str) -> None:
    hub.api("DELETE", f"/users/{user}/server")
    wait_until(f"{user}'s server stopped", lambda: hub.server(user) is None, timeout=60)


def time_ds01(page: Any, hub: Hub) -> dict[str, float]:
    began = time.monotonic()
    page.goto(f"{hub.public}/hub/home")
    page.click("#start")
    page.wait_for_selector("#ds01-device")
    form = time.monotonic()
    start(page, "none")
    wait_for_lab(page, LAB_USER)
    return {"start_s": time.monotonic() - form, "form_s": form - began}


def time_dockerspawner(page: Any, hub: Hub) -> dict[str, float]:
    page.goto(f"{hub.public}/hub/home")
    page.wait_for_selector("#start")
    began = time.monotonic()
    page.click("#start")
    wait_for_lab(page, LAB_USER)
    return {"start_s": time.monotonic() - began}


def run(rounds: int, warmup: int) -> dict[str, Any]:
    import docker

    client = docker.from_env()
    created = [name for name in (LAB_USER, HUB_IDENTITY) if ensure_user(name)]
    scratch = Path(tempfile.mkdtemp(prefix="ds01-bench-hub-"))
    daemon = Ds01Daemon(resource_limits=LIMITS_YAML, images=IMAGES_YAML)
    hubs: list[Hub] = []
    samples: dict[str, list[dict[str, float]]] = {"ds01": [], "dockerspawner": []}
    try:
        installing = install_dockerspawner(scratch / "site")  # meanwhile ds01d starts
        daemon.start()
        progress("ds01d answers")
        if installing.wait() != 0:
            raise RuntimeError(f"installing {' '.join(DOCKERSPAWNER)} failed")
        entry = pwd.getpwnam(LAB_USER)
        workspace = Path(entry.pw_dir, "workspace")
        workspace.mkdir(exist_ok=True)
        os.chown(workspace, entry.pw_uid, entry.pw_gid)
        gateway = docker0_gateway(client)
        ds01_hub = Hub(daemon.paths.socket, gateway, user=HUB_IDENTITY)
        dsp_hub = Hub(
            daemon.paths.socket,
            gateway,
            user="root",
            extra_config=dockerspawner_config(entry.pw_uid, entry.pw_gid, entry.pw_dir),
            extra_env={"PYTHONPATH": str(scratch / "site")},
        )
        hubs += [ds01_hub, dsp_hub]
        with contextlib.ExitStack() as stack:
            stack.enter_context(hub_passwords([LAB_USER], HUB_IDENTITY))
            for hub in hubs:  # in the group shadow now; they start while Chromium does
                hub.launch()
            browser = stack.enter_context(chromium())
            for hub in hubs:
                hub.wait_ready()
            progress("both hubs answer")
            sides: dict[str, tuple[Hub, Any, Callable[[Any, Hub], dict[str, float]]]] = {
                "ds01": (ds01_hub, log_in(browser, ds01_hub, LAB_USER), time_ds01),
                "dockerspawner": (
                    dsp_hub, log_in(browser, dsp_hub, LAB_USER), time_dockerspawner
                ),
            }  # fmt: skip
            open_form(sides["ds01"][1], ds01_hub)  # the form renders (checks the login)
            progress("logged in to both hubs")
            turns = [
                (n, name)
                for n in range(warmup + rounds)
                for name in (list(sides) if n % 2 == 0 else list(reversed(sides)))
            ]
            for turn, (n, name) in enumerate(turns):
                hub, page, timed = sides[name]
                progress(f"round {n + 1 - warmup} ({'warm-up' if n < warmup else 'timed'}): "
                         f"{name}")  # fmt: skip
                sample = timed(page, hub)
                if n >= warmup:
                    samples[name].append(sample)
                if turn < len(turns) - 1:  # the last server goes with the clean-up below
                    progress(f"{name}: JupyterLab loaded; stopping the server")
                    stop_server(hub, LAB_USER)
    finally:
        progress("cleaning up")
        stop_hubs(hubs)
        for hub in hubs:
            shutil.rmtree(hub.dir, ignore_errors=True)
        subprocess.run(["docker", "rm", "-f", DSP_CONTAINER], capture_output=True, check=False)
        daemon.stop()
        remove_managed_containers()
        shutil.rmtree(daemon.root, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        for name in created:
            remove_user(name)
    return summary(samples, rounds)


def median_ms(samples: Sequence[dict[str, float]], key: str) -> float:
    return round(statistics.median(s[key] for s in samples) * 1000, 1)


def summary(samples: dict[str, list[dict[str, float]]], rounds: int) -> dict[str, Any]:
    ds01_ms = median_ms(samples["ds01"], "start_s")
    dsp_ms = median_ms(samples["dockerspawner"], "start_s")
    return {
        "benchmark": "bench_jupyterhub",
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ds01_ms": ds01_ms,
        "ds01_form_ms": median_ms(samples["ds01"], "form_s"),
        "dockerspawner_ms": dsp_ms,
        "ratio": round(ds01_ms / dsp_ms, 2),
        "budget": BUDGET,
        "samples_ms": {
            name: [round(s["start_s"] * 1000, 1) for s in rows] for name, rows in samples.items()
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per spawner")
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted, first")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parse_args(parser, {"rounds": 1, "warmup": 0}, argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be positive, --warmup not negative")
    if os.geteuid() != 0:
        parser.error("run as root (it starts ds01d and two hubs, and makes two users)")
    lock = hold_machine_lock(progress)  # timings are worthless while tests load the machine
    try:
        result = run(args.rounds, args.warmup)
    finally:
        if lock is not None:
            os.close(lock)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"click Start to JupyterLab loaded, median of {result['rounds']} rounds "
          f"({result['cpus']} CPUs, Python {result['python']})")  # fmt: skip
    form = result["ds01_form_ms"]
    print(f"  ds01 spawner   {result['ds01_ms']:>8.1f} ms   (its options form before: {form} ms)")
    print(f"  DockerSpawner  {result['dockerspawner_ms']:>8.1f} ms")
    print(f"  ratio          {result['ratio']:>8.2f}      (budget {BUDGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
