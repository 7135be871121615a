"""End to end: the hub door. A hub identity (``hub:`` in resource-limits.yaml; here dave)
may act on behalf of a user, and gets exactly that user's rights, never more.

One ds01d: bob runs a 1-GPU container; alice's quota is one GPU. Each row of the table is
one request through the raw API from a process really running as the caller (identity
from ``SO_PEERCRED``), naming a user in the on-behalf header. A hub acts for ordinary
users only: never root, a system account, an admin or a hub identity (carol is a second
hub in this test). For every row the test checks the exit code, HTTP status and message,
that Docker's containers did not change, and that the refusal is logged: by the hub
itself where the hub door stays shut, else by the user with ``details.via`` naming the
hub. Then what the hub may do for alice succeeds, logged with both names.

Then the hub's own caps: one user's flood of long polls through the hub fills that user's
share of waiting requests only; another user's request through the hub, and a local
user's, are still served, and the refusals are logged for the flooding user via the hub.

Then where the hub's proxy sends a user's pages (a real JupyterHub and its proxy): to her
server's container at its own address on her network, never to a host port. Once ds01
stops the server, a local user who binds where the proxy still sends ``/user/alice/``
(the hub has not polled yet) cannot: the address is none of the host's, so no page of his
is ever served under her name; once it is removed, her network stays a while (its subnet
is no one else's yet); and while it runs, only she, root and the hub reach that
address from the host (ds01's firewall), a hub named by its group too.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from flooder import attack
from hostconnect import BLOCKED, REACHED, HostShell, host_connect
from hubproc import TOKEN, Hub, docker0_gateway, lab_answer, require_hub_tools
from rawapi import RawApi, check_error_shape

from ds01.config.limits import HubConfig
from ds01.daemon.context import HUB_LOOKUP_TTL_S
from ds01.model.hub import ON_BEHALF_HEADER
from support import OFFLINE_STARTER_IMAGE, TEST_IMAGES_YAML, describe, wait_until

HUB = "dave"
OTHER_HUB = "carol"  # a second hub identity, in the first test only
SYSTEM_ACCOUNT = "daemon"  # uid 1 on every Debian and Red Hat system
DEFAULTS = """
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 1G
"""
LIMITS = f"""{DEFAULTS}
    hub:
      users: [{HUB}]
"""
TWO_HUBS = f"""{DEFAULTS}
    hub:
      users: [{HUB}, {OTHER_HUB}]
"""
HTTP_STATUS = {2: 400, 3: 409, 4: 404, 5: 403}


@dataclass(frozen=True)
class HubAttempt:
    what: str
    caller: str  # the Unix user the request really comes from
    behalf: str | None  # the user the header names (None: no header)
    method: str
    path: str
    body: Any
    exit_code: int
    logged_by: str  # the event's user
    via: str | None  # the event's details.via
    action: str = "auth.denied"
    says: str = ""  # words the refusal's message holds


def attempts(bob_container: str) -> list[HubAttempt]:
    create = {"name": "nb", "image": "busybox"}
    return [
        HubAttempt("a user is no hub", "bob", "alice", "GET", "/v1/whoami", None,
                   5, "bob", None),
        HubAttempt("an admin is no hub", "erin", "alice", "GET", "/v1/whoami", None,
                   5, "erin", None),
        HubAttempt("the hub acts for root", HUB, "root", "GET", "/v1/whoami", None,
                   5, HUB, None),
        HubAttempt("the hub acts for nobody known", HUB, "no-such-user", "GET", "/v1/whoami",
                   None, 4, HUB, None),
        HubAttempt("the hub acts for a system account", HUB, SYSTEM_ACCOUNT, "GET",
                   "/v1/whoami", None, 5, HUB, None, says="a system account"),
        HubAttempt("the hub acts for an admin", HUB, "erin", "POST", "/v1/admin/maintenance",
                   None, 5, HUB, None, says="erin, a ds01 admin"),
        HubAttempt("the hub acts for an admin, even as a user", HUB, "erin", "GET",
                   "/v1/whoami", None, 5, HUB, None, says="erin, a ds01 admin"),
        HubAttempt("the hub acts for another hub", HUB, OTHER_HUB, "GET", "/v1/whoami",
                   None, 5, HUB, None, says=f"{OTHER_HUB}, a hub identity"),
        HubAttempt("the hub acts for itself", HUB, HUB, "GET", "/v1/whoami", None,
                   5, HUB, None, says=f"{HUB}, a hub identity"),
        HubAttempt("another user's container", HUB, "alice", "POST",
                   f"/v1/containers/{bob_container}/stop", None, 5, "alice", HUB),
        HubAttempt("another user's limits", HUB, "alice", "GET", "/v1/limits?user=bob", None,
                   5, "alice", HUB),
        HubAttempt("every user's queue", HUB, "alice", "GET", "/v1/queue?all=1", None,
                   5, "alice", HUB),
        HubAttempt("privileged", HUB, "alice", "POST", "/v1/containers",
                   {**create, "privileged": True}, 2, "alice", HUB),
        HubAttempt("no hardening", HUB, "alice", "POST", "/v1/containers",
                   {**create, "security_opt": ["seccomp=unconfined"]}, 2, "alice", HUB),
        HubAttempt("over the user's quota", HUB, "alice", "POST", "/v1/containers",
                   {**create, "gpus": 2}, 3, "alice", HUB, action="container.create"),
        HubAttempt("a hub server without the hub", "alice", None, "POST", "/v1/containers",
                   {**create, "hub": {"environment": {"JUPYTERHUB_USER": "bob"}}}, 5,
                   "alice", None),
        HubAttempt("a variable that is not the hub's", HUB, "alice", "POST", "/v1/containers",
                   {**create, "hub": {"environment": {"NVIDIA_VISIBLE_DEVICES": "all"}}}, 2,
                   "alice", HUB),
    ]


def managed(docker: Any) -> dict[str, tuple[Any, ...]]:
    """Docker's view of ds01's containers: name → (id, status, labels)."""
    return {
        c.name: (c.id, c.status, tuple(sorted((c.labels or {}).items())))
        for c in docker.containers.list(all=True, filters={"label": "ds01.managed"})
    }


def denied_event(d: Any, attempt: HubAttempt, seen: int) -> dict[str, Any] | None:
    for event in d.events()[seen:]:
        if (
            event["outcome"] == "denied"
            and event["user"] == attempt.logged_by
            and event["action"] == attempt.action
            and event["details"].get("via") == attempt.via
        ):
            return event
    return None


def test_the_hub_gets_the_users_rights_and_no_more(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=TWO_HUBS, images=TEST_IMAGES_YAML)
    alice, bob = unix_users["alice"], unix_users["bob"]
    made = d.cli("bob", "container-create", "thesis", "--image", "busybox", "--gpus", "1",
                 "--start")
    assert made.returncode == 0, describe(made)
    before = managed(docker_client)

    problems = []
    for attempt in attempts(f"thesis._.{bob.pw_uid}"):
        seen = len(d.events())
        with RawApi(d.paths.socket, attempt.caller) as api:
            headers = {ON_BEHALF_HEADER: attempt.behalf} if attempt.behalf else {}
            reply = api.call(attempt.method, attempt.path, attempt.body, headers=headers)
        code = reply.error_body.get("exit_code")
        if code != attempt.exit_code or reply.status != HTTP_STATUS[attempt.exit_code]:
            problems.append(f"{attempt.what}: not refused as {attempt.exit_code}:\n{reply}")
        elif check_error_shape(reply):
            problems.append(f"{attempt.what}: {check_error_shape(reply)}")
        elif attempt.says not in reply.error_body.get("message", ""):
            problems.append(f"{attempt.what}: the message does not say {attempt.says!r}")
        if denied_event(d, attempt, seen) is None:
            problems.append(f"{attempt.what}: not logged: {d.events()[seen:]}")
        if managed(docker_client) != before:
            problems.append(f"{attempt.what}: Docker changed")
            before = managed(docker_client)
        if any(e["outcome"] == "success" for e in d.events()[seen:]):
            problems.append(f"{attempt.what}: something succeeded: {d.events()[seen:]}")
    assert not problems, "\n".join(problems)

    # What alice may do, the hub may do for her: as alice, with both names in the log.
    with RawApi(d.paths.socket, HUB) as api:
        who = api.call("GET", "/v1/whoami", headers={ON_BEHALF_HEADER: "alice"})
        made_for_her = api.call("POST", "/v1/containers",
                                {"name": "nb", "image": "busybox", "gpus": 1},
                                headers={ON_BEHALF_HEADER: "alice"})
    assert who.status == 200, who
    assert who.json() | {"groups": []} == {
        "user": "alice", "uid": alice.pw_uid, "groups": [], "is_admin": False, "via": HUB
    }
    assert made_for_her.status == 200, made_for_her
    attrs = docker_client.api.inspect_container(f"nb._.{alice.pw_uid}")
    assert attrs["Config"]["Labels"]["ds01.user"] == "alice"
    created = d.events_where(action="container.create", outcome="success", user="alice")
    assert [e["details"].get("via") for e in created] == [HUB], created
    bob_created = d.events_where(action="container.create", outcome="success", user="bob")
    assert [e["details"].get("via") for e in bob_created] == [None], bob_created



def test_one_users_flood_through_the_hub_leaves_room_for_its_other_users(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    share = HubConfig().user_requests  # one user's open requests through a hub
    with attack(d, "longpoll", share + 4, user=HUB, behalf="alice") as flood:
        answers = flood.ready["answers"]
        assert answers == {"None:None:open": share, "429:throttled:closed": 4}, answers
        poll = "/v1/events?after_seq=0&wait=1"
        with RawApi(d.paths.socket, HUB) as api:
            for_bob = api.call("GET", poll, headers={ON_BEHALF_HEADER: "bob"})
        with RawApi(d.paths.socket, "carol") as api:
            local = api.call("GET", poll)
        assert for_bob.status == 200, for_bob
        assert local.status == 200, local
        flood.release()
    (throttled,) = wait_until(
        "the refusals logged", lambda: d.events_where(action="api.throttled")
    )
    assert throttled["user"] == "alice" and throttled["details"].get("via") == HUB, throttled
    assert throttled["details"]["reason"] == "hub_user_requests", throttled


JUPYTER_IMAGES = f"""
    images:
      - name: jupyter
        image: {OFFLINE_STARTER_IMAGE}
        framework: none
        description: JupyterLab with jupyterhub-singleuser, built offline
"""
#: The port the test image's JupyterLab listens on in its container.
LAB_PORT = 8888
SQUATTER_PAGE = "bob-squats-alice"

#: Run as a local user: bind ``argv[1]:argv[2]`` and answer every request there with
#: ``SQUATTER_PAGE``; prints ``BOUND`` once listening, else ``NOT-BOUND`` and why.
SQUAT_SCRIPT = textwrap.dedent(
    f"""
    import http.server, sys
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{SQUATTER_PAGE}")
    try:
        server = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), Page)
    except OSError as exc:
        print("NOT-BOUND", exc, flush=True)
        sys.exit(0)
    print("BOUND", flush=True)
    server.serve_forever()
    """
)


def route_to(hub: Hub, user: str) -> str:
    """Where the hub's proxy sends ``user``'s default server's pages (its route's target)."""
    request = urllib.request.Request(
        f"{hub.listen}/hub/api/proxy",
        headers={"Authorization": f"token {TOKEN}", "Host": hub.host_of(None)},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        routes = json.loads(answer.read())
    [target] = [
        r["target"]
        for r in routes.values()
        if r["data"].get("user") == user and r["data"].get("server_name", "") == ""
    ]
    return str(target)


def test_the_hub_reaches_a_server_at_its_own_address_and_a_stopped_ones_is_nobodys(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    require_hub_tools()
    d = ds01d(resource_limits=LIMITS, images=JUPYTER_IMAGES)
    uid = unix_users["alice"].pw_uid
    # The hub polls once an hour: the proxy keeps the stopped server's route meanwhile.
    gateway = docker0_gateway(docker_client)
    hub = Hub(d.paths.socket, gateway, extra_config="c.Spawner.poll_interval = 3600")
    squatter = None
    try:
        hub.start()
        hub.api("POST", "/users/alice")
        hub.api("POST", "/users/alice/server", {"image": "jupyter"})
        wait_until(
            f"alice's server ready (hub: {hub.tail()})",
            lambda: (hub.server("alice") or {}).get("ready"),
            timeout=120,
        )
        container = f"jupyterhub._.{uid}"
        attrs = docker_client.api.inspect_container(container)
        address = attrs["NetworkSettings"]["Networks"][f"ds01-u{uid}"]["IPAddress"]
        target = route_to(hub, "alice")
        assert target == f"http://{address}:{LAB_PORT}", target
        assert not attrs["HostConfig"]["PortBindings"], attrs["HostConfig"]["PortBindings"]
        assert lab_answer(hub, "alice")[0] == 200, hub.tail()
        [listed] = json.loads(d.cli("alice", "container-list", "--json").stdout)
        assert (listed["address"], listed["ports"]) == (address, []), listed

        # While it runs: she, root and the hub reach its address; no other local user does.
        reached = {u: host_connect(u, address, LAB_PORT) for u in ("alice", None, HUB)}
        assert all(r.startswith(REACHED) for r in reached.values()), reached
        for intruder in ("bob", "carol", "erin"):  # two users and an admin
            outcome = host_connect(intruder, address, LAB_PORT)
            assert outcome.startswith(BLOCKED), f"{intruder}: {outcome}"

        # ds01 stops it (as an idle stop would); the hub has not noticed.
        stopped = d.cli("alice", "container-stop", "jupyterhub")
        assert stopped.returncode == 0, describe(stopped)
        assert (hub.server("alice") or {}).get("ready"), "the hub noticed: nothing to squat"
        assert route_to(hub, "alice") == target
        host, port = target.removeprefix("http://").rsplit(":", 1)
        squatter = subprocess.Popen(
            ["runuser", "-u", "bob", "--", sys.executable, "-c", SQUAT_SCRIPT, host, port],
            stdout=subprocess.PIPE, text=True, cwd="/",
        )  # fmt: skip
        assert squatter.stdout is not None
        bound = squatter.stdout.readline()
        answer = lab_answer(hub, "alice", timeout=30)
        assert SQUATTER_PAGE not in answer[1], f"bob serves under /user/alice/: {answer}"
        assert bound.startswith("NOT-BOUND"), f"bob took {target}: {bound}"
        assert not ipaddress.ip_address(host).is_loopback, target

        # Removed too: a hub is configured, so her network (the subnet of the address the
        # proxy still routes to) is kept (``address_keep_seconds``) for no one else's.
        removed = d.cli("alice", "container-remove", "jupyterhub", "--force")
        assert removed.returncode == 0, describe(removed)
        assert docker_client.networks.list(names=[f"ds01-u{uid}"]), "her network went at once"
    finally:
        if squatter is not None:
            squatter.kill()
            squatter.wait()
        hub.stop()
        print(f"===== the hub =====\n{hub.tail()}")
        shutil.rmtree(hub.dir, ignore_errors=True)


def test_a_hub_named_by_its_group_reaches_a_users_container_and_only_it(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    # bob's group msc is a hub's; carol (phd, like alice) is not.
    d = ds01d(resource_limits=f"{DEFAULTS}\n    hub:\n      unix_groups: [msc]\n",
              images=JUPYTER_IMAGES)  # fmt: skip
    made = d.cli("alice", "container-create", "lab", "--image", "jupyter", "--start")
    assert made.returncode == 0, describe(made)
    [listed] = json.loads(d.cli("alice", "container-list", "--json").stdout)
    address = listed["address"]
    assert address and listed["ports"], listed  # her own JupyterLab: still published

    wait_until(
        "her JupyterLab answers her",
        lambda: "HTTP/1" in host_connect("alice", address, LAB_PORT),
    )
    assert host_connect("bob", address, LAB_PORT).startswith(REACHED)
    assert host_connect("carol", address, LAB_PORT).startswith(BLOCKED)

    # bob leaves the hub's group. A shell of his left running still carries the group, yet
    # loses the way in: the rules name the group's members by uid, looked up again within
    # HUB_LOOKUP_TTL_S (60 s), with no create, start or reload to prompt it.
    shell = HostShell("bob")
    try:
        assert grp.getgrnam("msc").gr_gid in shell.groups
        assert shell.connect(address, LAB_PORT).startswith(REACHED)
        subprocess.run(["gpasswd", "-d", "bob", "msc"], check=True, capture_output=True)
        try:
            wait_until(
                "bob's running shell is refused",
                lambda: shell.connect(address, LAB_PORT).startswith(BLOCKED),
                timeout=2 * HUB_LOOKUP_TTL_S,
                interval=1.0,
            )
        finally:
            subprocess.run(["gpasswd", "-a", "bob", "msc"], check=True, capture_output=True)
    finally:
        shell.close()
    assert host_connect("alice", address, LAB_PORT).startswith(REACHED)
    rewrites = wait_until(
        "the rewrite's event",
        lambda: [
            e for e in d.events_where(action="network.firewall") if "rewritten" in e["details"]
        ],
    )
    # Every network this ds01d guards is rewritten: alice's, and those earlier tests left.
    rewritten = rewrites[-1]["details"]["rewritten"]
    assert f"ds01-u{unix_users['alice'].pw_uid}" in rewritten, rewritten
    assert all(re.fullmatch(r"ds01-u[0-9]+", name) for name in rewritten), rewritten
