"""A fresh user's path to JupyterLab on a GPU, against ``docker run`` of the same image.

The mission's promise is "from an account to a notebook on a GPU in under 10 minutes". This
measures the machine's part of that path, as wall time:

- ``user-setup``: a brand-new Unix user runs ``user-setup --yes`` (workspace, SSH checks,
  files, the starter container on a MIG slice, waiting until JupyterLab answers); then the
  same HTTP request a browser sends saves a notebook, and the time until the file is in
  the user's workspace on the host is taken too;
- ``docker run``: ``docker run -d -p 127.0.0.1::8888`` of the same image as the same uid,
  polled until ``/api/status`` answers: what Docker alone costs for a JupyterLab.

The user is made and removed for every round (``useradd``/``userdel``); ds01d is this
script's own (tests/support.py ``Ds01Daemon``), on the example configuration shipped in
``examples/config`` (what an admin copies to /etc/ds01; where it has no ``images.yaml``, the
embedded default registry that ds01 then uses), changed only where this offline machine
needs it: the example's starter image cannot be pulled here, so the offline image
``ds01-test/jupyter`` (``make images``) is registered under the example's starter name
(``support.offline_example_config``; the script prints each substitution). Medians over the
rounds; nothing is asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_user_setup.py [--rounds N] [--json]``
"""

from __future__ import annotations

import argparse
import json
import pwd
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from quick import parse_args  # noqa: E402
from support import (  # noqa: E402
    OFFLINE_STARTER_IMAGE,
    Ds01Daemon,
    ensure_user,
    offline_example_config,
    remove_user,
)

IMAGE = OFFLINE_STARTER_IMAGE
USER = "benchjupyter"
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")
NOTEBOOK = {
    "type": "notebook",
    "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
}


def answers(url: str, token: str | None = None, body: dict[str, object] | None = None) -> bool:
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers=headers, method="PUT" if data else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status in (200, 201)
    except (urllib.error.URLError, OSError):
        return False


def ds01_round(daemon: Ds01Daemon) -> dict[str, float]:
    if ensure_user(USER) is False:  # a leftover of an interrupted run: start afresh
        remove_user(USER)
        ensure_user(USER)
    home = Path(pwd.getpwnam(USER).pw_dir)
    try:
        started = time.perf_counter()
        result = daemon.cli(USER, "user-setup", "--yes", "--host", "bench.test", timeout=300)
        ready = time.perf_counter() - started
        match = URL_RE.search(result.stdout)
        if result.returncode != 0 or not match:
            raise RuntimeError(f"user-setup failed:\n{result.stdout}{result.stderr}")
        base = f"http://127.0.0.1:{match[1]}"
        if not answers(f"{base}/api/contents/bench.ipynb", match[2], NOTEBOOK):
            raise RuntimeError("JupyterLab did not save the notebook")
        if not (home / "workspace" / "bench.ipynb").is_file():
            raise RuntimeError("the notebook is not in the workspace")
        landed = time.perf_counter() - started
        return {
            "user-setup until JupyterLab answers": ready,
            "... until the notebook lands": landed,
        }
    finally:
        daemon.cli(USER, "container-retire", "notebook", "--discard", "--yes")
        remove_user(USER)


def docker_round(uid: int) -> dict[str, float]:
    started = time.perf_counter()
    name = f"bench-jupyter-{time.monotonic_ns()}"
    subprocess.run(
        ["docker", "run", "-d", "--init", "--name", name, "--user", f"{uid}:{uid}",
         "-e", "HOME=/tmp", "-e", "JUPYTER_TOKEN=bench", "-p", "127.0.0.1::8888", IMAGE],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        port = (
            subprocess.run(
                ["docker", "port", name, "8888"], check=True, capture_output=True, text=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        while not answers(f"http://127.0.0.1:{port}/api/status", "bench"):
            if time.perf_counter() - started > 120:
                raise RuntimeError("docker run: JupyterLab did not answer")
            time.sleep(0.05)
        return {"docker run until JupyterLab answers": time.perf_counter() - started}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parse_args(parser, {"rounds": 1})
    files, substitutions = offline_example_config()
    daemon = Ds01Daemon(files["resource-limits.yaml"], files.get("gpu-config.yaml"),
                        files["images.yaml"])  # fmt: skip
    daemon.start()
    samples: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for name, seconds in [*ds01_round(daemon).items(), *docker_round(65534).items()]:
                samples.setdefault(name, []).append(seconds)
    finally:
        daemon.cleanup()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = (
        medians["user-setup until JupyterLab answers"]
        / medians["docker run until JupyterLab answers"]
    )
    if args.json:
        print(json.dumps({"median_seconds": medians, "ratio": ratio, "rounds": args.rounds,
                          "substituted": substitutions}))  # fmt: skip
        return
    print("Configuration: examples/config, offline. Substituted:")
    for change in substitutions or ["nothing"]:
        print(f"  - {change}")
    print(f"A fresh user's path to JupyterLab ({args.rounds} rounds, medians)")
    for name, value in medians.items():
        print(f"  {name:<40} {value:6.2f} s")
    print(f"  user-setup / docker run: {ratio:.2f}x")


if __name__ == "__main__":
    main()
