"""End to end: fuzz the ds01d API as a real non-admin user, over the unix socket.

Request bodies are generated from the OpenAPI document the daemon serves (``GET
/openapi.json``: the JSON schemas of its request models), mixed with garbage: wrong types,
unknown fields, huge and unicode strings, NUL bytes, nested junk, invalid JSON, path
traversal in names (``..%2F..``), very long names, unknown paths, odd methods, broken
request lines and headers, missing or lying ``Content-Length``. Everything is sent AS ALICE
through one long-running helper process (``rawapi.RawApi``), so an example costs a pipe
round trip, not a ``runuser`` start.

Invariants, for every example:

- an HTTP answer comes back: no dropped connection, no hang;
- never a 5xx;
- every error has the body ``{"error": {"kind", "message", "exit_code", "details"}}``, with
  an ``exit_code`` that goes with the HTTP status;
- nothing that changes state succeeds: alice has ``max_containers: 0`` and no container of
  her own, so every create, start, stop and remove must be refused.

After each run, Docker's containers (ids, states, start times, labels) and the GPU holders
are exactly what they were, and the daemon process is alive and still answers
``/v1/whoami`` (the three runs in which alice may create nothing share one ds01d: each
compares with the world as it found it). A last fuzz test lets alice create for real (one
container at a time) and checks that every create that succeeds made a container that is
hers, unprivileged and within her limits, and that every refused one left nothing in Docker.

Findings are pinned by ``test_known_finding_is_fixed``, one minimal example each (one scene
serves every finding of its class: each probe must leave the world as it found it). While a
finding's minimal example still fails against the daemon under test, the fuzz tests
tolerate examples of exactly that class (they are counted, and printed with ``-s``), so
that the fuzzing keeps guarding everything else; once it is fixed, the class is checked too.
``DS01_FUZZ_STRICT=1`` tolerates nothing, to let hypothesis find and shrink each finding.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rawapi import RawApi, Reply, check_error_shape, container_problems, http_request, user_slice

from support import TEST_IMAGE, TEST_IMAGE_ALT, TEST_IMAGES_YAML, describe

# alice may create nothing: any create, start, stop or remove that succeeds is a bug.
LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 2
      cpu_limit: 1
      memory_limit: 1G
    groups:
      phd:
        max_containers: 2
    users:
      alice:
        max_containers: 0
"""

# alice may hold one container (the create fuzz removes each one it makes).
LIMITS_CREATE = """
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 1
      max_containers: 1
      cpu_limit: 1
      memory_limit: 1G
      shm_size: 256M
    groups:
      phd:
        max_containers: 1
"""
MEMORY_LIMIT_BYTES = 1024**3
CPU_LIMIT_NANO = 10**9

FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Which exit codes go with which HTTP status in an error answer.
EXIT_CODES = {400: {2}, 403: {5}, 404: {4}, 409: {1, 3}}


# --- invariants ----------------------------------------------------------------------------


def violations(reply: Reply) -> list[str]:
    """How an answer breaks the API's promises; ``[]`` when it keeps them."""
    if reply.status is None:
        return [f"no HTTP answer ({reply.error})"]
    problems = []
    if reply.error:
        problems.append(f"answer incomplete ({reply.error})")
    if reply.status >= 500:
        problems.append(f"HTTP {reply.status}")
    if reply.status >= 400:
        problems.extend(check_error_shape(reply))
        code = reply.error_body.get("exit_code")
        if reply.status in EXIT_CODES and code not in EXIT_CODES[reply.status]:
            problems.append(f"exit_code {code!r} with HTTP {reply.status}")
    elif reply.status != 200:
        problems.append(f"unexpected HTTP {reply.status}")
    else:
        try:
            reply.json()
        except ValueError:
            problems.append("200 with a body that is not JSON")
    return problems


@dataclass(frozen=True)
class Req:
    """One generated request; ``raw`` is exactly what goes on the wire."""

    method: str
    raw: bytes
    json_body: Any = None  # the body, when it was generated as JSON
    content_length: str | None = None  # the header's value, when one was sent

    def __repr__(self) -> str:
        return f"Req({self.raw[:400]!r}{'…' if len(self.raw) > 400 else ''})"


def make_req(
    method: str, target: str, body: Any = None, *, content_length: bool | str = True
) -> Req:
    """A request; ``body`` is sent as JSON unless it is ``bytes`` already."""
    json_body = None if isinstance(body, bytes) else body
    raw_body = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    raw = http_request(method, target, raw_body, content_length=content_length)
    if content_length is True:
        length: str | None = str(len(raw_body or b""))
    else:
        length = content_length if isinstance(content_length, str) else None
    return Req(method, raw, json_body, length)


def request_line(req: Req) -> str:
    return req.raw.split(b"\n", 1)[0].decode("latin-1")


# --- known findings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """A finding: its minimal example, and which generated examples belong to its class."""

    key: str
    summary: str
    probe: Callable[[FuzzScene], list[str]]  # violations of the minimal example
    covers: Callable[[Req, Reply], bool]
    creates: bool = False  # needs a scene in which alice may create
    open_: str = ""  # where it goes wrong, while it does: test_known_finding_is_fixed xfails


def raw_probe(raw: bytes) -> Callable[[FuzzScene], list[str]]:
    return lambda scene: violations(scene.api.send(raw))


def create_probe(**fields: Any) -> Callable[[FuzzScene], list[str]]:
    def probe(scene: FuzzScene) -> list[str]:
        body = {"name": "probe", "image": "busybox", **fields}
        reply = scene.api.call("POST", "/v1/containers", body)
        problems = violations(reply)
        if reply.status == 200 and scene.may_create:
            problems += scene.check_created("probe")
        elif reply.status == 200:
            problems.append("created although alice may not create")
        return problems

    return probe


def unusable_path(req: Req, reply: Reply) -> bool:
    """A workspace/data path the kernel cannot look up: a NUL byte, or too long."""
    body = req.json_body if isinstance(req.json_body, dict) else {}
    for key in ("workspace", "data"):
        value = body.get(key)
        if isinstance(value, str):
            encoded = value.encode("utf-8", "surrogatepass")
            parts = encoded.split(b"/")
            if b"\0" in encoded or len(encoded) >= 4096 or any(len(p) > 255 for p in parts):
                return True
    return False


def odd_content_length(req: Req, reply: Reply) -> bool:
    value = req.content_length
    return value is not None and not re.fullmatch(r"[0-9]{1,18}", value, re.ASCII)


def from_http_server(req: Req, reply: Reply) -> bool:
    """An error page of the standard library's http.server, not an answer of ds01d's handler
    (with headers, or bare when it failed before it knew the request's HTTP version)."""
    return reply.body.lstrip().startswith(b"<!DOCTYPE HTML>")


def size_below(key: str, limit: float) -> Callable[[Req, Reply], bool]:
    def covers(req: Req, reply: Reply) -> bool:
        body = req.json_body if isinstance(req.json_body, dict) else {}
        value = body.get(key)
        if not isinstance(value, str):
            return False
        size = re.fullmatch(r"\s*([0-9]*\.?[0-9]*)\s*([kmgt]?)(?:i?b)?\s*", value, re.I)
        if not size or size[1] in ("", "."):
            return False
        factor = 1024 ** " kmgt".index(size[2].lower() or " ")
        return float(size[1]) * factor < limit

    return covers


def cpus_below_a_nano_cpu(req: Req, reply: Reply) -> bool:
    body = req.json_body if isinstance(req.json_body, dict) else {}
    cpus = body.get("cpus")
    return isinstance(cpus, float) and 0 < cpus < 1e-9


KNOWN: tuple[Known, ...] = (
    Known(
        "unsupported-method-501-html",
        "PUT /v1/whoami (any method but GET, POST, DELETE) -> 501 with an HTML page",
        raw_probe(http_request("PUT", "/v1/whoami", b"{}")),
        lambda req, reply: req.method not in ("GET", "POST", "DELETE"),
    ),
    Known(
        "http-server-error-page-is-html",
        "a request line of one word ('garbage') -> http.server's HTML error page, no JSON",
        raw_probe(b"garbage\r\n\r\n"),
        from_http_server,
    ),
    Known(
        "http-0.9-request-gets-a-bare-body",
        "'GET /v1/whoami' with no version (HTTP/0.9) -> a JSON body without a status line",
        raw_probe(b"GET /v1/whoami\r\n\r\n"),
        lambda req, reply: len(request_line(req).split()) == 2 or "HTTP/0.9" in request_line(req),
    ),
    Known(
        "content-length-not-a-number",
        "Content-Length: abc -> the connection is closed without an answer",
        raw_probe(http_request("POST", "/v1/containers", b"{}", content_length="abc")),
        odd_content_length,
    ),
    Known(
        "content-length-unicode-digit",
        "Content-Length: \\xb2 (superscript two: str.isdigit() is True, int() fails) -> 500",
        raw_probe(http_request("POST", "/v1/containers", b"{}", content_length="\xb2")),
        odd_content_length,
    ),
    Known(
        "content-length-overflow",
        "Content-Length: 2**63 -> the connection is closed without an answer",
        raw_probe(http_request("POST", "/v1/containers", b"{}", content_length=str(2**63))),
        odd_content_length,
    ),
    Known(
        "full-name-with-unicode-digit-uid-500",
        "POST /v1/containers/thesis._.\\xb2/stop (raw byte 0xb2 in the request line: '²' "
        "passes str.isdigit(), int() fails) -> 500",
        raw_probe(b"POST /v1/containers/thesis._.\xb2/stop HTTP/1.1\r\nConnection: close\r\n\r\n"),
        lambda req, reply: (
            re.search(rb"\._\.[^/?\s]*[\x80-\xff]", request_line(req).encode("latin-1")) is not None
        ),
    ),
    Known(
        "workspace-nul-byte-500",
        'POST /v1/containers {"name":"probe","image":"busybox","workspace":"/a\\u0000b"} -> 500',
        create_probe(workspace="/a\0b"),
        unusable_path,
    ),
    Known(
        "data-path-too-long-500",
        'POST /v1/containers {"name":"probe","image":"busybox","data":"/"+"a"*300} -> 500',
        create_probe(data="/" + "a" * 300),
        unusable_path,
    ),
    Known(
        "memory-below-docker-minimum-503",
        'POST /v1/containers {"name":"probe","image":"busybox","memory":"1"} -> 503 (Docker: '
        '"Minimum memory limit allowed is 6MB")',
        create_probe(memory="1"),
        size_below("memory", 6 * 1024**2),
        creates=True,
    ),
    Known(
        "memory-zero-is-unlimited",
        'POST /v1/containers {"name":"probe","image":"busybox","memory":"0"} -> created with '
        "Memory=0, which Docker reads as no limit",
        create_probe(memory="0"),
        size_below("memory", 1),
        creates=True,
    ),
    Known(
        "cpus-below-a-nano-cpu-is-unlimited",
        'POST /v1/containers {"name":"probe","image":"busybox","cpus":1e-10} -> created with '
        "NanoCpus=0, which Docker reads as no limit",
        create_probe(cpus=1e-10),
        cpus_below_a_nano_cpu,
        creates=True,
    ),
)


# --- the scene -----------------------------------------------------------------------------------


@dataclass
class FuzzScene:
    d: Any
    docker: Any
    api: RawApi
    alice: Any
    bob: Any
    openapi: dict[str, Any]
    may_create: bool
    alice_dir: str
    bob_container: str
    bob_id: str
    active: list[Known] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def world(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Docker's containers (every ds01-managed one, and any other named like a container
        of alice or bob) and the GPU holders as ds01d reports them."""
        suffixes = (f"._.{self.alice.pw_uid}", f"._.{self.bob.pw_uid}")
        found = {
            c.id for c in self.docker.containers.list(all=True, filters={"label": "ds01.managed"})
        }
        found.update(
            c.id for c in self.docker.containers.list(all=True) if c.name.endswith(suffixes)
        )
        containers = {}
        for cid in found:
            attrs = self.docker.api.inspect_container(cid)
            containers[attrs["Name"].lstrip("/")] = (
                cid,
                attrs["State"]["Status"],
                attrs["State"]["StartedAt"],
                tuple(sorted((attrs["Config"]["Labels"] or {}).items())),
            )
        gpus = self.api.call("GET", "/v1/gpus")
        assert gpus.status == 200, gpus
        holders = {dev["uuid"]: dev["holder"] for dev in gpus.json()["devices"]}
        return containers, holders

    def activate(self) -> None:
        """Begin a run: count answers afresh, and tolerate the classes of the known findings
        whose minimal example still fails (none with ``DS01_FUZZ_STRICT=1``: then hypothesis
        finds and shrinks them)."""
        self.counts.clear()
        if os.environ.get("DS01_FUZZ_STRICT") == "1":
            return
        self.active = [k for k in KNOWN if (self.may_create or not k.creates) and k.probe(self)]
        for known in self.active:
            print(f"known finding still present, its class is tolerated: {known.key}")

    def check(self, req: Req, *, changes_state: bool = False) -> Reply:
        """Send ``req`` as alice; fail unless the answer keeps the invariants (or belongs to
        the class of a known finding that is still present)."""
        reply = self.api.send(req.raw)
        self.counts[f"HTTP {reply.status}"] += 1
        problems = violations(reply)
        if changes_state and reply.status == 200:
            problems.append("succeeded, although alice may not change anything")
        if reply.status is None and not request_line(req).strip():
            problems = []  # an empty request line: http.server closes without an answer
        self.fail_unless_tolerated(problems, req, reply)
        return reply

    def fail_unless_tolerated(self, problems: list[str], req: Req, reply: Reply) -> None:
        if not problems:
            return
        for known in self.active:
            if known.covers(req, reply):
                event(f"tolerated known finding: {known.key}")
                self.counts[f"tolerated {known.key}"] += 1
                return
        pytest.fail(f"{problems}\n{reply}", pytrace=False)

    def check_created(self, name: str) -> list[str]:
        """What is wrong in Docker with alice's new container ``name``; it is removed."""
        docker_name = f"{name}._.{self.alice.pw_uid}"
        problems = container_problems(
            self.docker.api.inspect_container(docker_name),
            self.alice,
            user_slice(self.docker, "phd", "alice"),
            memory_limit=MEMORY_LIMIT_BYTES,
            nano_cpus_limit=CPU_LIMIT_NANO,
        )
        removed = self.api.call("DELETE", f"/v1/containers/{name}?force=1")
        assert removed.status == 200, removed
        return problems

    def finish(self, before: tuple[dict[str, Any], dict[str, Any]]) -> None:
        """After a run: nothing changed, the daemon is alive and answers."""
        print(f"fuzz run: {', '.join(f'{k}: {n}' for k, n in sorted(self.counts.items()))}")
        after = self.world()
        assert after[0] == before[0], "Docker's containers changed"
        assert after[1] == before[1], "the GPU holders changed"
        assert self.d.running, f"ds01d died\n{self.d.log_tail()}"
        me = self.api.call("GET", "/v1/whoami")
        assert me.status == 200 and me.json()["user"] == "alice", me
        fresh = self.d.cli("alice", "whoami", "--json")
        assert fresh.returncode == 0, describe(fresh)


def make_scene(
    ds01d: Any, docker_client: Any, unix_users: Any, *, may_create: bool
) -> Iterator[FuzzScene]:
    d = ds01d(resource_limits=LIMITS_CREATE if may_create else LIMITS, images=TEST_IMAGES_YAML)
    alice, bob = unix_users["alice"], unix_users["bob"]
    created = d.cli(
        "bob", "container-create", "thesis", "--image", "busybox", "--gpus", "1", "--start"
    )
    assert created.returncode == 0, describe(created)
    bob_container = f"thesis._.{bob.pw_uid}"
    alice_dir = Path(alice.pw_dir) / "fuzz-workspace"
    alice_dir.mkdir(exist_ok=True)
    os.chown(alice_dir, alice.pw_uid, alice.pw_gid)
    try:
        with RawApi(d.paths.socket, "alice") as api:
            doc = api.call("GET", "/openapi.json")
            assert doc.status == 200, doc
            yield FuzzScene(
                d=d,
                docker=docker_client,
                api=api,
                alice=alice,
                bob=bob,
                openapi=doc.json(),
                may_create=may_create,
                alice_dir=str(alice_dir),
                bob_container=bob_container,
                bob_id=docker_client.api.inspect_container(bob_container)["Id"],
            )
    finally:
        shutil.rmtree(alice_dir, ignore_errors=True)


@pytest.fixture(scope="class")
def fuzz(ds01d_per_class: Any, docker_client: Any, unix_users: Any) -> Iterator[FuzzScene]:
    """ds01d in which alice may create nothing; bob holds a GPU in a running container;
    ``fuzz.api`` is a raw API helper running as alice. One for a whole class: each test
    checks that what it did changed nothing."""
    yield from make_scene(ds01d_per_class, docker_client, unix_users, may_create=False)


@pytest.fixture
def fuzz_create(ds01d: Any, docker_client: Any, unix_users: Any) -> Iterator[FuzzScene]:
    """Like ``fuzz``, but alice may hold one container."""
    yield from make_scene(ds01d, docker_client, unix_users, may_create=True)


# --- strategies ----------------------------------------------------------------------------------

# fmt: off
NASTY_STRINGS = [
    "", " ", ".", "..", "/", "//", "../..", "..%2F..", "..%2f..%2f..%2Fetc", "%2e%2e%2f",
    "%00", "\x00", "a\x00b", "/etc/passwd", "/var/run/docker.sock", "/var/run", "/home/bob",
    "~", "~bob", "$(id)", "`id`", "; rm -rf /", "\r\nX-Injected: 1", "é", "ß", "😀",
    "\u202e", "\ufeff", "\u0130", "a" * 63, "a" * 64, "a" * 255, "a" * 5000, "x" * 60000,
    "thesis._.0", "thesis._.", "._.", "-leading-dash", "_underscore", "UPPER", "1",
    "null", "true", "0", "-1", "1e309", "NaN", "{}", "[]",
]
NOT_JSON = [
    b"", b"{", b"}", b"[" * 5000 + b"]" * 5000, b'{"name": "a"' * 50, b'{"name": "\\ud800"}',
    b"\xff\xfe{}", b"NaN", b'{"a":1,"a":2}', b'{"name": 1e99999}', b"\x00" * 100,
]
UNKNOWN_FIELD_NAMES = [
    "privileged", "network_mode", "environment", "labels", "cgroup_parent", "mounts", "binds",
    "user", "uid", "devices", "cap_add", "runtime", "HostConfig", "__proto__", "name ", "Name",
]
SIZE_SAMPLES = ["0", "1", "0.5", "6M", "256M", "1G", "1.5G", "2G", "1T", "-1G", "1e3"]
IMAGE_SAMPLES = ["busybox", "busybox-alt", TEST_IMAGE, TEST_IMAGE_ALT, "docker:dind",
                 "busybox@sha256:" + "0" * 64]
MIG_SAMPLES = ["1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb", "all"]
UNKNOWN_PATHS = [
    "/", "//v1/whoami", "/v1", "/v1/", "/v2/containers", "/v1/containers/",
    "/v1/containers//stop", "/v1/containers/x/exec", "/v1/containers/x/y/z", "/v1/../v1/whoami",
    "/openapi.json/..", "/v1/whoami/", "/V1/WHOAMI", "/v1/containers/x/start/",
    "/v1/images/../../etc/passwd", "*", "/" + "a" * 5000,
]
RAW_PATH_NAMES = ["..%2F..", "..%2F..%2Fetc", "%2e%2e", "..", ".", "%00", "%252e%252e",
                  "thesis%00", "%u002e%u002e"]
QUERY_KEYS = ["user", "all", "force", "explain", "uid"]
QUERY_VALUES = ["1", "true", "bob", "alice", "root", "erin", "", "0"]
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
           "get", "Post"]
TARGETS = ["/v1/whoami", "/v1/containers", "/v1/containers/x/stop", "/openapi.json", "*",
           "http://ds01d/v1/whoami", "/v1/gpus"]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 extra", "",
            "FOO/1.1"]
CONTENT_LENGTHS = ["-1", "abc", "", " 5", "+5", "1e3", "0x10", "\xb2", "\xb9", str(2**63),
                   "99999999999999999999", "65537", "5, 5"]
# fmt: on

VALID_NAME = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}", fullmatch=True)
NASTY = st.one_of(
    st.sampled_from(NASTY_STRINGS), st.text(max_size=80), st.text(min_size=300, max_size=3000)
)
SIZES = st.from_regex(r"\s?[0-9]{1,13}(\.[0-9]{0,3})?\s?[kmgtKMGT]?(i?[bB])?", fullmatch=True)
SIZES = SIZES | st.sampled_from(SIZE_SAMPLES)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.sampled_from(NASTY_STRINGS),
)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
NOT_JSON_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(NOT_JSON),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
UNKNOWN_FIELDS = st.dictionaries(
    st.sampled_from(UNKNOWN_FIELD_NAMES) | st.text(max_size=15), ANY_JSON, min_size=1, max_size=3
)
TOKEN = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
LATIN1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` five times in six, else ``odd``: most values get past the first checks so
    that requests reach deeper code; the rest probe the first checks."""
    return st.integers(0, 5).flatmap(lambda i: odd if i == 5 else usual)  # 0 is the simplest


def field_hints(scene: FuzzScene) -> dict[str, st.SearchStrategy[Any]]:
    """Values per request field that get past the first checks and reach deeper code."""
    mine, home, bobs = scene.alice_dir, scene.alice.pw_dir, scene.bob.pw_dir
    # fmt: off
    paths = st.sampled_from([
        mine, home, bobs, "/", "/tmp", "/var/run", "/var/run/docker.sock", mine + "/../../bob",
        "relative/dir", mine + "/\x00", "/" + "a" * 300, mine + "/" + "b" * 256,
        "/proc/self/root", "/dev/null",
    ])
    # fmt: on
    return {
        "name": VALID_NAME | st.just(scene.bob_container),
        "image": st.sampled_from(IMAGE_SAMPLES),
        "workspace": paths,
        "data": paths,
        "memory": SIZES,
        "shm_size": SIZES,
        "mig": st.lists(st.sampled_from(MIG_SAMPLES), max_size=2),
    }


def from_schema(
    schema: dict[str, Any],
    components: dict[str, Any],
    hints: dict[str, st.SearchStrategy[Any]],
) -> st.SearchStrategy[Any]:
    """Values shaped by a JSON schema of the OpenAPI document (objects with their properties,
    numbers within and beyond their bounds); strings are nasty on purpose, and ``hints``
    adds values per property name."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components, hints)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, hints) for s in schema[key]])
    if "enum" in schema:
        return mostly(st.sampled_from(schema["enum"]), NASTY)
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "string":
        return NASTY
    if kind == "integer":
        within = st.integers(schema.get("minimum"), schema.get("maximum"))
        return mostly(within, st.integers() | st.sampled_from([2**63, -(2**63) - 1, 10**30]))
    if kind == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum"))
        within = st.floats(min_value=low, exclude_min="exclusiveMinimum" in schema)
        return mostly(within, st.floats() | st.sampled_from([1e-12, 1e-10, 0.5, 1.0, 1e308]))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, hints), max_size=4)
    if kind == "object":
        properties = {
            key: mostly(hints[key], from_schema(sub, components, hints))
            if key in hints
            else from_schema(sub, components, hints)
            for key, sub in schema.get("properties", {}).items()
        }
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in properties.items() if k in required},
            optional={k: v for k, v in properties.items() if k not in required},
        )
    return ANY_JSON


def request_schema(scene: FuzzScene, path: str, method: str) -> dict[str, Any]:
    """The JSON schema of an operation's request body, from the OpenAPI document."""
    operation = scene.openapi["paths"][path][method]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def bodies(scene: FuzzScene, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A request body: shaped by ``schema`` (as is, with unknown fields, or with one field
    of any JSON type), any JSON at all, or bytes that are not JSON."""
    components = scene.openapi["components"]["schemas"]
    shaped = from_schema(schema, components, field_hints(scene))
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    replaced = st.tuples(st.sampled_from(sorted(schema["properties"])), ANY_JSON)
    odd = st.one_of(
        st.builds(lambda body, extra: {**body, **extra}, shaped, UNKNOWN_FIELDS),
        st.builds(lambda body, kv: {**body, kv[0]: kv[1]}, shaped, replaced),
        ANY_JSON,
        NOT_JSON_BODIES,
    )
    return st.booleans().flatmap(lambda is_odd: odd if is_odd else shaped)


def path_names(scene: FuzzScene) -> st.SearchStrategy[str]:
    """Container names as they appear in a URL: percent-encoded, or raw traversal."""
    names = st.one_of(
        VALID_NAME,
        NASTY,
        st.sampled_from([scene.bob_container, scene.bob_id, scene.bob_id[:12], "a" * 2000]),
    )
    raw = st.sampled_from([*RAW_PATH_NAMES, "..%2F" + scene.bob_container])
    # Not percent-encoded: bytes 0x80-0xff reach the daemon as latin-1 characters.
    latin1 = st.text(
        st.characters(min_codepoint=33, max_codepoint=255, exclude_characters="/?#"),
        min_size=1,
        max_size=20,
    )
    uids = st.sampled_from(["1", "\xb2", "\xb9", "0x10", "-1", ""]) | latin1
    full_names = st.builds(lambda base, uid: f"{base}._.{uid}", VALID_NAME, uids)
    return names.map(lambda n: quote(n, safe="")) | raw | latin1 | full_names


@st.composite
def broken_http(draw: st.DrawFn) -> Req:
    """Requests broken at the HTTP level: methods, request lines, versions, headers and
    ``Content-Length`` values."""
    method = draw(st.sampled_from(METHODS) | TOKEN)
    target = draw(st.sampled_from(TARGETS) | LATIN1.map(lambda t: "/" + t))
    version = draw(st.sampled_from(VERSIONS))
    body = draw(st.binary(max_size=300) | st.just(b'{"name": "x", "image": "busybox"}'))
    length = draw(
        st.none()
        | st.just(str(len(body)))
        | st.integers(0, len(body) + 1000).map(str)
        | st.sampled_from(CONTENT_LENGTHS)
    )
    headers = draw(st.lists(st.tuples(TOKEN, LATIN1), max_size=6))
    if draw(st.booleans()):
        headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "gzip", "x"]))))
    if draw(st.integers(0, 10)) == 0:
        headers.extend((f"X-Pad-{i}", "p") for i in range(120))  # too many headers
    lines = [f"{method} {target} {version}".rstrip(" ")]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return Req(method, raw, None, length)


# --- the fuzz tests ------------------------------------------------------------------------------


class TestRefusals:
    """Requests alice may not make, on one scene (``fuzz``)."""

    def test_fuzzed_create_bodies_are_refused_cleanly_and_change_nothing(
        self, fuzz: FuzzScene
    ) -> None:
        fuzz.activate()
        before = fuzz.world()
        schema = request_schema(fuzz, "/v1/containers", "post")

        @FUZZ_SETTINGS
        @given(
            body=bodies(fuzz, schema),
            query=st.sampled_from(["", "?user=bob", "?user=alice", "?all=1", "?x=%00"]),
            content_length=st.sampled_from([True, True, True, False]),
        )
        def run(body: Any, query: str, content_length: bool) -> None:
            req = make_req("POST", "/v1/containers" + query, body, content_length=content_length)
            fuzz.check(req, changes_state=True)

        run()
        fuzz.finish(before)

    def test_fuzzed_routes_names_and_queries_are_refused_cleanly_and_change_nothing(
        self, fuzz: FuzzScene
    ) -> None:
        fuzz.activate()
        before = fuzz.world()
        operations = [
            (m.upper(), path) for path, item in fuzz.openapi["paths"].items() for m in item
        ]
        unknown_paths = st.sampled_from(UNKNOWN_PATHS) | st.lists(
            st.text(max_size=12).map(lambda s: quote(s, safe="")), min_size=1, max_size=5
        ).map(lambda parts: "/" + "/".join(parts))
        queries = st.dictionaries(
            st.sampled_from(QUERY_KEYS) | st.text(max_size=10),
            st.sampled_from(QUERY_VALUES) | NASTY,
            max_size=3,
        )

        @st.composite
        def requests(draw: st.DrawFn) -> Req:
            method, path = draw(st.sampled_from(operations))
            method = draw(st.sampled_from([method, method, method, "GET", "POST", "DELETE"]))
            path = path.replace("{name}", draw(path_names(fuzz)))
            if draw(st.integers(0, 5)) == 0:
                path = draw(unknown_paths)
            query = draw(queries)
            target = path + ("?" + urlencode(query) if query else "")
            body = draw(st.none() | ANY_JSON | st.binary(max_size=100))
            return make_req(method, target, body)

        @FUZZ_SETTINGS
        @given(req=requests())
        def run(req: Req) -> None:
            fuzz.check(req, changes_state=req.method in ("POST", "DELETE"))

        run()
        fuzz.finish(before)

    def test_fuzzed_http_junk_is_answered_cleanly_and_changes_nothing(
        self, fuzz: FuzzScene
    ) -> None:
        fuzz.activate()
        before = fuzz.world()

        @FUZZ_SETTINGS
        @given(req=broken_http() | st.binary(min_size=1, max_size=300).map(lambda b: Req("?", b)))
        def run(req: Req) -> None:
            fuzz.check(req, changes_state=req.method.upper() in ("POST", "DELETE"))

        run()
        fuzz.finish(before)


def test_fuzzed_creates_that_succeed_make_only_compliant_containers(
    fuzz_create: FuzzScene,
) -> None:
    scene = fuzz_create
    scene.activate()
    containers, holders = scene.world()
    create = st.fixed_dictionaries(
        {"name": VALID_NAME, "image": st.sampled_from(["busybox", "busybox-alt"])},
        optional={
            "gpus": st.integers(0, 2),
            "mig": st.lists(st.sampled_from(MIG_SAMPLES[:4]), max_size=2),
            "cpus": st.floats(min_value=1e-12, max_value=2.0) | st.sampled_from([1e-10, 0.5]),
            "memory": SIZES,
            "shm_size": SIZES,
            "workspace": st.sampled_from([scene.alice_dir, scene.alice.pw_dir, "/tmp"]),
            "data": st.sampled_from([scene.alice_dir, scene.bob.pw_dir]),
            "interface": st.sampled_from(["cli", "deploy", "proxy", "job"]),
        },
    )

    @settings(FUZZ_SETTINGS, max_examples=100)
    @given(body=create)
    def run(body: dict[str, Any]) -> None:
        req = make_req("POST", "/v1/containers", body)
        reply = scene.api.send(req.raw)
        scene.counts[f"HTTP {reply.status}"] += 1
        problems = violations(reply)
        if reply.status == 200:
            problems += scene.check_created(body["name"])
        else:
            left = scene.docker.containers.list(
                all=True, filters={"name": f"{body['name']}._.{scene.alice.pw_uid}"}
            )
            if left:
                problems.append(f"refused, yet Docker has {[c.name for c in left]}")
        scene.fail_unless_tolerated(problems, req, reply)

    run()
    scene.finish((containers, holders))


# --- the findings, one minimal example each ----------------------------------------------------


def _known(creates: bool) -> list[Any]:
    """The findings whose probe needs a scene in which alice may create (or not), one
    parameter each; an open one xfails."""
    return [
        pytest.param(
            k,
            id=k.key,
            marks=[pytest.mark.xfail(strict=True, raises=AssertionError, reason=k.open_)]
            if k.open_
            else [],
        )
        for k in KNOWN
        if k.creates == creates
    ]


def _check_known_finding(scene: FuzzScene, known: Known) -> None:
    before = scene.world()
    problems = known.probe(scene)
    assert not problems, f"{known.summary}: {problems}"
    scene.finish(before)


# One scene serves every finding of a class: each probe must change nothing (``finish``
# checks it against the world as the probe found it), so the findings do not interfere.


@pytest.fixture(scope="class")
def fuzz_create_per_class(
    ds01d_per_class: Any, docker_client: Any, unix_users: Any
) -> Iterator[FuzzScene]:
    """``fuzz_create``'s scene, for a whole class."""
    yield from make_scene(ds01d_per_class, docker_client, unix_users, may_create=True)


class TestKnownFindingsOfRequests:
    @pytest.mark.parametrize("known", _known(creates=False))
    def test_known_finding_is_fixed(self, fuzz: FuzzScene, known: Known) -> None:
        _check_known_finding(fuzz, known)


class TestKnownFindingsOfCreates:
    @pytest.mark.parametrize("known", _known(creates=True))
    def test_known_finding_is_fixed(self, fuzz_create_per_class: FuzzScene, known: Known) -> None:
        _check_known_finding(fuzz_create_per_class, known)
