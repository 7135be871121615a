"""End to end: a table of bypass attempts by a real non-admin user, each refused and logged.

The reference implementation could be bypassed by asking Docker for what the wrapper
forgot to forbid (``ds01-infra.md`` §4e, §11b): ``--privileged``, the host network, ``/`` or
the Docker socket as a mount, ``NVIDIA_VISIBLE_DEVICES=all``, an owner label or a cgroup
parent of someone else's, and containers of other users addressed directly. ds01 closes
these by construction: users have no Docker access, and ds01d builds every container itself
from a small, closed request schema.

Each row below is one attempt by alice (``phd``, not an admin), through the real CLI where
the CLI can express it and through the raw API (HTTP over the unix socket from a process
running as alice, with hand-made JSON). For every row the test checks:

- the exit code: 5 (permission), 2 (malformed input; an unknown JSON field is refused by
  the schema with HTTP 400), or 4 where a Docker id is read as a name of hers;
- Docker itself: no container appeared, disappeared or changed (ids, labels, state,
  start time), bob's GPU container included;
- nothing succeeded: no ``success`` event;
- the refusal is LOGGED: an event in ``events.jsonl`` with user alice, outcome ``denied``
  (action ``auth.denied`` for permission refusals, ``container.create`` for a create whose
  input is refused; where the daemon's choice is open, any action).

Further tests: flags the CLI does not have; what the daemon accepts but must not honour
(``interface``, client environment, identity headers, an image whose ENV says ``all``); the
Docker-side facts of every container alice does get; sizes Docker reads as "unlimited"; and
a workspace swapped for a symlink after the ownership check.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rawapi import RawApi, check_error_shape, container_problems, environment, user_slice

from support import ONLY_BUSYBOX_YAML, TEST_IMAGE_ALT, describe

LIMITS = """
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 1G
    groups:
      phd:
        max_containers: 4
"""
MEMORY_LIMIT_BYTES = 1024**3
CPU_LIMIT_NANO = 10**9

# Only the test image is registered and nothing else is allowed: its second reference
# (busybox-alt) is present locally but outside the allowed set.
IMAGES = ONLY_BUSYBOX_YAML

#: The HTTP status that goes with each exit code in an error answer.
HTTP_STATUS = {2: 400, 3: 409, 4: 404, 5: 403}

#: Symlinks planted in alice's home, each leading out of it.
SYMLINKS = {
    "bypass-root": "/",
    "bypass-bob": "{bob_home}",
    "bypass-var-run": "/var/run",
    "bypass-docker-sock": "/var/run/docker.sock",
}


class NotLogged(AssertionError):
    """A refusal happened but left no ``denied`` event by alice in the event log."""


class QuotaEscaped(AssertionError):
    """A container got a resource limit that Docker reads as "unlimited"."""


class MountEscaped(AssertionError):
    """A started container sees a host directory its owner was not allowed to mount."""


# --- the scene: bob holds a GPU in a running container; alice tries her luck ---------------


@dataclass
class Scene:
    d: Any
    docker: Any
    alice: pwd.struct_passwd
    bob: pwd.struct_passwd
    values: dict[str, str] = field(default_factory=dict)

    def fill(self, value: Any) -> Any:
        """``value`` with ``{placeholders}`` in every string replaced from ``values``."""
        if isinstance(value, str):
            return value.format(**self.values)
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.fill(v) for v in value)
        return value

    def snapshot(self) -> dict[str, tuple[Any, ...]]:
        """Docker's view of every container ds01 or these users could have made."""
        suffixes = (f"._.{self.alice.pw_uid}", f"._.{self.bob.pw_uid}")
        found = {
            c.id: c
            for c in self.docker.containers.list(all=True, filters={"label": "ds01.managed"})
        }
        for c in self.docker.containers.list(all=True):
            if c.name.endswith(suffixes):
                found[c.id] = c
        state = {}
        for cid, c in found.items():
            attrs = self.docker.api.inspect_container(cid)
            state[c.name] = (
                cid,
                attrs["State"]["Status"],
                attrs["State"]["StartedAt"],
                tuple(sorted((attrs["Config"]["Labels"] or {}).items())),
            )
        return state

    def run(self, attempt: Attempt) -> tuple[int, str]:
        """Make the attempt as alice; return (exit code, a description for messages)."""
        if attempt.cli is not None:
            result = self.d.cli("alice", *self.fill(attempt.cli))
            return result.returncode, describe(result)
        assert attempt.api is not None
        method, path, body = self.fill(attempt.api)
        with RawApi(self.d.paths.socket, "alice") as api:
            reply = api.call(method, path, body)
        assert reply.status is not None and reply.status >= 400, f"not refused:\n{reply}"
        assert not check_error_shape(reply), f"{check_error_shape(reply)}\n{reply}"
        exit_code = reply.error_body["exit_code"]
        assert reply.status == HTTP_STATUS.get(exit_code), f"status vs exit code:\n{reply}"
        return exit_code, str(reply)


@contextlib.contextmanager
def staged(d: Any, docker_client: Any, unix_users: dict[str, Any]) -> Iterator[Scene]:
    """The scene on the running ``d``: bob's GPU container, alice's symlinks out of her home."""
    alice, bob = unix_users["alice"], unix_users["bob"]
    created = d.cli(
        "bob", "container-create", "thesis", "--image", "busybox", "--gpus", "1", "--start"
    )
    assert created.returncode == 0, describe(created)
    bob_container = f"thesis._.{bob.pw_uid}"
    attrs = docker_client.api.inspect_container(bob_container)
    assert attrs["State"]["Status"] == "running"
    scene = Scene(d, docker_client, alice, bob)
    scene.values = {
        "alice_home": alice.pw_dir,
        "bob_home": bob.pw_dir,
        "bob_uid": str(bob.pw_uid),
        "bob_container": bob_container,
        "bob_id": attrs["Id"],
        "bob_id12": attrs["Id"][:12],
        "bob_slice": attrs["HostConfig"]["CgroupParent"],
    }
    links = []
    for name, target in SYMLINKS.items():
        link = Path(alice.pw_dir) / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(scene.fill(target))
        os.lchown(link, alice.pw_uid, alice.pw_gid)
        links.append(link)
    try:
        yield scene
    finally:
        for link in links:
            link.unlink(missing_ok=True)


@pytest.fixture
def scene(ds01d: Any, docker_client: Any, unix_users: dict[str, Any]) -> Iterator[Scene]:
    with staged(ds01d(resource_limits=LIMITS, images=IMAGES), docker_client, unix_users) as s:
        yield s


@pytest.fixture(scope="class")
def table_scene(
    ds01d_per_class: Any, docker_client: Any, unix_users: dict[str, Any]
) -> Iterator[Scene]:
    """One scene for every row of a table: each row checks that it changed nothing. Every
    refusal is written (a refusal window of 1 ms: none is summed up instead)."""
    d = ds01d_per_class(
        resource_limits=LIMITS, images=IMAGES, extra_args=["--audit-refusal-window", "0.001"]
    )
    with staged(d, docker_client, unix_users) as s:
        yield s


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    what: str
    exits: tuple[int, ...]  # acceptable exit codes (the CLI's, or the error's exit_code)
    logged_as: str | None  # the action of the expected ``denied`` event; None: any
    resource: str | None = None  # the event's resource, where it is certain
    cli: tuple[str, ...] | None = None
    api: tuple[str, str, Any] | None = None


def via_cli(
    key: str,
    what: str,
    *args: str,
    exits: tuple[int, ...],
    logged_as: str | None = None,
    resource: str | None = None,
    marks: Any = (),
) -> Any:
    attempt = Attempt(what, exits, logged_as, resource, cli=args)
    return pytest.param(attempt, id=f"{key}-via-cli", marks=marks)


def via_api(
    key: str,
    what: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    exits: tuple[int, ...],
    logged_as: str | None = None,
    resource: str | None = None,
    marks: Any = (),
) -> Any:
    attempt = Attempt(what, exits, logged_as, resource, api=(method, path, body))
    return pytest.param(attempt, id=f"{key}-via-api", marks=marks)


def create_body(**extra: Any) -> dict[str, Any]:
    """A valid create request for alice, plus ``extra`` fields."""
    return {"name": "bypass", "image": "busybox", **extra}


def create_args(*extra: str) -> tuple[str, ...]:
    return ("container-create", "bypass", "--image", "busybox", *extra)


PERMISSION = (5,)
MALFORMED = (2,)
DENIED = "auth.denied"
CREATE_DENIED = "container.create"
BOB_CONTAINER = "container/{bob_container}"

# Unknown JSON fields are refused by the schema (HTTP 400, exit 2) before any handler runs.
ATTEMPTS = [
    # privileged
    via_api("privileged", "privileged container", "POST", "/v1/containers",
            create_body(privileged=True), exits=MALFORMED),
    via_api("privileged-hostconfig", "Docker's own HostConfig.Privileged", "POST",
            "/v1/containers", create_body(HostConfig={"Privileged": True}), exits=MALFORMED),
    # host network
    via_api("host-network", "network_mode host", "POST", "/v1/containers",
            create_body(network_mode="host"), exits=MALFORMED),
    via_api("host-network-short", "network host", "POST", "/v1/containers",
            create_body(network="host"), exits=MALFORMED),
    # a command of one's own in a create: a Slurm cluster's batch job only (`ds01 job run`)
    via_cli("batch-command-on-a-single-server", "ds01 job run on a single server",
            "job", "run", "--image", "busybox", "--name", "bypass", "--", "id",
            exits=MALFORMED, logged_as=CREATE_DENIED),
    via_api("batch-command-on-a-single-server", "command in a create on a single server",
            "POST", "/v1/containers", create_body(command=["id"]), exits=MALFORMED,
            logged_as=CREATE_DENIED),
    # / or another user's home as a mount
    via_cli("root-as-workspace", "/ as /workspace", *create_args("--workspace", "/"),
            exits=PERMISSION, logged_as=DENIED),
    via_api("root-as-workspace", "/ as /workspace", "POST", "/v1/containers",
            create_body(workspace="/"), exits=PERMISSION, logged_as=DENIED),
    via_api("root-as-extra-mount", "mounts: / at /host", "POST", "/v1/containers",
            create_body(mounts=[{"type": "bind", "source": "/", "target": "/host"}]),
            exits=MALFORMED),
    via_cli("bob-home-as-data", "bob's home as /data", *create_args("--data", "{bob_home}"),
            exits=PERMISSION, logged_as=DENIED),
    via_api("bob-home-as-workspace", "bob's home as /workspace", "POST", "/v1/containers",
            create_body(workspace="{bob_home}"), exits=PERMISSION, logged_as=DENIED),
    via_api("dotdot-to-bob-home", "~alice/../bob as /data", "POST", "/v1/containers",
            create_body(data="{alice_home}/../bob"), exits=PERMISSION, logged_as=DENIED),
    via_api("relative-path", "relative ../bob as /workspace", "POST", "/v1/containers",
            create_body(workspace="../bob"), exits=MALFORMED, logged_as=CREATE_DENIED),
    # symlinks out of alice's home
    via_cli("symlink-to-root", "~/bypass-root -> / as /workspace",
            *create_args("--workspace", "{alice_home}/bypass-root"),
            exits=PERMISSION, logged_as=DENIED),
    via_cli("symlink-to-bob-home", "~/bypass-bob -> bob's home as /data",
            *create_args("--data", "{alice_home}/bypass-bob"), exits=PERMISSION,
            logged_as=DENIED),
    via_api("symlink-to-bob-home", "~/bypass-bob -> bob's home as /data", "POST",
            "/v1/containers", create_body(data="{alice_home}/bypass-bob"), exits=PERMISSION,
            logged_as=DENIED),
    # the Docker socket
    via_cli("docker-socket-dir", "/var/run (holds docker.sock) as /data",
            *create_args("--data", "/var/run"), exits=PERMISSION, logged_as=DENIED),
    via_cli("docker-socket", "/var/run/docker.sock as /workspace",
            *create_args("--workspace", "/var/run/docker.sock"), exits=MALFORMED,
            logged_as=CREATE_DENIED),
    via_cli("symlink-to-docker-socket", "~/bypass-docker-sock as /data",
            *create_args("--data", "{alice_home}/bypass-docker-sock"), exits=MALFORMED,
            logged_as=CREATE_DENIED),
    via_api("docker-socket-dir", "/var/run as /data", "POST", "/v1/containers",
            create_body(data="/var/run"), exits=PERMISSION, logged_as=DENIED),
    via_api("symlink-to-var-run", "~/bypass-var-run as /workspace", "POST", "/v1/containers",
            create_body(workspace="{alice_home}/bypass-var-run"), exits=PERMISSION,
            logged_as=DENIED),
    via_api("docker-socket-mount", "mounts: docker.sock", "POST", "/v1/containers",
            create_body(mounts=[{"type": "bind", "source": "/var/run/docker.sock",
                                 "target": "/var/run/docker.sock"}]), exits=MALFORMED),
    via_api("docker-socket-binds", "binds: docker.sock", "POST", "/v1/containers",
            create_body(binds=["/var/run/docker.sock:/var/run/docker.sock"]),
            exits=MALFORMED),
    # NVIDIA_VISIBLE_DEVICES=all
    via_api("nvidia-all-environment", "environment NVIDIA_VISIBLE_DEVICES=all", "POST",
            "/v1/containers", create_body(environment={"NVIDIA_VISIBLE_DEVICES": "all"}),
            exits=MALFORMED),
    via_api("nvidia-all-env-list", "env [NVIDIA_VISIBLE_DEVICES=all]", "POST",
            "/v1/containers", create_body(env=["NVIDIA_VISIBLE_DEVICES=all"]),
            exits=MALFORMED),
    via_api("mig-profile-all", "MIG profile 'all'", "POST", "/v1/containers",
            create_body(mig=["all"]), exits=(2, 3), logged_as=CREATE_DENIED),
    # ports published beyond this machine, or on a system port
    via_api("port-on-all-addresses", "ports: host_ip 0.0.0.0", "POST", "/v1/containers",
            create_body(ports=[{"container_port": 8080, "host_ip": "0.0.0.0"}]),
            exits=MALFORMED),
    via_api("docker-port-bindings", "port_bindings on 0.0.0.0", "POST", "/v1/containers",
            create_body(port_bindings={"8080/tcp": [{"HostIp": "0.0.0.0"}]}), exits=MALFORMED),
    via_cli("system-host-port", "--port 22:8080 (a system port)", *create_args("--port", "22:8080"),
            exits=MALFORMED, logged_as=DENIED),
    via_api("system-host-port", "host_port 80", "POST", "/v1/containers",
            create_body(ports=[{"container_port": 8080, "host_port": 80}]), exits=MALFORMED),
    # a label claiming another owner
    via_api("owner-labels", "labels ds01.user=bob", "POST", "/v1/containers",
            create_body(labels={"ds01.user": "bob", "ds01.uid": "{bob_uid}",
                                "ds01.managed": "true"}), exits=MALFORMED),
    via_api("owner-fields", "user/uid fields naming bob", "POST", "/v1/containers",
            create_body(user="bob", uid="{bob_uid}"), exits=MALFORMED),
    via_cli("name-claims-bob", "create thesis._.<bob uid>",
            "container-create", "{bob_container}", "--image", "busybox", exits=MALFORMED),
    via_api("name-claims-bob", "create thesis._.<bob uid>", "POST", "/v1/containers",
            {"name": "{bob_container}", "image": "busybox"}, exits=MALFORMED),
    # a cgroup parent of someone else
    via_api("bob-cgroup-parent", "cgroup_parent = bob's slice", "POST", "/v1/containers",
            create_body(cgroup_parent="{bob_slice}"), exits=MALFORMED),
    via_api("system-cgroup-parent", "cgroup_parent = system.slice", "POST", "/v1/containers",
            create_body(cgroup_parent="/system.slice"), exits=MALFORMED),
    # names with / or ..
    via_cli("name-with-slash", "create a/b", "container-create", "a/b", "--image", "busybox",
            exits=MALFORMED),
    via_cli("name-dotdot", "create ../../etc", "container-create", "../../etc", "--image",
            "busybox", exits=MALFORMED),
    via_api("name-dotdot", "create ../x", "POST", "/v1/containers",
            {"name": "../x", "image": "busybox"}, exits=MALFORMED),
    via_cli("stop-dotdot", "stop ../<bob's container>", "container-stop",
            "../{bob_container}", exits=MALFORMED),
    via_api("stop-encoded-dotdot", "POST /v1/containers/..%2F<bob's>/stop", "POST",
            "/v1/containers/..%2F{bob_container}/stop", exits=MALFORMED),
    # an image outside the allowed set
    via_cli("unregistered-image", "a local image outside the registry",
            "container-create", "bypass", "--image", TEST_IMAGE_ALT, exits=PERMISSION,
            logged_as=DENIED),
    via_api("unregistered-image", "a local image outside the registry", "POST",
            "/v1/containers", {"name": "bypass", "image": TEST_IMAGE_ALT}, exits=PERMISSION,
            logged_as=DENIED),
    via_api("unregistered-remote-image", "docker:dind (not registered, not here)", "POST",
            "/v1/containers", {"name": "bypass", "image": "docker:dind"}, exits=PERMISSION,
            logged_as=DENIED),
    # another user's container by full name, Docker id and id prefix
    via_cli("start-bobs-by-full-name", "container-start thesis._.<bob uid>",
            "container-start", "{bob_container}", exits=PERMISSION, logged_as=DENIED,
            resource=BOB_CONTAINER),
    via_api("stop-bobs-by-full-name", "stop thesis._.<bob uid>", "POST",
            "/v1/containers/{bob_container}/stop", exits=PERMISSION, logged_as=DENIED,
            resource=BOB_CONTAINER),
    via_api("remove-bobs-by-full-name", "remove --force thesis._.<bob uid>", "DELETE",
            "/v1/containers/{bob_container}?force=1", exits=PERMISSION,
            logged_as=DENIED, resource=BOB_CONTAINER),
    # another user's output and use, read-only but private
    via_cli("logs-bobs-by-full-name", "container-logs thesis._.<bob uid>", "container-logs",
            "{bob_container}", exits=PERMISSION, logged_as=DENIED, resource=BOB_CONTAINER),
    via_api("follow-bobs-logs-by-full-name", "GET …/thesis._.<bob uid>/logs?follow=1", "GET",
            "/v1/containers/{bob_container}/logs?follow=1&tail=all", exits=PERMISSION,
            logged_as=DENIED, resource=BOB_CONTAINER),
    via_api("logs-bobs-by-docker-id", "GET /v1/containers/<bob's Docker id>/logs", "GET",
            "/v1/containers/{bob_id}/logs", exits=(2, 5)),
    via_cli("stats-bobs-by-full-name", "container-stats thesis._.<bob uid>", "container-stats",
            "{bob_container}", exits=PERMISSION, logged_as=DENIED, resource=BOB_CONTAINER),
    via_api("stats-bobs-by-full-name", "GET …/thesis._.<bob uid>/stats", "GET",
            "/v1/containers/{bob_container}/stats", exits=PERMISSION, logged_as=DENIED,
            resource=BOB_CONTAINER),
    via_cli("stats-of-bob", "container-stats --user bob", "container-stats", "--user", "bob",
            exits=PERMISSION, logged_as=DENIED),
    via_api("stats-of-bob", "GET /v1/stats?user=bob", "GET", "/v1/stats?user=bob",
            exits=PERMISSION, logged_as=DENIED),
    via_cli("stop-bobs-by-docker-id", "container-stop <bob's Docker id>", "container-stop",
            "{bob_id}", exits=(2, 5)),
    via_api("remove-bobs-by-docker-id", "DELETE <bob's Docker id>?force=1", "DELETE",
            "/v1/containers/{bob_id}?force=1", exits=(2, 5)),
    via_cli("remove-bobs-by-id-prefix", "container-remove <12-hex id prefix> --force",
            "container-remove", "{bob_id12}", "--force", exits=(4, 5)),
    via_api("stop-bobs-by-id-prefix", "stop <12-hex id prefix>", "POST",
            "/v1/containers/{bob_id12}/stop", exits=(4, 5)),
]  # fmt: skip


class TestTheTable:
    """Every row against one daemon and one scene (``table_scene``)."""

    @pytest.mark.parametrize("attempt", ATTEMPTS)
    def test_bypass_attempt_is_refused_changes_nothing_and_is_logged(
        self, table_scene: Scene, attempt: Attempt
    ) -> None:
        scene = table_scene
        before = scene.snapshot()
        seen = len(scene.d.events())

        exit_code, shown = scene.run(attempt)

        assert exit_code in attempt.exits, f"{attempt.what}: exit {exit_code}\n{shown}"
        assert scene.snapshot() == before, f"{attempt.what} changed Docker\n{shown}"
        new = scene.d.events()[seen:]
        assert not [e for e in new if e["outcome"] == "success"], new
        denied = [e for e in new if e["user"] == "alice" and e["outcome"] == "denied"]
        if attempt.logged_as is not None:
            denied = [e for e in denied if e["action"] == attempt.logged_as]
        if attempt.resource is not None:
            denied = [e for e in denied if e["resource"] == scene.fill(attempt.resource)]
        if not denied:
            raise NotLogged(
                f"{attempt.what}: refused with exit {exit_code} but not logged as a denied "
                f"{attempt.logged_as or 'event'} by alice; new events: {new}\n{shown}"
            )
        assert all(e["ts"] and isinstance(e["details"], dict) for e in denied), denied

    # --- what the CLI cannot even express ------------------------------------------------------

    @pytest.mark.parametrize(
        "flags",
        [
            pytest.param(("--privileged",), id="privileged"),
            pytest.param(("--network", "host"), id="network-host"),
            pytest.param(("--net=host",), id="net-host"),
            pytest.param(("-v", "/:/host"), id="volume-root"),
            pytest.param(("--mount", "type=bind,src=/var/run/docker.sock,dst=/s"), id="mount"),
            pytest.param(("-e", "NVIDIA_VISIBLE_DEVICES=all"), id="env"),
            pytest.param(("--label", "ds01.user=bob"), id="label"),
            pytest.param(("--cgroup-parent", "/system.slice"), id="cgroup-parent"),
            pytest.param(("--user", "bob"), id="user"),
            pytest.param(("--runtime", "nvidia"), id="runtime"),
        ],
    )
    def test_cli_has_no_flag_for_docker_options_and_sends_nothing(
        self, table_scene: Scene, flags: tuple[str, ...]
    ) -> None:
        scene = table_scene
        before = scene.snapshot()
        seen = len(scene.d.events())

        result = scene.d.cli("alice", *create_args(*flags))

        assert result.returncode == 2, describe(result)
        assert "unrecognized arguments" in result.stderr, describe(result)
        assert scene.snapshot() == before
        assert scene.d.events()[seen:] == [], "the CLI sent a request it could not parse"


# --- what alice does get ------------------------------------------------------------------------


def assert_hers_and_unprivileged(scene: Scene, docker_name: str) -> dict[str, Any]:
    """Docker's own record of a container alice made: hers, unprivileged, GPU-bounded,
    within her memory and CPU limits (see ``rawapi.container_problems``)."""
    attrs: dict[str, Any] = scene.docker.api.inspect_container(docker_name)
    problems = container_problems(
        attrs,
        scene.alice,
        user_slice(scene.docker, "phd", "alice"),
        memory_limit=MEMORY_LIMIT_BYTES,
        nano_cpus_limit=CPU_LIMIT_NANO,
    )
    assert not problems, (docker_name, problems)
    return attrs


def test_fields_the_daemon_accepts_cannot_widen_what_alice_gets(
    scene: Scene, docker_client: Any
) -> None:
    # ds01.interface=job made the reference skip GPU allocation; here it is only a label.
    # The query string and headers naming bob are ignored: identity comes from the kernel.
    with RawApi(scene.d.paths.socket, "alice") as api:
        job = api.call(
            "POST",
            "/v1/containers?user=bob&uid=" + scene.values["bob_uid"],
            {"name": "job", "image": "busybox", "gpus": 1, "interface": "job"},
            headers={"X-Remote-User": "bob", "X-Ds01-User": "bob"},
        )
        assert job.status == 200, job
        over = api.call(
            "POST",
            "/v1/containers",
            {"name": "deploy", "image": "busybox", "gpus": 1, "interface": "deploy"},
        )
    assert over.status == 409 and over.error_body["exit_code"] == 3, over
    refused = f"container/deploy._.{scene.alice.pw_uid}"
    assert scene.d.events_where(
        action="container.create", user="alice", outcome="denied", resource=refused
    )

    # The client's environment never reaches the container.
    client_env = {
        "NVIDIA_VISIBLE_DEVICES": "all",
        "CUDA_VISIBLE_DEVICES": "all",
        "DS01_USER": "bob",
        "USER": "bob",
    }
    cli = scene.d.cli("alice", *create_args("--start"), env=client_env)
    assert cli.returncode == 0, describe(cli)

    mine = {
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})
    }
    assert mine == {f"job._.{scene.alice.pw_uid}", f"bypass._.{scene.alice.pw_uid}"}
    job_attrs = assert_hers_and_unprivileged(scene, f"job._.{scene.alice.pw_uid}")
    assert job_attrs["Config"]["Labels"]["ds01.interface"] == "job"
    held = [u for u in job_attrs["Config"]["Labels"]["ds01.gpus"].split(",") if u]
    assert len(held) == 1, job_attrs["Config"]["Labels"]
    bob = docker_client.api.inspect_container(scene.values["bob_container"])
    assert held[0] not in bob["Config"]["Labels"]["ds01.gpus"].split(",")
    started = assert_hers_and_unprivileged(scene, f"bypass._.{scene.alice.pw_uid}")
    assert started["State"]["Status"] == "running"
    assert environment(started)["NVIDIA_VISIBLE_DEVICES"] == "void"


@pytest.fixture
def image_saying_all(docker_client: Any, test_image: str) -> Iterator[str]:
    """A local image built FROM the test image whose ENV asks for every GPU."""
    tag = "ds01-test/nvidia-all:latest"
    dockerfile = (
        f"FROM {test_image}\n"
        "ENV NVIDIA_VISIBLE_DEVICES=all CUDA_VISIBLE_DEVICES=all "
        "NVIDIA_DRIVER_CAPABILITIES=all\n"
    )
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True
    )
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def test_an_image_whose_env_says_all_cannot_widen_gpu_access(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any], image_saying_all: str
) -> None:
    images = textwrap.dedent(IMAGES) + (
        "  - name: nvidia-all\n"
        f"    image: {image_saying_all}\n"
        "    framework: none\n"
        "    description: ENV NVIDIA_VISIBLE_DEVICES=all\n"
    )
    d = ds01d(resource_limits=LIMITS, images=images)
    scene = Scene(d, docker_client, unix_users["alice"], unix_users["bob"])
    for name, gpus in (("none", "0"), ("one", "1")):
        result = d.cli("alice", "container-create", name, "--image", "nvidia-all", "--gpus", gpus)
        assert result.returncode == 0, describe(result)
        attrs = assert_hers_and_unprivileged(scene, f"{name}._.{scene.alice.pw_uid}")
        env = environment(attrs)
        assert env["NVIDIA_VISIBLE_DEVICES"] != "all" and env["CUDA_VISIBLE_DEVICES"] != "all"
    none = docker_client.api.inspect_container(f"none._.{scene.alice.pw_uid}")
    assert environment(none)["NVIDIA_VISIBLE_DEVICES"] == "void"


# --- sizes Docker reads as "no limit" -----------------------------------------------------------


@pytest.mark.parametrize(
    "via, request_",
    [
        pytest.param("cli", ("--memory", "0"), id="memory-0-via-cli"),
        pytest.param("cli", ("--memory", "0.5"), id="memory-half-a-byte-via-cli"),
        pytest.param("cli", ("--cpus", "0.0000000001"), id="cpus-1e-10-via-cli"),
        pytest.param("api", {"memory": "0"}, id="memory-0-via-api"),
        pytest.param("api", {"cpus": 1e-12}, id="cpus-1e-12-via-api"),
    ],
)
def test_a_size_docker_reads_as_unlimited_cannot_escape_the_quota(
    scene: Scene, docker_client: Any, via: str, request_: Any
) -> None:
    name = f"bypass._.{scene.alice.pw_uid}"
    seen = len(scene.d.events())
    if via == "cli":
        result = scene.d.cli("alice", *create_args(*request_))
        exit_code, shown = result.returncode, describe(result)
    else:
        with RawApi(scene.d.paths.socket, "alice") as api:
            reply = api.call("POST", "/v1/containers", create_body(**request_))
        exit_code = 0 if reply.status == 200 else reply.error_body.get("exit_code", -1)
        shown = str(reply)

    if exit_code != 0:
        assert exit_code in (2, 3), shown
        assert not docker_client.containers.list(all=True, filters={"name": name})
        new = scene.d.events()[seen:]
        if not [e for e in new if e["user"] == "alice" and e["outcome"] == "denied"]:
            raise NotLogged(f"refused but not logged: {new}\n{shown}")
        return
    attrs = docker_client.api.inspect_container(name)
    problems = container_problems(
        attrs,
        scene.alice,
        user_slice(docker_client, "phd", "alice"),
        memory_limit=MEMORY_LIMIT_BYTES,
        nano_cpus_limit=CPU_LIMIT_NANO,
    )
    if problems:
        raise QuotaEscaped(f"{problems}\n{shown}")


# --- a symlink swapped in after the ownership check ---------------------------------------------


def test_a_workspace_swapped_for_a_symlink_after_create_is_not_mounted_at_start(
    scene: Scene, docker_client: Any
) -> None:
    alice = scene.alice
    workspace = Path(alice.pw_dir) / "bypass-swap"
    moved = Path(alice.pw_dir) / "bypass-swap.old"
    for path in (workspace, moved):
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
    workspace.mkdir()
    os.chown(workspace, alice.pw_uid, alice.pw_gid)
    try:
        created = scene.d.cli("alice", *create_args("--workspace", str(workspace)))
        assert created.returncode == 0, describe(created)
        # What alice can do in her own home at any time: swap the directory for a symlink.
        workspace.rename(moved)
        workspace.symlink_to("/var/run")
        os.lchown(workspace, alice.pw_uid, alice.pw_gid)
        seen = len(scene.d.events())

        started = scene.d.cli("alice", "container-start", "bypass")

        name = f"bypass._.{alice.pw_uid}"
        if started.returncode != 0:
            assert started.returncode == 5, describe(started)
            assert docker_client.api.inspect_container(name)["State"]["Status"] != "running"
            new = scene.d.events()[seen:]
            if not [e for e in new if e["user"] == "alice" and e["outcome"] == "denied"]:
                raise NotLogged(f"refused but not logged: {new}")
            return
        container = docker_client.containers.get(name)
        listing = container.exec_run(["ls", "-a", "/workspace"]).output.decode()
        if "docker.sock" in listing:
            raise MountEscaped(f"/workspace of the started container is /var/run:\n{listing}")
    finally:
        if workspace.is_symlink():
            workspace.unlink()
        shutil.rmtree(moved, ignore_errors=True)
        shutil.rmtree(workspace, ignore_errors=True)
