"""End to end: bypass attempts through the Docker API door, by a real non-admin user.

ds01's Docker socket speaks the Docker Engine API to users' own tools, so everything a
Docker client can ask is one raw request away. Each row below is one request by alice
(``phd``, not an admin) on the door, sent byte for byte from a process running as alice
(``rawapi.RawApi``), with bob's running container and an exec in it as targets. For every
row the test checks:

- the HTTP status and Docker's error body (``{"message": …}``: what ``docker`` prints),
  with the words that say why;
- the refusal is logged: a ``denied`` event of alice's in ``events.jsonl``;

and, after all rows, that nothing changed in Docker, whoever owns it or labels it (a
request smuggled to dockerd as root would make an unlabelled container): the same
containers with the same ids, names, labels, state and start times (bob's included), the
same networks and volumes with their labels, the same images with the same tags. Rows: every
hardening refusal of a create, a spoofed owner label, a non-allowed image (by tag, digest,
id and id prefix), empty, malformed, oversized and chunked bodies (CVE-2024-41110's shape: a
create without a body), bob's container by Docker name, id and id prefix for every verb the
door serves (copies in and out, export and diff included), bob's exec, copies into her own
container of what dockerd would write as root (a device node, hard links to files the copy
did not write, not a tar, a malformed chunk), endpoints not on the allowlist, an API version
too old. Commits, tags and removals outside her own images and namespace; builds FROM images
outside the allowlist (by tag and by digest), with BuildKit, on the host's network, with a
device node in their context; bob's volume (by her name for it and by its Docker name),
volumes bound to host paths or with other drivers, networks that are not hers as ds01 makes
it, bob's network by name and id (her own to her), bob's container on a network or its
namespace. Filters that name bob's uid show alice nothing; a create refused after it made a
named volume leaves none. Last, a copy that tries to plant root's set-uid binary (with a
file capability) and a set-gid directory in her own directory lands as her plain file and
directory; and a volume over her cap of 32 is refused. A separate test starts execs and an
attach that dockerd answers without handing over the connection (not `101`), each followed
in the same write by a privileged create: she gets one answer, and nothing is created.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flooder import attack
from rawapi import RawApi, http_request

from ds01.daemon.connections import DEFAULT_LIMITS
from ds01.daemon.networks import network_name
from support import TEST_IMAGE, TEST_IMAGES_YAML, wait_until
from tar_shapes import Members, gzip_smuggled, size_smuggled

LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 256M
"""
#: Denied events to wait for per row: the audit log's throttle is set to (almost) no
#: window, so that every refusal is written.
AUDIT_WINDOW = ("--audit-refusal-window", "0.001")
#: A test image outside the allowlist with an id of its own (``make images`` builds it).
UNLISTED_BY_ID = "ds01-test/python:latest"
V = "/v1.41"


@dataclass(frozen=True)
class Row:
    what: str
    raw: Callable[[dict[str, str]], bytes]  # the request, from the targets' ids and names
    status: int
    words: str  # in the error body's message


def fill(body: bytes | None, targets: dict[str, str]) -> bytes | None:
    """``body`` with ``{target}`` names replaced by the targets' ids and names."""
    for key, value in targets.items():
        body = body.replace(b"{%s}" % key.encode(), value.encode()) if body else body
    return body


def create(host: dict[str, Any] | None = None, **config: Any) -> Callable[[dict[str, str]], bytes]:
    body = {"Image": TEST_IMAGE, "Cmd": ["true"], "HostConfig": host or {}, **config}
    data = json.dumps(body).encode()
    return lambda t: http_request("POST", f"{V}/containers/create?name=x", fill(data, t))


def raw(method: str, path: str, body: bytes | None = None, **kw: Any) -> Callable[..., bytes]:
    return lambda t: http_request(method, V + path.format(**t), fill(body, t), **kw)


#: A copy into alice's own directory, mounted at /workspace of her container.
COPY_INTO_WORKSPACE = "/containers/{mine}/archive?path=/workspace"


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: Any) -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


HARDENING: list[Row] = [
    Row("privileged", create({"Privileged": True}), 403, "privileged"),
    Row("cap-add", create({"CapAdd": ["SYS_ADMIN"]}), 403, "capabilities"),
    Row("pid host", create({"PidMode": "host"}), 403, "PidMode"),
    Row("network host", create({"NetworkMode": "host"}), 403, "NetworkMode"),
    Row("ipc host", create({"IpcMode": "host"}), 403, "IpcMode"),
    Row("uts host", create({"UTSMode": "host"}), 403, "UTSMode"),
    Row("userns host", create({"UsernsMode": "host"}), 403, "UsernsMode"),
    Row("devices", create({"Devices": [{"PathOnHost": "/dev/mem",
        "PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}]}), 403, "Devices"),
    Row("security-opt", create({"SecurityOpt": ["apparmor=unconfined"]}), 403, "SecurityOpt"),
    Row("unmasked paths", create({"MaskedPaths": []}), 403, "MaskedPaths"),
    Row("sysctls", create({"Sysctls": {"kernel.shmmax": "1"}}), 403, "Sysctls"),
    Row("volume driver", create({"VolumeDriver": "local"}), 403, "VolumeDriver"),
    Row("cgroup parent", create({"CgroupParent": "/"}), 403, "CgroupParent"),
    Row("bind not owned", create({"Binds": ["/etc:/workspace"]}), 403, "not a directory you own"),
    Row("bind docker socket", create({"Binds": ["/var/run/docker.sock:/workspace"]}), 400,
        "not a directory"),
    Row("bind elsewhere", create({"Binds": ["/root:/root"]}), 403, "/workspace and /data"),
    Row("ports on all addresses", create({"PortBindings": {"80/tcp": [{"HostIp": "0.0.0.0",
        "HostPort": "8080"}]}}), 403, "127.0.0.1"),
    Row("gpus all", create({"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}),
        403, "--gpus all"),
    Row("owner label", create(Labels={"ds01.uid": "0"}), 403, "ds01's own"),
    Row("user root", create(User="root"), 403, "run as you"),
    Row("visible devices", create(Env=["NVIDIA_VISIBLE_DEVICES=all"]), 403, "ds01 sets"),
    Row("image not allowed", lambda t: http_request("POST", f"{V}/containers/create",
        json.dumps({"Image": "ds01-test/unlisted:latest"}).encode()), 403, "not in the image"),
    # An image outside the allowlist (ds01-test/python) by digest, by id and by id prefix.
    Row("image not allowed, by digest", create(Image="ds01-test/python@sha256:" + "0" * 64),
        403, "not in the image"),
    Row("image not allowed, by id", create(Image="{unlisted_id}"), 403, "not in the image"),
    Row("image not allowed, by id prefix", create(Image="{unlisted_prefix}"), 403,
        "There is no image"),
]  # fmt: skip

BODIES: list[Row] = [
    Row("create without body", raw("POST", "/containers/create"), 400, "JSON object"),
    Row("create with null", raw("POST", "/containers/create", b"null"), 400, "JSON object"),
    Row("create with {}", raw("POST", "/containers/create", b"{}"), 400, "JSON object"),
    Row("malformed JSON", raw("POST", "/containers/create", b'{"Image":'), 400, "not JSON"),
    # Deeper than Python's JSON parser goes: once it ended the thread that reads every
    # user's requests (the rows after it would then get no answer).
    Row("JSON nested 50,000 deep", raw("POST", "/containers/create", b"[" * 50000), 400,
        "not JSON"),
    Row("filters nested 5,000 deep", raw("GET", "/containers/json?filters=" + "%5B" * 5000),
        400, "filters"),
    Row("oversized body", raw("POST", "/containers/create", b"{" + b" " * 70000 + b"}"), 413,
        "too large"),
    Row("chunked body", lambda t: http_request("POST", f"{V}/containers/create",
        b'5\r\n{"a":\r\n0\r\n\r\n', content_length=False,
        headers={"Transfer-Encoding": "chunked"}), 411, "chunked"),
    Row("exec as root", raw("POST", "/containers/{mine}/exec",
        json.dumps({"Cmd": ["id"], "User": "0"}).encode()), 403, "as the container's owner"),
    Row("exec as root, lower-case key (dockerd reads it as User)", raw("POST",
        "/containers/{mine}/exec", json.dumps({"Cmd": ["id"], "user": "0"}).encode()), 403,
        "does not allow user"),
    Row("privileged exec", raw("POST", "/containers/{mine}/exec",
        json.dumps({"Cmd": ["id"], "Privileged": True}).encode()), 403, "Privileged"),
]  # fmt: skip

#: Every verb the door serves, on bob's container.
VERBS = [
    ("GET", "/containers/{ref}/json"),
    ("GET", "/containers/{ref}/logs?stdout=1"),
    ("GET", "/containers/{ref}/top"),
    ("GET", "/containers/{ref}/stats?stream=0"),
    ("POST", "/containers/{ref}/start"),
    ("POST", "/containers/{ref}/stop"),
    ("POST", "/containers/{ref}/restart"),
    ("POST", "/containers/{ref}/kill"),
    ("POST", "/containers/{ref}/wait"),
    ("POST", "/containers/{ref}/resize?h=10&w=10"),
    ("POST", "/containers/{ref}/attach?stream=1&stdout=1"),
    ("DELETE", "/containers/{ref}?force=1"),
    ("GET", "/containers/{ref}/archive?path=/etc"),
    ("HEAD", "/containers/{ref}/archive?path=/etc"),
    ("PUT", "/containers/{ref}/archive?path=/tmp"),
    ("GET", "/containers/{ref}/export"),
    ("GET", "/containers/{ref}/changes"),
    ("POST", "/containers/{ref}/pause"),
    ("POST", "/containers/{ref}/unpause"),
    ("POST", "/containers/{ref}/update"),
    ("POST", "/containers/{ref}/rename?name=renamed"),
]


def others_rows() -> list[Row]:
    rows = []
    for key in ("bob_name", "bob_id", "bob_prefix"):
        for method, path in VERBS:
            rows.append(
                Row(
                    f"bob's container by {key}: {method} {path}",
                    lambda t, m=method, p=path, k=key: http_request(
                        m, V + p.replace("{ref}", t[k]), b"" if m in ("POST", "PUT") else None
                    ),
                    404,
                    "No such container: ",
                )
            )
        rows.append(
            Row(
                f"exec in bob's container by {key}",
                lambda t, k=key: http_request(
                    "POST", f"{V}/containers/{t[k]}/exec", json.dumps({"Cmd": ["id"]}).encode()
                ),
                404,
                "No such container: ",
            )
        )
    return rows


ELSEWHERE: list[Row] = [
    Row("bob's exec: start", raw("POST", "/exec/{bob_exec}/start", b'{"Detach":true}'), 404,
        "No such exec instance"),
    Row("bob's exec: inspect", raw("GET", "/exec/{bob_exec}/json"), 404, "No such exec"),
    Row("image outside the allowlist", raw("GET", "/images/ds01-test/unlisted:latest/json"),
        404, "No such image"),
    Row("swarm", raw("POST", "/swarm/init", b"{}"), 403, "POST /swarm/init"),
    Row("copy of a device node into her directory", raw("PUT", COPY_INTO_WORKSPACE,
        tar_of(member("sda", tarfile.CHRTYPE, devmajor=8, mode=0o666))), 403, "device node"),
    Row("copy of a hard link to the image's /etc/shadow", raw("PUT", "/containers/{mine}/"
        "archive?path=/tmp", tar_of(member("shadow", tarfile.LNKTYPE, linkname="etc/shadow"))),
        403, "hard link"),
    Row("copy of a hard link after a file it replaced", raw("PUT", COPY_INTO_WORKSPACE, tar_of(
        member("d/su", data=b"x"), member("d", tarfile.SYMTYPE, linkname="/bin"),
        member("su", tarfile.LNKTYPE, linkname="d/su"))), 403, "hard link"),
    Row("copy that is not a tar", raw("PUT", COPY_INTO_WORKSPACE, b"x" * 2048), 400,
        "not a tar"),
    Row("copy with a malformed chunk", lambda t: http_request("PUT", V + COPY_INTO_WORKSPACE
        .format(**t), b"zz\r\n", content_length=False, headers={"Transfer-Encoding":
        "chunked"}), 400, "hexadecimal"),
    Row("update over what it was made with", raw("POST", "/containers/{mine}/update",
        b'{"Memory": 1073741824}'), 403, "does not raise"),
    Row("update of the restart policy", raw("POST", "/containers/{mine}/update",
        b'{"RestartPolicy": {"Name": "always"}}'), 403, "RestartPolicy"),
    Row("update of the pids limit", raw("POST", "/containers/{mine}/update",
        b'{"PidsLimit": -1}'), 403, "PidsLimit"),
    Row("update, lower-case key (dockerd reads it as Memory)", raw("POST",
        "/containers/{mine}/update", b'{"memory": 1073741824}'), 403, "memory"),
    Row("update giving swap", raw("POST", "/containers/{mine}/update",
        b'{"Memory": 67108864, "MemorySwap": 1073741824}'), 403, "no swap"),
    Row("rename into root's names", raw("POST", "/containers/{mine}/rename?name=x._.0", b""),
        400, "Invalid container name"),
    Row("rename to a path", raw("POST", "/containers/{mine}/rename?name=a%2Fb", b""), 400,
        "Invalid container name"),
    Row("rename onto a name of hers", raw("POST", "/containers/{mine}/rename?name=mine2",
        b""), 409, "already in use"),
    Row("commit of bob's container", raw("POST", "/commit?container={bob_id}&repo=alice/x",
        b"null"), 404, "No such container"),
    Row("commit into bob's namespace", raw("POST", "/commit?container={mine}&repo=bob/x",
        b"null"), 403, "alice/NAME"),
    Row("commit with a change", raw("POST", "/commit?container={mine}&repo=alice/x&changes="
        "LABEL%20ds01.image.owner%3Dbob", b"null"), 403, "--change"),
    Row("commit with a config", raw("POST", "/commit?container={mine}&repo=alice/x",
        b'{"User": "0", "Labels": {"ds01.image.owner": "bob"}}'), 403, "--change"),
    Row("tag of an image not hers", raw("POST", "/images/ds01-test/busybox:latest/tag?"
        "repo=alice/x&tag=1", b""), 404, "No such image"),
    Row("tag over a registry image", raw("POST", "/images/ds01-test/busybox:latest/tag?"
        "repo=ds01-test/busybox&tag=evil", b""), 403, "alice/NAME"),
    Row("rmi of a registry image", raw("DELETE", "/images/ds01-test/busybox:latest"), 403,
        "not one of your images"),
    Row("rmi of an image outside the allowlist", raw("DELETE",
        "/images/ds01-test/unlisted:latest?force=1"), 404, "No such image"),
    Row("buildkit session", raw("POST", "/session", b""), 403, "DOCKER_BUILDKIT=0"),
    Row("buildkit build", raw("POST", "/build?t=alice/x&version=2", b""), 403,
        "DOCKER_BUILDKIT=0"),
    Row("build FROM an image outside the allowlist", raw("POST", "/build?t=alice/x", tar_of(
        member("Dockerfile", data=b"FROM ds01-test/unlisted:latest\n"))), 403,
        "may build from"),
    Row("build FROM by digest", raw("POST", "/build?t=alice/x", tar_of(member("Dockerfile",
        data=b"FROM ds01-test/busybox@sha256:" + b"0" * 64 + b"\n"))), 403, "may build from"),
    Row("build context with a device node", raw("POST", "/build?t=alice/x", tar_of(
        member("Dockerfile", data=b"FROM busybox\n"), member("sda", tarfile.CHRTYPE))), 403,
        "device node"),
    Row("build into bob's namespace", raw("POST", "/build?t=bob/x", b""), 403, "alice/NAME"),
    Row("build on the host's network", raw("POST", "/build?t=alice/x&networkmode=host", b""),
        403, "networkmode"),
    Row("pull outside the image policy", raw("POST", "/images/create?fromImage=alpine&tag=3",
        b""), 403, "not in the image registry"),
    Row("import", raw("POST", "/images/create?fromSrc=-&repo=alice/x", b""), 403,
        "does not import images"),
    Row("import of a chunked tar (as docker import - sends it)", lambda t: http_request(
        "POST", f"{V}/images/create?fromSrc=-&repo=alice/x", chunked(tar_of(member("bin/sh",
        data=b"x"))), content_length=False, headers={"Transfer-Encoding": "chunked"}), 403,
        "does not import images"),
    Row("push", raw("POST", "/images/alice/x:1/push", b""), 403, "does not push images"),
    Row("system df", raw("GET", "/system/df"), 403, "GET /system/df"),
    Row("save where images.yaml does not allow it", raw("GET",
        "/images/get?names=ds01-test%2Fbusybox%3Alatest"), 403, "does not allow docker save"),
    Row("load where images.yaml does not allow it", raw("POST", "/images/load?quiet=1", tar_of(
        member("manifest.json", data=b'[{"RepoTags": ["ds01-test/busybox:latest"]}]'))), 403,
        "does not allow docker load"),
    Row("volume bound to a host path", raw("POST", "/volumes/create", json.dumps({"Name": "v",
        "DriverOpts": {"type": "none", "o": "bind", "device": "/etc"}}).encode()), 403,
        "DriverOpts"),
    Row("volume driver", raw("POST", "/volumes/create", b'{"Name": "v", "Driver": "nfs"}'),
        403, "drivers"),
    Row("volume with an owner label", raw("POST", "/volumes/create", json.dumps({"Name": "v",
        "Labels": {"ds01.uid": "0"}}).encode()), 403, "ds01's own"),
    Row("bob's volume: inspect", raw("GET", "/volumes/bobvol"), 404, "no such volume"),
    Row("bob's volume: remove", raw("DELETE", "/volumes/bobvol?force=1"), 404,
        "no such volume"),
    Row("a create that makes a volume, refused over her memory limit", create({"Binds": [
        "leftover:/x"], "Memory": 1073741824}), 409, "above your limit"),
    Row("bob's volume by its Docker name", create({"Binds": ["{bob_volume}:/x"]}), 403,
        "not a volume name"),
    Row("network with options", raw("POST", "/networks/create", json.dumps({"Name": "n",
        "Options": {"com.docker.network.bridge.name": "docker0"}}).encode()), 403, "Options"),
    Row("network driver", raw("POST", "/networks/create", b'{"Name": "n", "Driver": "host"}'),
        403, "bridge"),
    Row("network addresses", raw("POST", "/networks/create", json.dumps({"Name": "n", "IPAM": {
        "Config": [{"Subnet": "10.0.0.0/8"}]}}).encode()), 403, "IPAM"),
    Row("bob's container onto a network", raw("POST", "/networks/n/connect", json.dumps(
        {"Container": "{bob_id}"}).encode()), 404, "No such container"),
    Row("bob's network namespace", create({"NetworkMode": "container:{bob_id}"}), 403,
        "NetworkMode"),
    Row("plugins", raw("GET", "/plugins"), 403, "GET /plugins"),
    Row("secrets", raw("GET", "/secrets"), 403, "GET /secrets"),
    # docker system prune: everyone's stopped containers, unused volumes and images.
    Row("container prune", raw("POST", "/containers/prune", b""), 403,
        "POST /containers/prune"),
    Row("volume prune", raw("POST", "/volumes/prune", b""), 403, "POST /volumes/prune"),
    Row("image prune", raw("POST", "/images/prune", b""), 403, "POST /images/prune"),
    Row("too old an API", lambda t: http_request("GET", "/v1.12/version"), 400, "too old"),
]  # fmt: skip


def chunked(data: bytes, size: int = 700) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def plant(api: RawApi, workspace: Path) -> None:
    """alice copies root's set-uid, set-gid binary with a file capability and a set-gid
    directory into her own directory (as ``docker cp`` does: chunked): they land as her
    plain file and directory."""
    binary = member("planted", data=b"#!/bin/sh\nid\n", mode=0o6755, uid=0, gid=0)
    binary[0].pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    body = chunked(tar_of(member("planted.d", tarfile.DIRTYPE, mode=0o2777, uid=0), binary))
    reply = api.send(http_request("PUT", f"{V}/containers/mine/archive?path=/workspace", body,
        content_length=False, headers={"Transfer-Encoding": "chunked"}))  # fmt: skip
    assert reply.status == 200, reply
    owner = pwd.getpwnam("alice")
    for name, mode in (("planted", 0o755), ("planted.d", 0o777)):
        landed = (workspace / name).stat()
        assert (landed.st_uid, landed.st_gid) == (owner.pw_uid, owner.pw_gid), name
        assert landed.st_mode & 0o7777 == mode, (name, oct(landed.st_mode))
    assert "security.capability" not in os.listxattr(workspace / "planted")


def over_volume_cap(api: RawApi, docker_client: Any, d: Any) -> None:
    """alice has the most named volumes one user may: one more is refused and logged."""
    uid = str(pwd.getpwnam("alice").pw_uid)
    labels = {"ds01.managed": "true", "ds01.uid": uid, "ds01.user": "alice"}
    made = [docker_client.volumes.create(f"cap{i}._.{uid}", labels=labels) for i in range(32)]
    try:
        denied = len(d.events_where(user="alice", outcome="denied"))
        reply = api.call("POST", f"{V}/volumes/create", {"Name": "one-more"})
        assert reply.status == 409 and "the most one user may" in reply.json()["message"], reply
        assert len(d.events_where(user="alice", outcome="denied")) > denied
        assert f"one-more._.{uid}" not in {v.name for v in docker_client.volumes.list()}
    finally:
        for volume in made:
            volume.remove()


#: Idle connections bob holds open on the door while alice is served: far over his cap.
IDLE_FLOOD = 500


def idle_flood(api: RawApi, d: Any) -> None:
    """bob holds ``IDLE_FLOOD`` idle connections open on the door: past his per-user cap
    they are refused at once (429 in Docker's error shape, audited), and alice's request is
    served meanwhile."""
    cap = DEFAULT_LIMITS.per_uid_connections
    with attack(d, "idle", IDLE_FLOOD, socket_path=d.docker_socket) as bob:
        assert not bob.ready["errors"], bob.ready
        answers = bob.ready["answers"]
        # In Docker's error shape, which the docker CLI prints.
        assert answers.get("429:docker:closed") == IDLE_FLOOD - cap, answers
        assert answers.get("None:None:open") == cap, answers
        listed = api.call("GET", f"{V}/containers/json")
        assert listed.status == 200, listed
        alice_uid = pwd.getpwnam("alice").pw_uid
        assert [c["Names"] for c in listed.json()] == [[f"/mine._.{alice_uid}"]], listed
        bob.release()
    throttled = wait_until(
        "bob's refused connections audited",
        lambda: d.events_where(action="api.throttled", user="bob", resource="docker/connection"),
    )
    assert throttled[0]["outcome"] == "denied", throttled


def snapshot(docker_client: Any) -> dict[str, Any]:
    """Everything in Docker a request smuggled past the door could make or change, whoever
    it labels or none: every container (id, name, state, start time, labels), network and
    volume (name, labels), and every image's id with its tags."""
    return {
        "containers": {
            c.id: (c.name, c.status, c.attrs["State"]["StartedAt"], c.labels)
            for c in docker_client.containers.list(all=True)
        },
        "networks": {n.id: (n.name, n.attrs["Labels"]) for n in docker_client.networks.list()},
        "volumes": {v.name: v.attrs["Labels"] for v in docker_client.volumes.list()},
        "images": {i.id: sorted(i.tags) for i in docker_client.images.list(all=True)},
    }


def test_bypass_attempts_on_the_docker_socket_are_refused_logged_and_change_nothing(
    ds01d: Any, docker_client: Any, test_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML, extra_args=AUDIT_WINDOW)
    d.cli_json("alice", "container-create", "mine", "--image", "busybox", "--start")
    d.cli_json("alice", "container-create", "mine2", "--image", "busybox")  # a name taken
    d.cli_json("bob", "container-create", "theirs", "--image", "busybox", "--start")
    bob_uid = pwd.getpwnam("bob").pw_uid
    bob = docker_client.containers.get(f"theirs._.{bob_uid}")
    targets = {
        "mine": "mine",
        "bob_name": bob.name,
        "bob_id": bob.id,
        "bob_prefix": bob.id[:6],
        "bob_exec": docker_client.api.exec_create(bob.id, ["true"])["Id"],
        "bob_volume": f"bobvol._.{bob_uid}",
        "unlisted_id": docker_client.images.get(UNLISTED_BY_ID).id,
        "unlisted_prefix": docker_client.images.get(UNLISTED_BY_ID).id[7:19],
    }
    bob_volume = docker_client.volumes.create(targets["bob_volume"], labels={
        "ds01.managed": "true", "ds01.uid": str(bob_uid), "ds01.user": "bob"})  # fmt: skip
    tags = sorted(docker_client.images.get(test_image).tags)
    docker_client.images.get(test_image).tag("ds01-test/unlisted", "latest")
    before = snapshot(docker_client)
    workspace = Path(pwd.getpwnam("alice").pw_dir) / "workspace"
    failures = []
    try:
        with RawApi(d.docker_socket, "alice") as api:
            for row in HARDENING + BODIES + others_rows() + ELSEWHERE:
                denied = len(d.events_where(user="alice", outcome="denied"))
                reply = api.send(row.raw(targets))
                try:
                    message = json.loads(reply.body).get("message", "")
                except ValueError:
                    message = ""
                if reply.status != row.status or row.words not in message:
                    failures.append(f"{row.what}: {reply}")
                elif len(d.events_where(user="alice", outcome="denied")) <= denied:
                    failures.append(f"{row.what}: refused but not logged")
            # Filters that name bob's uid select nothing: Docker ANDs them with alice's.
            spoofed = json.dumps({"label": [f"ds01.uid={bob_uid}"]})
            listed = api.call("GET", f"{V}/containers/json?all=1&filters={quote(spoofed)}")
            assert listed.status == 200 and listed.json() == [], listed
            # No volume of hers either: the refused create that made one removed it.
            volumes = api.call("GET", f"{V}/volumes")
            assert volumes.status == 200 and volumes.json()["Volumes"] == [], volumes
            assert not failures, "\n\n".join(failures)
            # bob's network, by its Docker name and its id, is her own network to her.
            theirs = docker_client.networks.get(network_name(bob_uid))
            for ref in (theirs.name, theirs.id):
                shown = api.call("GET", f"{V}/networks/{ref}")
                assert shown.status == 200 and shown.json()["Id"] != theirs.id, shown
            assert sorted(p.name for p in workspace.iterdir()) == []  # no refused copy landed
            plant(api, workspace)
            over_volume_cap(api, docker_client, d)
            idle_flood(api, d)
        # Before the test's own bob volume and unlisted tag go: they are in ``before``.
        after = snapshot(docker_client)
    finally:
        docker_client.images.remove("ds01-test/unlisted:latest")
        bob_volume.reload()  # still there
        bob_volume.remove()
        for path in workspace.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert after == before
    assert sorted(docker_client.images.get(test_image).tags) == tags  # none tagged, removed


def test_a_hijack_dockerd_does_not_grant_carries_nothing_more_to_dockerd(
    ds01d: Any, docker_client: Any
) -> None:
    """An exec start or an attach asks dockerd for the connection (``Connection: Upgrade``).
    When dockerd answers anything but ``101`` (an exec started detached, a malformed body,
    a paused container) it keeps reading requests on that connection, which the door opened
    as root: what alice sends after her request must never reach it. Each attempt is
    followed, in the same write, by a request the door refuses (a privileged create); she
    gets exactly one answer, and nothing is created."""
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "mine", "--image", "busybox", "--start")
    d.cli_json("alice", "container-create", "frozen", "--image", "busybox", "--start")
    alice_uid = pwd.getpwnam("alice").pw_uid
    docker_client.containers.get(f"frozen._.{alice_uid}").pause()
    upgrade = {"Connection": "Upgrade", "Upgrade": "tcp"}
    privileged = {"Image": TEST_IMAGE, "Cmd": ["true"], "HostConfig": {"Privileged": True}}
    smuggled = http_request(
        "POST", f"{V}/containers/create?name=smuggled", json.dumps(privileged).encode(), close=False
    )
    with RawApi(d.docker_socket, "alice") as api:

        def exec_start(body: bytes) -> bytes:
            made = api.call("POST", f"{V}/containers/mine/exec", {"Cmd": ["true"]})
            assert made.status == 201, made
            start = f"{V}/exec/{made.json()['Id']}/start"
            return http_request("POST", start, body, headers=upgrade, close=False)

        attempts = {
            "an exec started detached": (exec_start(b'{"Detach": true}'), 200),
            "an exec start with a malformed body": (exec_start(b"{"), 400),
            "an attach to a paused container": (
                http_request(
                    "POST", f"{V}/containers/frozen/attach?stream=1&stdout=1", b"",
                    headers=upgrade, close=False,
                ),
                409,
            ),
        }  # fmt: skip
        for what, (first, status) in attempts.items():
            reply = api.send(first + smuggled, until_close=True)
            assert reply.status == status and reply.error is None, f"{what}: {reply}"
            assert b"HTTP/1." not in reply.body, f"{what}: a second answer came: {reply}"
    assert docker_client.containers.list(all=True, filters={"name": "smuggled"}) == []


def smuggling_members(saved: bytes) -> tuple[Members, Members]:
    """The members of a real ``docker save`` of ``alice/loaded:1`` (what the door checks),
    and the members to hide behind them: the same image's config with bob's owner label
    (``ds01.image.owner=bob``) and a manifest tagging it ``someone-else/x:1``."""
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        seen = [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]
    files = {info.name: data for info, data in seen}
    [image] = json.loads(files["manifest.json"])
    config = json.loads(files[image["Config"]])
    config["config"]["Labels"] = {**(config["config"].get("Labels") or {}),
                                  "ds01.image.owner": "bob"}  # fmt: skip
    manifest = [{**image, "Config": "evil.json", "RepoTags": ["someone-else/x:1"]}]
    hidden = []
    for name, data in (("evil.json", json.dumps(config)), ("manifest.json", json.dumps(manifest))):
        info = tarfile.TarInfo(name)
        info.size = len(data.encode())
        hidden.append((info, data.encode()))
    return seen, hidden


def test_a_load_that_two_tar_readers_read_apart_brings_in_only_what_the_door_read(
    ds01d: Any, docker_client: Any, test_image: str
) -> None:
    """``docker load`` through the door, as alice, of a real saved image of hers with a
    tail that Python's tarfile (the door's checks) does not see and Go's (dockerd's) does:
    behind a size field that the two read apart, or in a second gzip stream. The tail tags
    the image ``someone-else/x:1`` and labels it bob's. Each load is refused, audited; and
    afterwards no image has a tag outside alice's namespace or bob's owner label."""
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML + "docker_load: true\n")
    mine = "alice/loaded:1"
    docker_client.images.get(test_image).tag(mine)
    try:
        saved = b"".join(docker_client.images.get(mine).save(named=mine))
    finally:
        docker_client.images.remove(mine)
    seen, hidden = smuggling_members(saved)

    def tags() -> set[str]:
        return {tag for image in docker_client.images.list() for tag in image.tags}

    def claimed() -> set[str]:
        labelled = docker_client.images.list(filters={"label": "ds01.image.owner"})
        return {i.id for i in labelled if i.labels.get("ds01.image.owner") != "alice"}

    tags_before, claimed_before = tags(), claimed()
    shapes = {
        "a size field read two ways": size_smuggled(seen, hidden),
        "a second gzip stream": gzip_smuggled(seen, hidden),
    }
    failures = []
    try:
        with RawApi(d.docker_socket, "alice") as api:
            for what, body in shapes.items():
                denied = len(d.events_where(user="alice", outcome="denied"))
                reply = api.send(http_request("POST", f"{V}/images/load?quiet=1", body))
                outside = sorted(t for t in tags() - tags_before if not t.startswith("alice/"))
                owned = claimed() - claimed_before
                if outside or owned:
                    failures.append(f"{what}: tagged {outside}, bob's label on {owned}: {reply}")
                elif reply.status not in (400, 403) or "ds01 loads" not in reply.body.decode():
                    failures.append(f"{what}: not refused: {reply}")
                elif len(d.events_where(user="alice", outcome="denied")) <= denied:
                    failures.append(f"{what}: refused but not logged")
    finally:
        for ref in ("someone-else/x:1", mine):
            with contextlib.suppress(Exception):
                docker_client.images.remove(ref, force=True)
    assert not failures, "\n\n".join(failures)
