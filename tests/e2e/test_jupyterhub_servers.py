"""End to end: a real JupyterHub replaces or stops only its own servers' containers.

The hub (its identity dave) starts alice's servers through its REST API with the test
service's token; ds01d marks each container it creates for a hub with the server's name
(labels ``ds01.hub`` and ``ds01.hub.server``). Then:

1. alice made a container named ``jupyterhub`` with the CLI, and it runs: a start of her
   default server is refused, saying so, and her container is untouched (same id, still
   running, no stop or remove of it in ds01's log);
2. her named server ``a.b`` runs in ``jupyterhub-a-b``, marked as that server's; a start of
   a server ``a-b``, whose name maps to the same container, is refused naming ``a.b``, and
   ``a.b``'s container still runs; a stop of ``a.b`` in the hub stops it (kept).
"""

from __future__ import annotations

import json
import pwd
import shutil
import urllib.error
from typing import Any

from hubproc import HUB_USER, Hub, docker0_gateway, require_hub_tools

from support import OFFLINE_STARTER_IMAGE, TEST_IMAGE, describe, wait_until

LIMITS = f"""
    defaults:
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
      - name: busybox
        image: {TEST_IMAGE}
        framework: none
        description: BusyBox
"""


def refused_start(hub: Hub, path: str) -> str:
    """The hub's error answer to a server start at ``path`` (fails if the start succeeds)."""
    try:
        answer = hub.api("POST", path, {"image": "jupyter"})
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}").get("message", "")
    raise AssertionError(f"the start was not refused: {answer}\n{hub.tail()}")


def state(docker_client: Any, name: str) -> tuple[str, str, dict[str, str]]:
    attrs = docker_client.api.inspect_container(name)
    return attrs["Id"], attrs["State"]["Status"], attrs["Config"]["Labels"]


def test_the_hub_replaces_only_its_own_servers(ds01d: Any, docker_client: Any) -> None:
    require_hub_tools()
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    hub = Hub(d.paths.socket, docker0_gateway(docker_client))
    try:
        hub.start()
        scenes(d, hub, docker_client)
    finally:
        hub.stop()
        print(f"===== the hub =====\n{hub.tail()}")
        shutil.rmtree(hub.dir, ignore_errors=True)


def scenes(d: Any, hub: Hub, docker_client: Any) -> None:
    uid = pwd.getpwnam("alice").pw_uid
    hub.api("POST", "/users/alice")

    # 1. alice's own container named jupyterhub is hers: the hub leaves it alone.
    made = d.cli("alice", "container-create", "jupyterhub", "--image", "busybox", "--start")
    assert made.returncode == 0, describe(made)
    before = state(docker_client, f"jupyterhub._.{uid}")
    assert (before[2]["ds01.hub"], before[2]["ds01.hub.server"]) == ("", ""), before[2]
    message = refused_start(hub, "/users/alice/server")
    assert "the hub did not make" in message and "container-remove jupyterhub" in message, message
    assert state(docker_client, f"jupyterhub._.{uid}") == before
    touched = [
        e
        for e in d.events()
        if e["action"] in ("container.stop", "container.remove") and e["user"] == "alice"
    ]
    assert touched == [], touched

    # 2. Two server names, one container name: the second is refused.
    hub.api("POST", "/users/alice/servers/a.b", {"image": "jupyter"})
    wait_until(
        f"alice's server a.b ready (hub: {hub.tail()})",
        lambda: (hub.api("GET", "/users/alice")["servers"].get("a.b") or {}).get("ready"),
        timeout=120,
    )
    server_id, status, labels = state(docker_client, f"jupyterhub-a-b._.{uid}")
    assert (status, labels["ds01.hub"], labels["ds01.hub.server"]) == ("running", "true", "a.b")
    message = refused_start(hub, "/users/alice/servers/a-b")
    assert "'a.b'" in message and "jupyterhub-a-b" in message, message
    assert state(docker_client, f"jupyterhub-a-b._.{uid}")[:2] == (server_id, "running")

    hub.api("DELETE", "/users/alice/servers/a.b")
    wait_until(
        "a.b's container stopped",
        lambda: state(docker_client, f"jupyterhub-a-b._.{uid}")[:2] == (server_id, "exited"),
    )
    assert state(docker_client, f"jupyterhub._.{uid}") == before  # hers, still untouched
