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

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubproc import HUB_USER, Hub, docker0_gateway, lab_status, require_hub_tools

from support import OFFLINE_STARTER_IMAGE, describe, wait_until

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


@pytest.fixture
def hub_on_ds01(ds01d: Any, docker_client: Any) -> Iterator[tuple[Any, Hub]]:
    require_hub_tools()
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    hub = Hub(d.paths.socket, docker0_gateway(docker_client))
    try:
        yield d, hub
    finally:
        hub.stop()
        print(f"===== the hub =====\n{hub.tail()}")
        shutil.rmtree(hub.dir, ignore_errors=True)


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
