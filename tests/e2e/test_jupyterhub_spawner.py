"""End to end: a real JupyterHub (PyPI) with a real configurable-http-proxy (npm), running
as its own hub identity (dave), spawns alice's server as a ds01 container through ds01d.

The hub loads ``deploy/jupyterhub/jupyterhub_config.py`` (the working example) and changes
only ports, directories and a test service's API token; no browser here (see
``test_jupyterhub_browser.py`` for that). One test, one hub:

- alice's server, asked for on one MIG slice through the hub's REST API, is a ds01
  container of hers (her uid, /workspace mounted, the MIG device gpu-status shows for her),
  and JupyterLab answers through the proxy; ds01d logged the create as alice via the hub;
- the hub is restarted while the server runs: it finds the server again (``load_state``,
  ``poll``), nothing is created twice;
- ds01 stops the container (as an idle stop would): the hub shows the server stopped
  (``poll``), the container and her workspace stay.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import (
    BIN_DIR,
    OFFLINE_STARTER_IMAGE,
    describe,
    make_world_traversable_dir,
    user_env,
    wait_until,
)

HUB_USER = "dave"
REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
TOKEN = "ds01-test-service-token-0123456789abcdef"
LIMITS = f"""
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 1
      memory_limit: 2G
    hub:
      users: [{HUB_USER}]
"""
IMAGES = f"""
    images:
      - name: jupyter
        image: {OFFLINE_STARTER_IMAGE}
        framework: none
        description: JupyterLab with jupyterhub-singleuser, built offline
    starter: jupyter
"""
MIG_PROFILE = "1g.5gb"  # the embedded default simulated inventory has two


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker0_gateway(docker_client: Any) -> str:
    """The host address containers on any bridge reach the host at."""
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0]["Gateway"])


class Hub:
    """A JupyterHub process run as ``HUB_USER`` from its own state directory."""

    def __init__(self, socket_path: Path, gateway: str) -> None:
        self.dir = make_world_traversable_dir("ds01-hub-")
        owner = pwd.getpwnam(HUB_USER)
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.public = f"http://127.0.0.1:{free_port()}"
        config = self.dir / "jupyterhub_config.py"
        config.write_text(
            textwrap.dedent(
                f"""
                load_subconfig({str(DEPLOY_CONFIG)!r})
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
                c.Spawner.poll_interval = 1
                c.Spawner.start_timeout = 120
                c.JupyterHub.services = [{{"name": "ds01-test", "api_token": {TOKEN!r}}}]
                c.JupyterHub.load_roles = [{{
                    "name": "ds01-test",
                    "scopes": ["admin:users", "admin:servers", "access:servers"],
                    "services": ["ds01-test"],
                }}]
                """
            )
        )
        self.env = user_env(
            HUB_USER,
            {
                "DS01_SOCKET": str(socket_path),
                "DS01_HUB_STATE_DIR": str(self.dir),
                "DS01_HUB_PUBLIC_URL": self.public,
                "DS01_HUB_API_PORT": str(free_port()),
                "DS01_HUB_CONNECT_IP": gateway,
            },
        )
        self.config = config
        self.log = self.dir / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["runuser", "-u", HUB_USER, "--", "env", "-i"]
        command += [f"{k}={v}" for k, v in self.env.items()]
        command += [str(BIN_DIR / "jupyterhub"), "-f", str(self.config)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(f"the hub to answer (log: {self.tail()})", self._answers, timeout=60)

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"the hub exited:\n{self.tail()}"
        try:
            self.api("GET", "/")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)  # the hub stops its proxy; servers stay
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.public}/hub/api{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def server(self, user: str) -> dict[str, Any] | None:
        servers = self.api("GET", f"/users/{user}")["servers"]
        return servers.get("")  # type: ignore[no-any-return]

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])
        except OSError:
            return "(no log)"


@pytest.fixture
def hub_on_ds01(ds01d: Any, docker_client: Any) -> Iterator[tuple[Any, Hub]]:
    if shutil.which("configurable-http-proxy") is None or not (BIN_DIR / "jupyterhub").exists():
        pytest.fail(
            "JupyterHub or configurable-http-proxy is not installed: run "
            "scripts/ensure-jupyterhub.sh (`make test` does)",
            pytrace=False,
        )
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    hub = Hub(d.paths.socket, docker0_gateway(docker_client))
    try:
        yield d, hub
    finally:
        hub.stop()
        print(f"===== the hub =====\n{hub.tail()}")
        shutil.rmtree(hub.dir, ignore_errors=True)


def lab_status(hub: Hub, user: str) -> int:
    request = urllib.request.Request(
        f"{hub.public}/user/{user}/api/status", headers={"Authorization": f"token {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


def test_a_hub_server_is_a_ds01_container_of_the_user(
    hub_on_ds01: tuple[Any, Hub], docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d, hub = hub_on_ds01
    alice = unix_users["alice"]
    hub.start()
    hub.api("POST", "/users/alice")
    hub.api("POST", "/users/alice/server", {"image": "jupyter", "gpus": 0, "mig": MIG_PROFILE})
    wait_until(
        f"alice's server to be ready (hub log:\n{hub.tail()})",
        lambda: (hub.server("alice") or {}).get("ready"),
        timeout=90,
        interval=0.5,
    )
    assert wait_until("JupyterLab through the proxy", lambda: lab_status(hub, "alice") == 200)

    container = f"jupyterhub._.{alice.pw_uid}"
    attrs = docker_client.api.inspect_container(container)
    labels, config = attrs["Config"]["Labels"], attrs["Config"]
    assert labels["ds01.user"] == "alice"
    assert config["User"] == f"{alice.pw_uid}:{alice.pw_gid}"
    assert config["Cmd"][0] == "jupyterhub-singleuser"
    assert any(m["Destination"] == "/workspace" for m in attrs["Mounts"])
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["JUPYTERHUB_USER"] == "alice"
    hers = [
        dev["uuid"]
        for dev in d.cli_json("alice", "gpu-status")
        if (dev.get("holder") or {}).get("user") == "alice"
    ]
    assert len(hers) == 1 and hers[0].startswith("MIG-"), hers
    assert labels["ds01.gpus"] == hers[0]
    created = d.events_where(action="container.create", outcome="success", user="alice")
    assert [e["details"].get("via") for e in created] == [HUB_USER], created

    # The hub restarts while the server runs: it finds it again, nothing is made twice.
    hub.stop()
    hub.start()
    wait_until("the server again in the hub", lambda: (hub.server("alice") or {}).get("ready"))
    assert lab_status(hub, "alice") == 200
    assert docker_client.api.inspect_container(container)["Id"] == attrs["Id"]

    # ds01 stops it (as its idle stop would): the hub shows it stopped; container and
    # workspace stay.
    stopped = d.cli("alice", "container-stop", "jupyterhub")
    assert stopped.returncode == 0, describe(stopped)
    wait_until("the hub to see the server stopped", lambda: hub.server("alice") is None)
    assert docker_client.api.inspect_container(container)["State"]["Status"] == "exited"
    assert Path(alice.pw_dir, "workspace").is_dir()

    # Simulated GPUs: the runtime gets no made-up UUID; the container is told its devices.
    assert env.get("NVIDIA_VISIBLE_DEVICES") == "void"
    assert env.get("DS01_GPUS") == hers[0]
