"""End to end: the first issue's user story, run by real Unix users against a real ds01d.

alice creates, starts, lists, stops and removes her containers with the hyphenated commands
and with ``ds01 <noun> <verb>``; bob can neither see nor touch them; quotas refuse with a
message that names the containers in the way; admins (erin in ``ds01-admin``, and root) see
and stop everyone's containers; users cannot reach Docker themselves, and nothing a client
sends can change who the daemon thinks it is. Every check reads Docker itself or the
daemon's event log, never only what the CLI printed.
"""

from __future__ import annotations

import json
import pwd
import re
import subprocess
from typing import Any

from support import BIN_DIR, TEST_IMAGES_YAML, describe, user_env

# alice may hold one GPU-equivalent and three containers; erin is an admin through her
# Unix group (ds01-admin is the default admin group).
LIMITS = """
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 1G
"""

EVENT_FIELDS = {"ts", "user", "action", "resource", "details", "outcome"}

# Run as a user: sends one raw HTTP request to ds01d over its unix socket, prints
# {"status": …, "body": …}. argv: socket path, method, path, JSON body, JSON headers.
RAW_REQUEST_SCRIPT = """
import http.client, json, socket, sys

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)

path, method, url, body, headers = sys.argv[1:6]
conn = UnixConnection(path)
conn.request(method, url, body=body.encode(), headers={
    "Content-Type": "application/json", **json.loads(headers)})
response = conn.getresponse()
print(json.dumps({"status": response.status, "body": json.loads(response.read() or b"null")}))
"""


# --- helpers -------------------------------------------------------------------------------


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def docker_name(name: str, user: str) -> str:
    """The Docker name ds01 gives container ``name`` of ``user`` (AIME: ``name._.uid``)."""
    return f"{name}._.{uid_of(user)}"


def managed_containers(docker_client: Any) -> dict[str, Any]:
    """Docker's own view: every ds01-managed container by Docker name."""
    found = docker_client.containers.list(all=True, filters={"label": "ds01.managed=true"})
    return {c.name: c for c in found}


def docker_state(docker_client: Any, name: str, user: str) -> str | None:
    """Docker's state (``created``, ``running``, ``exited``…) of a user's container, or None."""
    container = managed_containers(docker_client).get(docker_name(name, user))
    return None if container is None else container.status


def label_gpus(container: Any) -> list[str]:
    return [u for u in container.labels.get("ds01.gpus", "").split(",") if u]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, describe(result)
    return result


def create(d: Any, user: str, name: str, *args: str) -> dict[str, Any]:
    """``container-create NAME --image busybox ARGS --json`` as ``user``; must succeed."""
    info: dict[str, Any] = d.cli_json(user, "container-create", name, "--image", "busybox", *args)
    return info


def events_about(d: Any, action: str, resource: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in d.events_where(action=action, **fields)
        if e["resource"] == f"container/{resource}"
    ]


def run_as(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run any command as ``user`` with a clean login-like environment."""
    env = [f"{k}={v}" for k, v in user_env(user).items()]
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *env, *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )


def raw_request(
    d: Any, user: str, method: str, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """Send a hand-made HTTP request to ds01d as ``user`` (no ds01 CLI involved)."""
    result = run_as(
        user,
        str(BIN_DIR / "python"),
        "-c",
        RAW_REQUEST_SCRIPT,
        str(d.paths.socket),
        method,
        url,
        json.dumps(body),
        json.dumps(headers),
    )
    assert result.returncode == 0, describe(result)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


# --- the user story --------------------------------------------------------------------------


def test_alice_creates_starts_lists_stops_and_removes_a_gpu_container(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)

    created = ok(
        d.cli("alice", "container-create", "--name", "thesis", "--image", "busybox", "--gpus", "1")
    )
    thesis = managed_containers(docker_client)[docker_name("thesis", "alice")]
    gpus = label_gpus(thesis)
    assert len(gpus) == 1 and gpus[0].startswith("GPU-"), thesis.labels
    assert gpus[0] in created.stdout, describe(created)
    assert thesis.labels["ds01.user"] == "alice"
    assert thesis.labels["ds01.uid"] == str(uid_of("alice"))
    assert thesis.status == "created"

    ok(d.cli("alice", "container-create", "thesis2", "--image", "busybox"))
    assert docker_state(docker_client, "thesis2", "alice") == "created"

    ok(d.cli("alice", "container-start", "thesis"))
    assert docker_state(docker_client, "thesis", "alice") == "running"

    listing = ok(d.cli("alice", "container-list"))
    assert "thesis" in listing.stdout and "thesis2" in listing.stdout, describe(listing)
    assert gpus[0] in listing.stdout, describe(listing)
    rows = {row["name"]: row for row in d.cli_json("alice", "container-list")}
    assert set(rows) == {"thesis", "thesis2"}
    assert rows["thesis"]["status"] == "running"
    assert rows["thesis"]["image"] == "busybox"
    assert rows["thesis"]["gpus"] == gpus
    assert rows["thesis"]["gpu_equivalents"] == 1.0
    assert rows["thesis"]["user"] == "alice"
    assert rows["thesis2"]["gpus"] == [] and rows["thesis2"]["gpu_equivalents"] == 0.0
    assert rows["thesis2"]["status"] == "created"

    status = ok(d.cli("alice", "gpu-status"))
    holder_line = next(line for line in status.stdout.splitlines() if gpus[0] in line)
    assert "alice/thesis" in holder_line, describe(status)
    devices = d.cli_json("alice", "gpu-status")
    holders = {dev["uuid"]: dev["holder"] for dev in devices if dev["holder"]}
    assert holders == {gpus[0]: {"user": "alice", "container": "thesis", "borrowed": False}}
    assert len(devices) == 7  # embedded default: GPUs 0-2 whole, GPU 3 split in four

    limits = ok(d.cli("alice", "check-limits", "--explain"))
    gpu_limit_line = next(ln for ln in limits.stdout.splitlines() if ln.startswith("gpu_limit"))
    assert "defaults" in gpu_limit_line, describe(limits)
    assert re.search(r"In use: 1(\.0+)? of 1(\.0+)?\b", limits.stdout), describe(limits)
    assert "thesis" in limits.stdout, describe(limits)

    ok(d.cli("alice", "container-stop", "thesis"))
    assert docker_state(docker_client, "thesis", "alice") == "exited"

    ok(d.cli("alice", "container-remove", "thesis"))
    assert docker_state(docker_client, "thesis", "alice") is None
    assert docker_state(docker_client, "thesis2", "alice") == "created"
    assert not [dev for dev in d.cli_json("alice", "gpu-status") if dev["holder"]]

    # Every step left an audit line with the full schema.
    resource = docker_name("thesis", "alice")
    for action in (
        "container.create",
        "gpu.allocate",
        "container.start",
        "container.stop",
        "container.remove",
        "gpu.release",
    ):
        found = events_about(d, action, resource, user="alice", outcome="success")
        assert len(found) == 1, (action, d.events())
        assert set(found[0]) >= EVENT_FIELDS, found[0]
        assert found[0]["ts"]
    allocate = events_about(d, "gpu.allocate", resource)[0]
    assert allocate["details"]["devices"] == gpus
    release = events_about(d, "gpu.release", resource)[0]
    assert release["details"]["devices"] == gpus


def test_every_hyphenated_command_also_works_as_ds01_noun_verb(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)

    ok(d.cli("alice", "container", "create", "thesis", "--image", "busybox", "--gpus", "1"))
    thesis = managed_containers(docker_client)[docker_name("thesis", "alice")]
    gpus = label_gpus(thesis)
    assert len(gpus) == 1

    ok(d.cli("alice", "container", "start", "thesis"))
    assert docker_state(docker_client, "thesis", "alice") == "running"

    rows = d.cli_json("alice", "container", "list")
    assert [(r["name"], r["status"], r["gpus"]) for r in rows] == [("thesis", "running", gpus)]

    devices = d.cli_json("alice", "gpu", "status")
    assert {dev["uuid"] for dev in devices if dev["holder"]} == set(gpus)
    assert ok(d.cli("alice", "gpu", "status")).stdout == ok(d.cli("alice", "gpu-status")).stdout

    limits = d.cli_json("alice", "limits")
    assert limits["user"] == "alice"
    assert limits["limits"]["gpu_limit"] == 1
    assert limits["usage"]["gpu_containers"] == ["thesis"]
    assert limits == d.cli_json("alice", "check-limits")

    images = d.cli_json("alice", "image", "list")
    assert "busybox" in {i["name"] for i in images}
    assert images == d.cli_json("alice", "image-list")

    ok(d.cli("alice", "container", "stop", "thesis"))
    assert docker_state(docker_client, "thesis", "alice") == "exited"
    ok(d.cli("alice", "container", "remove", "thesis"))
    assert docker_state(docker_client, "thesis", "alice") is None


# --- isolation -----------------------------------------------------------------------------


def test_bob_can_neither_see_nor_stop_alices_container(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    create(d, "alice", "thesis", "--gpus", "1")
    ok(d.cli("alice", "container-start", "thesis"))
    alice_thesis = docker_name("thesis", "alice")

    assert d.cli_json("bob", "container-list") == []
    assert "thesis" not in ok(d.cli("bob", "container-list")).stdout

    by_full_name = d.cli("bob", "container-stop", alice_thesis)
    assert by_full_name.returncode == 5, describe(by_full_name)
    by_user_flag = d.cli("bob", "container-stop", "thesis", "--user", "alice")
    assert by_user_flag.returncode == 5, describe(by_user_flag)
    remove = d.cli("bob", "container-remove", alice_thesis, "--force")
    assert remove.returncode == 5, describe(remove)

    denied = d.events_where(action="auth.denied", user="bob", outcome="denied")
    assert len(denied) >= 3, d.events()
    assert any(alice_thesis in e["resource"] for e in denied), denied
    assert any(e["resource"] == "user/alice" for e in denied), denied
    assert all(set(e) >= EVENT_FIELDS for e in denied)

    assert docker_state(docker_client, "thesis", "alice") == "running"
    assert not d.events_where(action="container.stop")
    assert not d.events_where(action="container.remove")

    own_namespace = d.cli("bob", "container-stop", "thesis")
    assert own_namespace.returncode == 4, describe(own_namespace)
    assert docker_state(docker_client, "thesis", "alice") == "running"


# --- quotas --------------------------------------------------------------------------------


def test_second_gpu_over_quota_is_refused_naming_the_holding_container(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    create(d, "alice", "thesis", "--gpus", "1")

    whole = d.cli(
        "alice", "container-create", "more", "--image", "busybox", "--gpus", "1", "--no-wait"
    )
    assert whole.returncode == 3, describe(whole)
    assert "thesis" in whole.stderr, describe(whole)
    mig = d.cli(
        "alice", "container-create", "slice", "--image", "busybox", "--mig", "1g.5gb", "--no-wait"
    )
    assert mig.returncode == 3, describe(mig)
    assert "thesis" in mig.stderr, describe(mig)

    assert set(managed_containers(docker_client)) == {docker_name("thesis", "alice")}
    refusals = d.events_where(action="container.create", user="alice", outcome="denied")
    assert {e["resource"] for e in refusals} == {
        f"container/{docker_name('more', 'alice')}",
        f"container/{docker_name('slice', 'alice')}",
    }
    # Another user's quota is their own: bob still gets a GPU.
    assert len(create(d, "bob", "thesis", "--gpus", "1")["gpus"]) == 1


def test_container_count_limit_is_refused_naming_the_containers(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    for name in ("one", "two", "three"):
        create(d, "alice", name)

    fourth = d.cli("alice", "container-create", "four", "--image", "busybox")
    assert fourth.returncode == 3, describe(fourth)
    for name in ("one", "two", "three"):
        assert name in fourth.stderr, describe(fourth)

    assert docker_state(docker_client, "four", "alice") is None
    assert len(managed_containers(docker_client)) == 3
    assert events_about(
        d, "container.create", docker_name("four", "alice"), user="alice", outcome="denied"
    )


# --- admins --------------------------------------------------------------------------------


def test_admins_list_and_stop_everyones_containers_but_bob_may_not(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    create(d, "alice", "thesis", "--gpus", "1")
    create(d, "bob", "notes")
    ok(d.cli("alice", "container-start", "thesis"))
    everyone = {("alice", "thesis"), ("bob", "notes")}

    for admin in ("erin", None):
        rows = d.cli_json(admin, "container-list", "--all")
        assert {(r["user"], r["name"]) for r in rows} == everyone, (admin, rows)
        assert "USER" in ok(d.cli(admin, "container-list", "--all")).stdout

    ok(d.cli("erin", "container-stop", "thesis", "--user", "alice"))
    assert docker_state(docker_client, "thesis", "alice") == "exited"
    stops = events_about(d, "container.stop", docker_name("thesis", "alice"))
    assert [e["user"] for e in stops] == ["erin"]

    ok(d.cli("alice", "container-start", "thesis"))
    ok(d.cli(None, "container-stop", "thesis", "--user", "alice"))
    assert docker_state(docker_client, "thesis", "alice") == "exited"

    bob_all = d.cli("bob", "container-list", "--all")
    assert bob_all.returncode == 5, describe(bob_all)
    assert "alice" not in bob_all.stdout
    assert d.events_where(action="auth.denied", user="bob", resource="containers/*")


# --- Docker is ds01d's alone ---------------------------------------------------------------


def test_users_cannot_talk_to_docker_directly(ds01d):
    ds01d(start=False)  # only for the users and the Docker engine
    result = run_as("alice", "docker", "ps")
    assert result.returncode != 0, describe(result)
    assert "permission denied" in result.stderr.lower(), describe(result)
    assert "docker.sock" in result.stderr, describe(result)


def test_a_crafted_request_cannot_claim_another_identity(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    body = {"name": "crafted", "image": "busybox", "user": "bob", "uid": uid_of("bob")}

    refused = raw_request(d, "alice", "POST", "/v1/containers", body, {})
    assert refused["status"] == 400, refused
    assert refused["body"]["error"]["exit_code"] == 2, refused
    assert "user" in refused["body"]["error"]["message"], refused
    assert managed_containers(docker_client) == {}

    # A valid body, with the other identity only in headers and the query string.
    sneaky = raw_request(
        d,
        "alice",
        "POST",
        "/v1/containers?user=bob&uid=" + str(uid_of("bob")),
        {"name": "crafted", "image": "busybox"},
        {"X-Remote-User": "bob", "X-Forwarded-User": "bob"},
    )
    assert sneaky["status"] in (200, 400), sneaky
    containers = managed_containers(docker_client)
    assert all(c.labels["ds01.user"] == "alice" for c in containers.values()), containers
    assert all(c.labels["ds01.uid"] == str(uid_of("alice")) for c in containers.values())
    assert docker_name("crafted", "bob") not in containers
    if sneaky["status"] == 200:
        assert sneaky["body"]["user"] == "alice", sneaky
        assert set(containers) == {docker_name("crafted", "alice")}

    # The environment the client runs in does not matter either.
    me = d.cli_json("alice", "whoami", env={"USER": "bob", "LOGNAME": "bob"})
    assert (me["user"], me["uid"], me["is_admin"]) == ("alice", uid_of("alice"), False)
    assert d.cli_json("erin", "whoami")["is_admin"] is True


# --- exit codes and messages ---------------------------------------------------------------


def test_unknown_container_exits_4_and_invalid_name_exits_2(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)

    missing = d.cli("alice", "container-start", "nosuch")
    assert missing.returncode == 4, describe(missing)
    assert "nosuch" in missing.stderr, describe(missing)

    invalid = d.cli("alice", "container-create", "bad name", "--image", "busybox")
    assert invalid.returncode == 2, describe(invalid)
    assert "bad name" in invalid.stderr, describe(invalid)
    assert managed_containers(docker_client) == {}


def test_cli_says_clearly_when_the_daemon_is_not_running(ds01d):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML, start=False)

    never_started = d.cli("alice", "container-list")
    assert never_started.returncode == 1, describe(never_started)
    assert "Cannot reach ds01d" in never_started.stderr, describe(never_started)
    assert str(d.paths.socket) in never_started.stderr, describe(never_started)
    assert "ask your admin to start it." in never_started.stderr, describe(never_started)
    assert "Traceback" not in never_started.stderr
    as_root = d.cli(None, "container-list")  # an admin is told the command
    assert "systemctl start ds01d" in as_root.stderr, describe(as_root)
    assert "systemctl" not in never_started.stderr, describe(never_started)

    elsewhere = d.cli("alice", "gpu-status", env={"DS01_SOCKET": "/nonexistent/ds01.sock"})
    assert elsewhere.returncode == 1, describe(elsewhere)
    assert "/nonexistent/ds01.sock" in elsewhere.stderr, describe(elsewhere)
    assert "running" in elsewhere.stderr, describe(elsewhere)

    d.start()
    ok(d.cli("alice", "container-list"))
    d.kill()  # a crash leaves the socket file behind: nobody listens on it
    assert d.paths.socket.exists()
    crashed = d.cli("alice", "container-list")
    assert crashed.returncode == 1, describe(crashed)
    assert "Cannot reach ds01d" in crashed.stderr, describe(crashed)
    assert "Traceback" not in crashed.stderr
