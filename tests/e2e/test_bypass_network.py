"""End to end: users' containers and builds are kept apart on the network.

An attack that worked before per-user networks: bob, from a shell on the host, opened a
connection to an unpublished port of alice's container at its bridge address (every
container sat on Docker's one bridge, and nothing filtered what the host sends). Now each
user's containers sit on a network of their own (``ds01-u<uid>``, bridge ``ds01u<uid>``),
Docker drops traffic between two such bridges, and ds01's firewall rules let only the owner
and root open a connection from the host into a user's bridge.

The tests run as real users against a real ds01d and Docker: alice serves on an unpublished
port (busybox ``httpd`` as her uid); bob tries from a host shell (Python's socket, as his
uid), from his container (busybox ``nc``), by address and by her container's name; so do
users with no container at all. alice's own shell and her other container reach it, root
does, and her published 127.0.0.1 port still answers. Builds: a RUN step runs in the user's
build cgroup (inside their cgroup parent) with a pids limit, so a fork loop fails; it is on
the user's own network (or none, by policy), so it cannot reach another user's container.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hostconnect import BLOCKED, REACHED, host_connect

from support import BIN_DIR, TEST_IMAGE, TEST_IMAGES_YAML, describe

# These tests watch networks being made, guarded and removed: none may be there before.
pytestmark = pytest.mark.fresh_networks

#: A small pids limit, so that a fork loop in a build meets it quickly.
PIDS_LIMIT = 64
LIMITS = f"""
    defaults:
      max_containers: 4
      cpu_limit: 1
      memory_limit: 256M
      pids_limit: {PIDS_LIMIT}
"""
SERVED_PORT = 7777  # unpublished
PUBLISHED_PORT = 8080  # published on 127.0.0.1
SECRET = "alice-private-page"

def network_of(uid: int) -> str:
    return f"ds01-u{uid}"


def serve(d: Any, docker_client: Any, alice: pwd.struct_passwd) -> dict[str, Any]:
    """On daemon ``d``: alice's ``web`` serving ``SECRET`` on ``SERVED_PORT`` (unpublished)
    and ``PUBLISHED_PORT`` (published on 127.0.0.1), her ``peer`` and bob's ``probe``, all
    running. Returns the daemon, web's address and its published host port."""
    workspace = Path(alice.pw_dir) / "workspace"
    www = workspace / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(SECRET + "\n")
    for path in (workspace, www, www / "index.html"):
        os.chown(path, alice.pw_uid, alice.pw_gid)
    for name, args in (
        ("web", ("--port", str(PUBLISHED_PORT))),
        ("peer", ()),
    ):
        created = d.cli("alice", "container-create", name, "--image", "busybox", "--start", *args)
        assert created.returncode == 0, describe(created)
    probe = d.cli("bob", "container-create", "probe", "--image", "busybox", "--start")
    assert probe.returncode == 0, describe(probe)
    web = f"web._.{alice.pw_uid}"
    for port in (SERVED_PORT, PUBLISHED_PORT):
        exec_in(docker_client, web, f"httpd -p {port} -h /workspace/www", detach=True)
    attrs = docker_client.api.inspect_container(web)
    [address] = [n["IPAddress"] for n in attrs["NetworkSettings"]["Networks"].values()]
    published = int(attrs["NetworkSettings"]["Ports"][f"{PUBLISHED_PORT}/tcp"][0]["HostPort"])
    wait_until_served(address)
    return {"d": d, "address": address, "published": published, "web": web}


@pytest.fixture
def alice_serves(
    ds01d: Any, docker_client: Any, unix_users: dict[str, pwd.struct_passwd]
) -> dict[str, Any]:
    """``serve`` on a daemon of the test's own: for a test that changes the scene."""
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    return serve(d, docker_client, unix_users["alice"])


@pytest.fixture(scope="class")
def alice_serves_to_all(
    ds01d_per_class: Any, docker_client: Any, unix_users: dict[str, pwd.struct_passwd]
) -> dict[str, Any]:
    """``serve`` once for a class of tests that only try to reach her: none of them changes
    the scene (a connection or a build leaves her containers, networks and rules as they
    were)."""
    d = ds01d_per_class(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    return serve(d, docker_client, unix_users["alice"])


def exec_in(docker_client: Any, container: str, command: str, *, detach: bool = False) -> str:
    """Run ``command`` with ``sh -c`` in ``container`` as the container's own user."""
    exec_id = docker_client.api.exec_create(container, ["sh", "-c", command])["Id"]
    output = docker_client.api.exec_start(exec_id, detach=detach)
    return "" if detach else output.decode(errors="replace")


def wait_until_served(address: str) -> None:
    """Wait (as root, which may connect) until ``httpd`` answers on both ports."""
    deadline = time.monotonic() + 10
    while True:
        outcomes = [host_connect(None, address, SERVED_PORT)]
        if all(o.startswith(REACHED) for o in outcomes):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"httpd does not answer: {outcomes}")
        time.sleep(0.2)


def container_connect(docker_client: Any, container: str, host: str, port: int) -> str:
    """Ask for the page from inside ``container`` with busybox ``nc``."""
    return exec_in(
        docker_client,
        container,
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1; echo exit=$?",
    )


# -- containers ------------------------------------------------------------------------------


class TestNoOtherUserReachesHer:
    """alice serves (``alice_serves_to_all``, one scene for the class); others try."""

    def test_only_the_owner_and_root_reach_an_unpublished_port_from_the_host(
        self, alice_serves_to_all: dict[str, Any]
    ) -> None:
        address = alice_serves_to_all["address"]

        for intruder in ("bob", "carol", "dave"):  # bob and carol have containers, dave none
            outcome = host_connect(intruder, address, SERVED_PORT)
            assert outcome.startswith(BLOCKED), f"{intruder}: {outcome}"
            assert SECRET not in outcome
        assert SECRET in host_connect("alice", address, SERVED_PORT)
        assert SECRET in host_connect(None, address, SERVED_PORT)

    def test_other_users_containers_cannot_reach_hers_but_her_own_can(
        self, alice_serves_to_all: dict[str, Any], docker_client: Any
    ) -> None:
        address, web = alice_serves_to_all["address"], alice_serves_to_all["web"]
        alice, bob = (pwd.getpwnam(u).pw_uid for u in ("alice", "bob"))

        by_address = container_connect(docker_client, f"probe._.{bob}", address, SERVED_PORT)
        by_name = container_connect(docker_client, f"probe._.{bob}", "web", SERVED_PORT)
        by_docker_name = container_connect(docker_client, f"probe._.{bob}", web, SERVED_PORT)
        for outcome in (by_address, by_name, by_docker_name):
            assert SECRET not in outcome and "exit=0" not in outcome, outcome

        peer = f"peer._.{alice}"
        assert SECRET in container_connect(docker_client, peer, address, SERVED_PORT)
        assert SECRET in container_connect(docker_client, peer, "web", SERVED_PORT)  # by her name

        # Each container is on its owner's network and nothing else (not Docker's bridge).
        for name, uid in ((web, alice), (peer, alice), (f"probe._.{bob}", bob)):
            attrs = docker_client.api.inspect_container(name)
            assert sorted(attrs["NetworkSettings"]["Networks"]) == [network_of(uid)], name

    def test_her_published_port_still_answers_on_127_0_0_1(
        self, alice_serves_to_all: dict[str, Any]
    ) -> None:
        published = alice_serves_to_all["published"]

        assert SECRET in host_connect("alice", "127.0.0.1", published)
        assert SECRET in host_connect(None, "127.0.0.1", published)

    def test_a_build_step_cannot_reach_another_users_container(
        self, alice_serves_to_all: dict[str, Any]
    ) -> None:
        d, address = alice_serves_to_all["d"], alice_serves_to_all["address"]
        bob = pwd.getpwnam("bob").pw_uid
        context = build_context(
            "bob",
            f"RUN printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {SERVED_PORT}; "
            "echo nc-exit=$?; ls /sys/class/net",
        )

        result = build(d, "bob", context)

        assert result.returncode == 0, describe(result)
        assert "nc-exit=" in result.stdout and SECRET not in result.stdout, describe(result)
        assert "eth0" in result.stdout, describe(result)  # it has a network: his own
        assert f"your own network {network_of(bob)}" in result.stdout, describe(result)


def firewall_rules() -> str:
    return subprocess.run(
        ["iptables", "-w", "-S"], capture_output=True, text=True, check=True
    ).stdout


def doctor_firewall(d: Any) -> dict[str, Any]:
    report = d.cli(None, "admin", "doctor", "--json", timeout=30)
    [finding] = [f for f in json.loads(report.stdout)["findings"] if f["check"] == "firewall"]
    return dict(finding)


def test_lost_rules_are_reported_and_installed_again_at_start(alice_serves):
    d, address = alice_serves["d"], alice_serves["address"]
    bridge = f"ds01u{pwd.getpwnam('alice').pw_uid}"
    assert f"-A DS01 -o {bridge} -j DS01-{bridge}" in firewall_rules()
    assert doctor_firewall(d)["level"] == "ok"

    # As after a reboot, or an admin's `iptables -F`: the rules are gone.
    subprocess.run(["iptables", "-w", "-F", f"DS01-{bridge}"], check=True)
    assert host_connect("bob", address, SERVED_PORT).startswith(REACHED)  # the door, open
    finding = doctor_firewall(d)
    assert finding["level"] == "critical" and bridge in finding["message"], finding

    d.restart()

    assert host_connect("bob", address, SERVED_PORT).startswith(BLOCKED)
    assert doctor_firewall(d)["level"] == "ok"
    assert d.events_where(action="network.firewall", outcome="success")


def test_her_network_and_its_rules_go_with_her_last_container(alice_serves, docker_client):
    d = alice_serves["d"]
    alice = pwd.getpwnam("alice").pw_uid
    bridge = f"ds01u{alice}"

    first = d.cli("alice", "container-remove", "web", "--force")
    assert first.returncode == 0, describe(first)
    assert docker_client.networks.list(names=[network_of(alice)]), "removed while peer uses it"
    last = d.cli("alice", "container-remove", "peer", "--force")
    assert last.returncode == 0, describe(last)

    # No hub here, so nothing routes to her addresses: no keep (test_bypass_hub has one).
    assert not docker_client.networks.list(names=[network_of(alice)]), "her network stays"
    assert bridge not in firewall_rules()
    assert docker_client.networks.list(names=[network_of(pwd.getpwnam("bob").pw_uid)])
    again = d.cli("alice", "container-create", "again", "--image", "busybox", "--start")
    assert again.returncode == 0, describe(again)
    assert f"-A DS01 -o {bridge} -j DS01-{bridge}" in firewall_rules()


def test_a_container_made_before_per_user_networks_moves_onto_hers_at_start(
    alice_serves, docker_client
):
    d, address = alice_serves["d"], alice_serves["address"]
    alice = pwd.getpwnam("alice").pw_uid
    old = f"old._.{alice}"
    created = d.cli("alice", "container-create", "old", "--image", "busybox")
    assert created.returncode == 0, describe(created)
    # As an older ds01 made it: on Docker's default bridge.
    docker_client.api.disconnect_container_from_network(old, network_of(alice))
    docker_client.api.connect_container_to_network(old, "bridge")

    started = d.cli("alice", "container-start", "old")

    assert started.returncode == 0, describe(started)
    networks = docker_client.api.inspect_container(old)["NetworkSettings"]["Networks"]
    assert sorted(networks) == [network_of(alice)]
    assert SECRET in container_connect(docker_client, old, "web", SERVED_PORT)
    moved = networks[network_of(alice)]["IPAddress"]
    exec_in(docker_client, old, f"httpd -p {SERVED_PORT} -h /workspace/www", detach=True)
    wait_until_served(moved)
    assert host_connect("bob", moved, SERVED_PORT).startswith(BLOCKED)
    assert SECRET in host_connect("alice", moved, SERVED_PORT)
    assert host_connect("bob", address, SERVED_PORT).startswith(BLOCKED)


def test_at_start_it_guards_every_ds01_network_and_removes_only_its_own_unused_ones(
    ds01d, docker_client, unix_users
):
    alice = unix_users["alice"].pw_uid
    foreign = docker_client.networks.create(
        "ds01-u4242",
        driver="bridge",
        options={"com.docker.network.bridge.name": "ds01u4242"},
        labels={"ds01.network": "user", "ds01.uid": "4242", "ds01.instance": "another-ds01d"},
    )
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created = d.cli("alice", "container-create", "gone", "--image", "busybox")
    assert created.returncode == 0, describe(created)
    # Removed behind ds01d's back: at its next start her network has no container left.
    docker_client.api.remove_container(f"gone._.{alice}", force=True)

    d.restart()

    assert not docker_client.networks.list(names=[network_of(alice)])
    assert "-A DS01 -o ds01u4242 -j DS01-ds01u4242" in firewall_rules()  # guarded, not removed
    foreign.reload()
    assert foreign.name == "ds01-u4242"


def test_without_iptables_no_container_is_created_and_admins_are_told(
    ds01d, docker_client, unix_users
):
    # ds01d finds no iptables on its PATH: it cannot guard a network.
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML, env={"PATH": str(BIN_DIR)})

    created = d.cli("alice", "container-create", "open", "--image", "busybox", "--start")

    assert created.returncode == 1, describe(created)
    assert "firewall" in created.stderr and "iptables" in created.stderr, describe(created)
    alice = unix_users["alice"].pw_uid
    assert not docker_client.containers.list(all=True, filters={"name": f"open._.{alice}"})
    assert not docker_client.networks.list(names=[network_of(alice)])  # none left unguarded
    assert d.events_where(action="network.firewall", outcome="failure")
    assert doctor_firewall(d)["level"] == "critical"
    listed = d.cli("alice", "container-list")
    assert listed.returncode == 0, describe(listed)  # ds01d itself keeps serving


# -- builds ----------------------------------------------------------------------------------


def build_context(user: str, *steps: str) -> Path:
    """A fresh build directory in ``user``'s home with a Dockerfile of ``steps``."""
    entry = pwd.getpwnam(user)
    path = Path(entry.pw_dir) / f"ds01t-net-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "Dockerfile").write_text("\n".join([f"FROM {TEST_IMAGE}", *steps]) + "\n")
    for item in (path, path / "Dockerfile"):
        os.chown(item, entry.pw_uid, entry.pw_gid)
    return path


def build(d: Any, user: str, context: Path) -> subprocess.CompletedProcess[str]:
    return d.cli(
        user, "image-build", f"ds01t-net-{uuid.uuid4().hex[:6]}", "--context", str(context),
        "--no-cache", timeout=120,
    )  # fmt: skip


def test_a_fork_loop_in_a_build_step_meets_her_pids_limit(ds01d, unix_users):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    forks = build_context(
        "alice",
        "RUN cat /proc/self/cgroup; i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); done; "
        "echo all-$((250 * 2))-started",  # the text only when it runs
    )

    result = build(d, "alice", forks)

    assert result.returncode != 0, describe(result)
    assert "all-500-started" not in result.stdout, describe(result)
    assert "can't fork" in result.stdout + result.stderr, describe(result)
    # The step's pids cgroup: her build cgroup, inside her cgroup parent.
    assert re.search(
        r":pids:/ds01\.slice/[^ ]*alice[^/ ]*\.slice/[^/ ]*-build\.slice/", result.stdout
    ), describe(result)
    assert f"at most {PIDS_LIMIT} processes" in result.stdout, describe(result)


def test_with_build_network_off_a_build_step_has_no_network(ds01d, unix_users):
    limits = LIMITS + "    policies:\n      users:\n        bob: {build_network: false}\n"
    d = ds01d(resource_limits=limits, images=TEST_IMAGES_YAML)
    context = build_context("bob", "RUN echo interfaces: $(ls /sys/class/net)")

    result = build(d, "bob", context)

    assert result.returncode == 0, describe(result)
    assert "interfaces: lo" in result.stdout and "eth0" not in result.stdout, describe(result)
    assert "no network" in result.stdout, describe(result)
