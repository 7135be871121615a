"""The Docker API door's pure decisions (``ds01.core.docker_api``): request heads, the
allowlist, the owner's filters, images, and which requests wait."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01 import paths
from ds01.core import docker_api as d
from ds01.core import starter
from ds01.model.untrusted import json_value


def head(line: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode() + body


def test_a_versioned_path_is_read_without_its_prefix() -> None:
    request = d.parse_request(head("GET /v1.41/containers/json?all=1&size=0 HTTP/1.1"))
    assert (request.method, request.path, request.version) == ("GET", "/containers/json", "1.41")
    assert request.flag("all") and not request.flag("size")
    assert d.with_query(request) == "/v1.41/containers/json?all=1&size=0"


def test_a_forwarded_path_is_the_one_the_door_read() -> None:
    # dockerd decodes the path again: a %2F the door read as a character stays one.
    request = d.parse_request(head("GET /v1.41/containers%2Fjson?all=1 HTTP/1.1"))
    assert request.path == "/containers/json"  # decoded once, as the door routes it
    assert d.with_query(request) == "/v1.41/containers/json?all=1"
    odd = d.parse_request(head("GET /v1.41/images/a%253Fb%2520c/json HTTP/1.1"))
    assert odd.path == "/images/a%3Fb%20c/json"
    assert d.with_query(odd) == "/v1.41/images/a%253Fb%2520c/json"
    assert d.quoted("/images/localhost:5000/x@sha256:ab/json") == (
        "/images/localhost:5000/x@sha256:ab/json"
    )


def test_an_unversioned_path_stays_unversioned() -> None:
    request = d.parse_request(head("HEAD /_ping HTTP/1.1", "Host: docker"))
    assert (request.path, request.version) == ("/_ping", None)
    assert isinstance(d.route(request.method, request.path), d.Routed)


@pytest.mark.parametrize(
    "data", [b"", b"\r\n\r\n", b"GET /x\r\n\r\n", b"GET /x HTTP/2\r\n\r\n", b"GET\r\n\r\n"]
)
def test_malformed_request_lines_are_refused(data: bytes) -> None:
    with pytest.raises(d.BadRequest):
        d.parse_request(data)


def test_a_chunked_body_and_an_upgrade_are_seen() -> None:
    request = d.parse_request(
        head("POST /exec/x/start HTTP/1.1", "Transfer-Encoding: chunked", "Connection: Upgrade")
    )
    assert request.chunked and request.wants_upgrade


@pytest.mark.parametrize(
    ("method", "path", "kind", "ref"),
    [
        ("GET", "/_ping", "engine", None),
        ("GET", "/version", "engine", None),
        ("GET", "/containers/json", "list", None),
        ("GET", "/containers/thesis/json", "container", "thesis"),
        ("GET", "/containers/abc123/logs", "container", "abc123"),
        ("GET", "/containers/abc123/top", "container", "abc123"),
        ("GET", "/containers/abc123/stats", "container", "abc123"),
        ("GET", "/events", "events", None),
        ("GET", "/containers/abc123/changes", "container", "abc123"),
        ("POST", "/containers/abc123/pause", "container", "abc123"),
        ("POST", "/containers/abc123/unpause", "container", "abc123"),
        ("POST", "/containers/abc123/update", "update", "abc123"),
        ("GET", "/containers/abc123/export", "archive_get", "abc123"),
        ("GET", "/containers/abc123/archive", "archive_get", "abc123"),
        ("HEAD", "/containers/abc123/archive", "container", "abc123"),
        ("PUT", "/containers/abc123/archive", "archive_put", "abc123"),
        ("POST", "/commit", "commit", None),
        ("POST", "/images/create", "pull", None),
        ("POST", "/build", "build", None),
        ("POST", "/images/load", "image_load", None),
        ("POST", "/images/alice/thesis:v1/tag", "image_tag", "alice/thesis:v1"),
        ("DELETE", "/images/alice/thesis:v1", "image_remove", "alice/thesis:v1"),
        ("GET", "/images/json", "images", None),
        ("GET", "/images/ds01-test/busybox:latest/json", "image", "ds01-test/busybox:latest"),
    ],
)
def test_allowed_endpoints(method: str, path: str, kind: str, ref: str | None) -> None:
    routed = d.route(method, path)
    assert isinstance(routed, d.Routed)
    assert (routed.endpoint.kind, routed.ref) == (kind, ref)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/swarm/init"),
        ("GET", "/secrets"),
        ("GET", "/containers/abc/update"),
        ("POST", "/containers/prune"),
        ("PUT", "/images/load"),
        ("POST", "/build/prune"),
        ("POST", "/images/prune"),
        ("POST", "/containers/abc/archive"),
        ("DELETE", "/containers/abc/archive"),
        ("POST", "/containers/abc/json"),
        ("GET", "/containers/abc/json/extra"),
        ("POST", "/images/loaded"),
        ("GET", "/session"),
        ("GET", "/system/df"),
    ],
)
def test_everything_else_is_refused_naming_the_endpoint(method: str, path: str) -> None:
    refused = d.route(method, path)
    assert isinstance(refused, d.Refused)
    assert refused.status == 403
    assert f"{method} {path}" in refused.message


@given(st.text(min_size=1, max_size=200))
def test_no_path_outside_the_allowlist_is_routed(path: str) -> None:
    routed = d.route("GET", path)
    if isinstance(routed, d.Routed):
        assert any(e.pattern.match(path) for e in d.ENDPOINTS)


def test_owned_filters_keep_the_clients_and_add_the_owner() -> None:
    merged = json.loads(d.owned_filters('{"label":["team=a"],"status":["exited"]}', 1001))
    assert merged["status"] == {"exited": True}
    assert merged["label"] == {"team=a": True, "ds01.managed=true": True, "ds01.uid=1001": True}


def test_owned_filters_read_the_older_map_form_and_none() -> None:
    assert json.loads(d.owned_filters('{"name":{"x":true,"y":false}}', 7))["name"] == {"x": True}
    assert json.loads(d.owned_filters(None, 7))["label"] == {
        "ds01.managed=true": True,
        "ds01.uid=7": True,
    }


def test_a_spoofed_owner_label_cannot_widen_the_filter() -> None:
    """Labels are ANDed by Docker: asking for someone else's uid selects nothing."""
    merged = json.loads(d.owned_filters('{"label":["ds01.uid=1002"]}', 1001))
    assert {"ds01.uid=1002", "ds01.uid=1001"} <= set(merged["label"])


def test_event_filters_keep_only_container_events() -> None:
    assert json.loads(d.owned_filters(None, 5, container_events=True))["type"] == {
        "container": True
    }
    other = json.loads(d.owned_filters('{"type":["network"]}', 5, container_events=True))
    assert other["type"] == {"container": True} and "ds01.uid=-1" in other["label"]


@pytest.mark.parametrize("text", ["[", "[1]", '{"label":"x"}'])
def test_malformed_filters_are_refused(text: str) -> None:
    with pytest.raises(d.BadRequest):
        d.owned_filters(text, 1)


@pytest.mark.parametrize(
    ("line", "waits"),
    [
        ("GET /v1.41/containers/x/logs?follow=1 HTTP/1.1", True),
        ("GET /containers/x/logs HTTP/1.1", False),
        ("GET /containers/x/stats HTTP/1.1", True),
        ("GET /containers/x/stats?stream=0 HTTP/1.1", False),
        # As dockerd reads them: the first of a key given twice, and Go's idea of true.
        ("GET /containers/x/logs?follow=yes HTTP/1.1", True),
        ("GET /containers/x/logs?follow=1&follow=0 HTTP/1.1", True),
        ("GET /containers/x/logs?follow=0&follow=1 HTTP/1.1", False),
        ("GET /containers/x/logs?follow=%20False%20 HTTP/1.1", False),
        ("GET /containers/x/stats?stream=1&stream=0 HTTP/1.1", True),
        ("GET /containers/x/stats?stream=none HTTP/1.1", False),
        ("GET /containers/x/stats?stream= HTTP/1.1", False),
        ("GET /events HTTP/1.1", True),
        ("GET /containers/json HTTP/1.1", False),
        ("POST /swarm/init HTTP/1.1", False),
    ],
)
def test_which_requests_wait(line: str, waits: bool) -> None:
    assert d.waits(d.parse_request(head(line))) is waits


def test_images_shown_with_their_allowed_tags_only() -> None:
    def allows(ref: str) -> bool:
        return ref.startswith("ds01-test/")

    both = {
        "RepoTags": ["ds01-test/busybox:latest", "evil:latest"],
        "RepoDigests": ["ds01-test/busybox@sha256:1", "evil@sha256:2"],
    }
    assert d.visible_image(both, "alice", allows) == {
        "RepoTags": ["ds01-test/busybox:latest"],
        "RepoDigests": ["ds01-test/busybox@sha256:1"],
    }
    assert d.visible_image({"RepoTags": ["evil:latest"], "Labels": None}, "alice", allows) is None
    assert d.visible_image({"RepoTags": ["<none>:<none>"]}, "alice", lambda ref: True) is None


def test_an_image_built_for_the_user_is_theirs_whole() -> None:
    built = {"RepoTags": ["alice/x:latest"], "Config": {"Labels": {"ds01.image.owner": "alice"}}}
    assert d.visible_image(built, "alice", lambda ref: False) == built
    assert d.visible_image(built, "bob", lambda ref: False) is None


def test_an_image_asked_for_by_a_tag_not_allowed_stays_hidden() -> None:
    def allows(ref: str) -> bool:
        return ref.startswith("ds01-test/busybox")

    image = {"Id": "sha256:" + "a" * 64, "RepoTags": ["ds01-test/busybox:latest", "evil:1"]}
    assert d.visible_image_by("evil:1", image, "alice", allows) is None
    assert d.visible_image_by("ds01-test/busybox", image, "alice", allows) is not None
    assert d.visible_image_by("sha256:" + "a" * 64, image, "alice", allows) is not None
    assert d.visible_image_by("aaaaaaaaaaaa", image, "alice", allows) is not None


def test_ownership_needs_both_labels() -> None:
    assert d.owns({"ds01.managed": "true", "ds01.uid": "5"}, 5)
    assert not d.owns({"ds01.uid": "5"}, 5)
    assert not d.owns({"ds01.managed": "true", "ds01.uid": "6"}, 5)
    assert not d.owns(None, 5)


def test_old_api_versions() -> None:
    assert d.version_too_old("1.12") and not d.version_too_old("1.41")
    assert not d.version_too_old(None)


@pytest.mark.parametrize(
    "body",
    [
        {"Cmd": ["id"]},
        {"Cmd": ["id"], "User": "alice"},
        {"Cmd": ["id"], "User": "1001"},
        {"Cmd": ["id"], "User": "1001:2002", "Tty": True, "Env": ["A=1"]},
    ],
)
def test_an_exec_as_the_owner_passes_as_the_owners_numbers(body: dict[str, object]) -> None:
    # Never the name or a lone uid: dockerd would read them in the container's /etc/passwd.
    sent = d.check_exec(body, uid=1001, gid=2002, user="alice")
    assert sent == {**body, "User": "1001:2002"}


def test_what_dockerd_gets_is_only_what_the_check_read() -> None:
    sent = d.check_exec({"Cmd": ["id"], "user": "", "Privileged": False}, uid=1, gid=1, user="a")
    assert sent == {"Cmd": ["id"], "User": "1:1"}


def test_docker_pys_container_field_in_an_exec_is_read_past_and_dropped() -> None:
    # docker-py's exec_run sends the container it was called on; dockerd acts on the path's.
    body = {"Container": "mine", "Cmd": ["id"], "User": "", "Privileged": False, "Tty": False}
    sent = d.check_exec(body, uid=1001, gid=1001, user="alice")
    assert sent == {"Cmd": ["id"], "User": "1001:1001", "Tty": False}


@pytest.mark.parametrize(
    "body",
    [
        {"Cmd": ["id"], "User": "root"},
        {"Cmd": ["id"], "User": "0"},
        {"Cmd": ["id"], "User": "0:0"},
        {"Cmd": ["id"], "User": "bob"},
        {"Cmd": ["id"], "User": "1001:0"},
        {"Cmd": ["id"], "User": "alice:0"},
        {"Cmd": ["id"], "Privileged": True},
        {"Cmd": ["id"], "Unknown": 1},
        {"Cmd": ["id"], "user": "root"},  # dockerd would read it as User
        {"Cmd": ["id"], "User": "alice", "USER": "0"},
        {"Cmd": ["id"], "privileged": True},
    ],
)
def test_an_exec_as_anyone_else_or_privileged_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(PermissionError):
        d.check_exec(body, uid=1001, gid=1001, user="alice")


@pytest.mark.parametrize("body", [None, [], {}, {"Cmd": []}, "x"])
def test_a_malformed_exec_is_refused(body: object) -> None:
    with pytest.raises(d.BadRequest):
        d.check_exec(body, uid=1001, gid=1001, user="alice")


def test_the_doors_socket_is_next_to_the_api_socket_unless_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(paths.ENV_DOCKER_SOCKET, raising=False)
    assert paths.docker_socket_path(None, "/run/ds01/ds01.sock") == "/run/ds01/docker.sock"
    assert paths.docker_socket_path("/x/d.sock", "/run/ds01/ds01.sock") == "/x/d.sock"
    assert paths.docker_socket_path("off", "/run/ds01/ds01.sock") is None
    monkeypatch.setenv(paths.ENV_DOCKER_SOCKET, "OFF")
    assert paths.docker_socket_path(None, "/run/ds01/ds01.sock") is None


def test_the_doors_socket_from_the_environment_unless_the_flag_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(paths.ENV_DOCKER_SOCKET, "/srv/ds01/door.sock")
    assert paths.docker_socket_path(None, "/run/ds01/ds01.sock") == "/srv/ds01/door.sock"
    assert paths.docker_socket_path("/x/d.sock", "/run/ds01/ds01.sock") == "/x/d.sock"
    assert paths.docker_socket_path("off", "/run/ds01/ds01.sock") is None
    monkeypatch.setenv(paths.ENV_DOCKER_SOCKET, "")  # set but empty: the default
    assert paths.docker_socket_path(None, "/run/ds01/ds01.sock") == "/run/ds01/docker.sock"


def test_the_docker_context_is_where_the_docker_cli_looks_for_it() -> None:
    digest, meta = starter.docker_context_meta("unix:///run/ds01/docker.sock")
    # sha256("ds01"), the directory docker 20.10 reads `--context ds01` from
    assert digest == hashlib.sha256(b"ds01").hexdigest()
    parsed = json.loads(meta)
    assert parsed["Name"] == "ds01"
    assert parsed["Endpoints"]["docker"]["Host"] == "unix:///run/ds01/docker.sock"


def test_a_rename_is_served_and_its_new_name_loses_only_the_callers_own_suffix() -> None:
    routed = d.route("POST", "/containers/thesis/rename")
    assert isinstance(routed, d.Routed) and routed.endpoint.kind == "rename"

    def target(name: str) -> str:
        line = f"POST /v1.41/containers/x/rename?name={name} HTTP/1.1"
        return d.rename_target(d.parse_request(head(line)), 1001)

    assert target("thesis2") == "thesis2"
    # docker-compose's temporary name: a short id before the container's Docker name
    assert target("0123456789ab_proj_web_1._.1001") == "0123456789ab_proj_web_1"
    # another user's suffix, or one in the middle, stays for the name rule to refuse
    assert target("x._.1002") == "x._.1002"
    assert target("a._.1001.b") == "a._.1001.b"
    assert target("") == ""


#: What ``docker update`` sends for a flag not given (the CLI sends every field).
CLI_UPDATE = {
    "BlkioWeight": 0, "CpuShares": 0, "CpuPeriod": 0, "CpuQuota": 0, "CpusetCpus": "",
    "CpusetMems": "", "Memory": 0, "MemoryReservation": 0, "MemorySwap": 0, "KernelMemory": 0,
    "NanoCpus": 0, "PidsLimit": None, "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
}  # fmt: skip
MADE_WITH = {"memory_bytes": 256 * 2**20, "nano_cpus": 1_000_000_000}


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ({"Memory": 64 * 2**20}, {"Memory": 64 * 2**20, "MemorySwap": 64 * 2**20}),
        ({"Memory": 256 * 2**20, "MemorySwap": -1},
         {"Memory": 256 * 2**20, "MemorySwap": 256 * 2**20}),
        ({"NanoCpus": 500_000_000}, {"NanoCpus": 500_000_000}),
    ],
)  # fmt: skip
def test_an_update_may_lower_memory_and_cpus_and_never_gives_swap(
    asked: dict[str, int], sent: dict[str, int]
) -> None:
    assert d.check_update({**CLI_UPDATE, **asked}, **MADE_WITH) == sent


def test_a_container_made_without_limits_may_be_given_any() -> None:
    update = d.check_update({"Memory": 2**40, "NanoCpus": 8 * 10**9}, memory_bytes=0, nano_cpus=0)
    assert update == {"Memory": 2**40, "MemorySwap": 2**40, "NanoCpus": 8 * 10**9}


@pytest.mark.parametrize(
    ("asked", "words"),
    [
        ({"Memory": 512 * 2**20}, "-m 512M is above the -m 256M"),
        ({"NanoCpus": 2 * 10**9}, "--cpus 2 is above the --cpus 1"),
        ({"Memory": 64 * 2**20, "MemorySwap": 128 * 2**20}, "no swap"),
        ({"PidsLimit": -1}, "PidsLimit"),
        ({"RestartPolicy": {"Name": "always"}}, "RestartPolicy"),
        ({"CpuShares": 4096}, "CpuShares"),
        ({"memory": 2**40}, "memory"),  # dockerd reads keys case-insensitively
    ],
)
def test_an_update_is_refused_never_trimmed(asked: dict[str, object], words: str) -> None:
    with pytest.raises(PermissionError, match=re.escape(words)):
        d.check_update({**CLI_UPDATE, **asked}, **MADE_WITH)


@pytest.mark.parametrize("body", [None, [], {"Memory": "1g"}, {"Memory": True}, CLI_UPDATE])
def test_a_malformed_or_empty_update_is_refused(body: object) -> None:
    with pytest.raises(d.BadRequest):
        d.check_update(body, **MADE_WITH)


def test_own_repository_is_the_users_namespace() -> None:
    assert d.own_repository("alice/thesis", "alice", 1001) == "thesis"
    assert d.own_repository("alice/cv-seg.v2", "alice", 1001) == "cv-seg.v2"


@pytest.mark.parametrize(
    ("repository", "words"),
    [
        ("bob/thesis", "alice/NAME"),
        ("thesis", "alice/NAME"),
        ("", "(none)"),
        ("alice/", "alice/NAME"),
        ("ds01-test/busybox", "alice/NAME"),
        ("alice/Thesis", "not an image name"),
        ("alice/a/b", "not an image name"),
    ],
)
def test_a_tag_or_commit_elsewhere_is_refused(repository: str, words: str) -> None:
    with pytest.raises(PermissionError, match=re.escape(words)):
        d.own_repository(repository, "alice", 1001)


def test_info_shows_the_engine_and_only_the_callers_containers() -> None:
    engine = {"ServerVersion": "20.10.24", "NCPU": 2, "Containers": 300, "Images": 40,
              "Swarm": {"LocalNodeState": "active", "RemoteManagers": [{"Addr": "10.0.0.1"}]},
              "Name": "gpu1", "RegistryConfig": {"Mirrors": ["m"]}}  # fmt: skip
    shown = d.info_view(engine, ["running", "exited", "paused"])
    assert shown["ServerVersion"] == "20.10.24" and shown["Name"] == "gpu1"
    counts = (shown["Containers"], shown["ContainersRunning"], shown["ContainersStopped"])
    assert counts == (3, 1, 1)
    assert shown["Images"] == 0 and "RegistryConfig" not in shown
    assert shown["Swarm"] == {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": ""}


@pytest.mark.parametrize(
    ("query", "reference"),
    [
        ("fromImage=busybox&tag=latest", "busybox:latest"),
        ("fromImage=127.0.0.1:5000/ds01-test/x", "127.0.0.1:5000/ds01-test/x"),
        ("fromImage=busybox&tag=sha256:" + "a" * 64, "busybox@sha256:" + "a" * 64),
    ],
)
def test_a_pull_reads_its_reference(query: str, reference: str) -> None:
    request = d.parse_request(f"POST /v1.41/images/create?{query} HTTP/1.1\r\n\r\n".encode())
    assert d.pull_reference(request) == reference


@pytest.mark.parametrize("query", ["fromSrc=-&repo=x", "fromImage=", "tag=latest"])
def test_an_import_or_a_pull_of_nothing_is_refused(query: str) -> None:
    request = d.parse_request(f"POST /images/create?{query} HTTP/1.1\r\n\r\n".encode())
    with pytest.raises(PermissionError):
        d.pull_reference(request)


def test_an_import_is_refused_before_its_body_saying_what_to_do_instead() -> None:
    head = "POST /v1.41/images/create?fromSrc=-&repo=alice/x HTTP/1.1\r\n"
    request = d.parse_request(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
    assert d.import_refusal(request) == d.IMPORT_MESSAGE
    assert "docker build" in d.IMPORT_MESSAGE
    pull = d.parse_request(b"POST /images/create?fromImage=busybox&tag=1 HTTP/1.1\r\n\r\n")
    assert d.import_refusal(pull) is None


@pytest.mark.parametrize("image", ["alice/x:1", "alice/x", "registry.example:5000/alice/x"])
def test_a_push_is_refused_saying_what_to_do_instead(image: str) -> None:
    refused = d.route("POST", f"/images/{image}/push")
    assert isinstance(refused, d.Refused) and refused.message == d.PUSH_MESSAGE
    assert "docker save" in refused.message


def test_buildkit_is_refused_telling_the_user_the_classic_builder() -> None:
    for path in ("/session", "/grpc"):
        refused = d.route("POST", path)
        assert isinstance(refused, d.Refused) and "DOCKER_BUILDKIT=0" in refused.message


def build_request(query: str) -> d.DockerRequest:
    return d.parse_request(f"POST /v1.41/build?{query} HTTP/1.1\r\n\r\n".encode())


#: What Debian's docker 20.10 CLI sends for ``docker build -t alice/x:v1 .``.
CLI_BUILD = (
    "buildargs=%7B%7D&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0&cpusetcpus="
    "&cpusetmems=&cpushares=0&dockerfile=Dockerfile&labels=%7B%7D&memory=0&memswap=0"
    "&networkmode=default&rm=1&shmsize=0&t=alice%2Fx%3Av1&target=&ulimits=null&version=1"
)


def test_the_clis_build_reads_as_image_build() -> None:
    options = d.build_options(build_request(CLI_BUILD), "alice", 1001)
    assert options == d.BuildOptions("x", "v1", "Dockerfile", pull=False, no_cache=False)
    plain = d.build_options(build_request("t=alice/x&nocache=1&pull=1"), "alice", 1001)
    assert (plain.tag, plain.no_cache, plain.pull) == ("latest", True, True)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (CLI_BUILD.replace("version=1", "version=2"), "DOCKER_BUILDKIT=0"),
        (CLI_BUILD.replace("buildargs=%7B%7D", "buildargs=%7B%22A%22%3A%221%22%7D"),
         "buildargs"),
        (CLI_BUILD.replace("memory=0", "memory=1073741824"), "memory"),
        (CLI_BUILD.replace("networkmode=default", "networkmode=host"), "networkmode"),
        (CLI_BUILD.replace("cgroupparent=", "cgroupparent=%2F"), "cgroupparent"),
        (CLI_BUILD + "&remote=https%3A%2F%2Fexample.org%2Fx.git", "remote"),
        (CLI_BUILD.replace("t=alice%2Fx%3Av1", "t=bob%2Fx"), "alice/NAME"),
        (CLI_BUILD.replace("t=alice%2Fx%3Av1", "t="), "alice/NAME"),
        (CLI_BUILD.replace("t=alice%2Fx%3Av1&", ""), "one -t"),
        (CLI_BUILD + "&t=alice%2Fy", "one -t"),
    ],
)  # fmt: skip
def test_a_build_asking_for_what_ds01_sets_is_refused(query: str, words: str) -> None:
    with pytest.raises(PermissionError, match=re.escape(words)):
        d.build_options(build_request(query), "alice", 1001)


def test_a_save_names_its_images_each_with_a_tag_a_digest_or_an_id() -> None:
    one = d.parse_request(head("GET /v1.41/images/ds01-test/busybox:latest/get HTTP/1.1"))
    routed = d.route(one.method, one.path)
    assert isinstance(routed, d.Routed) and routed.endpoint.kind == "image_save"
    assert d.save_names(one, routed.ref) == ["ds01-test/busybox:latest"]
    many = d.parse_request(head(
        "GET /v1.41/images/get?names=a%2Fb%3A1&names=sha256%3A" + "0" * 64 + " HTTP/1.1"
    ))  # fmt: skip
    assert d.save_names(many, None) == ["a/b:1", "sha256:" + "0" * 64]
    assert d.waits(many)
    for line in ("GET /images/get HTTP/1.1", "GET /images/get?names=localhost%3A5000%2Fb HTTP/1.1"):
        with pytest.raises(d.BadRequest):
            d.save_names(d.parse_request(head(line)), None)


def test_json_nested_past_the_parsers_depth_is_bad_input_never_a_crash() -> None:
    deep = b"[" * 50000
    with pytest.raises(ValueError):
        json_value(deep)
    create = head(
        "POST /v1.41/containers/create HTTP/1.1", f"Content-Length: {len(deep)}", body=deep
    )
    assert d.request_waits(create) is False  # read in the thread that reads every request
    with pytest.raises(d.BadRequest):
        d.owned_filters("[" * 5000, 1)
