"""Raw HTTP to ds01d's unix socket as a real Unix user, without the ds01 CLI (no tests here).

The daemon learns who is calling from ``SO_PEERCRED``, so a request "as alice" must come
from a process that really runs as alice. Starting ``runuser … python`` costs a few hundred
milliseconds, too much to pay for each of hundreds of fuzz examples, so :class:`RawApi`
starts ONE helper process as the user and then talks to it through pipes:

- the test writes one JSON line per request to the helper's stdin:
  ``{"raw": <base64 of the exact bytes to send>, "half_close": bool, "until_close": bool}``;
- the helper opens a fresh connection to the socket, sends those bytes unchanged (so a
  request may be malformed HTTP on purpose), optionally half-closes its sending side (so a
  daemon that waits for more body bytes sees end of file instead of hanging), reads one
  answer (until ``Content-Length`` is satisfied, end of file, or its timeout; with
  ``until_close``, everything until end of file or its timeout), and writes
  one JSON line: ``{"status", "headers", "body" (base64), "error", "elapsed"}``.

``status`` is ``None`` and ``error`` says why when no HTTP answer came back (connection
closed without an answer, timeout, connection refused…). The helper never raises on a bad
answer: it reports it. A fresh connection per request keeps one malformed request from
poisoning the next one.

Use it as a context manager, from the test (root) side::

    with RawApi(daemon.paths.socket, "alice") as api:
        reply = api.call("POST", "/v1/containers", {"name": "x", "image": "busybox"})
        assert reply.status == 400, reply
        reply = api.send(b"GET /v1/whoami HTTP/1.1\\r\\n\\r\\n")
"""

from __future__ import annotations

import base64
import json
import select
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import BIN_DIR, user_env

#: Seconds the helper waits for one answer before reporting ``"timeout"``.
ANSWER_TIMEOUT_S = 10.0

#: The helper, run as the user with the installed interpreter. argv: socket path, timeout.
HELPER_SCRIPT = r"""
import base64, json, socket, sys, time

SOCKET, TIMEOUT = sys.argv[1], float(sys.argv[2])


def split(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, body


def complete(data):
    parsed = split(data)
    if parsed is None:
        return False
    _, headers, body = parsed
    length = headers.get("content-length", "")
    return length.isdigit() and len(body) >= int(length)


def exchange(raw, half_close, until_close):
    started = time.monotonic()
    data, error = b"", None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(SOCKET)
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError) as exc:
            error = f"send: {type(exc).__name__}"  # an answer may still be there to read
        while until_close or not complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        error = "timeout"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    parsed = split(data)
    if parsed is None:
        status, headers, body = None, {}, data
        if error is None:
            error = "closed without an answer" if not data else "not an HTTP answer"
    else:
        status, headers, body = parsed
        length = headers.get("content-length", "")
        if length.isdigit() and not until_close:
            if len(body) < int(length):
                error = error or "answer cut short"
            body = body[: int(length)]
    return {
        "status": status,
        "headers": headers,
        "body": base64.b64encode(body).decode(),
        "error": error,
        "elapsed": round(time.monotonic() - started, 4),
    }


for line in sys.stdin:
    request = json.loads(line)
    answer = exchange(
        base64.b64decode(request["raw"]),
        request.get("half_close", True),
        request.get("until_close", False),
    )
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"""


@dataclass(frozen=True)
class Reply:
    """One answer as the helper saw it. ``status`` is ``None`` when no HTTP answer came."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None
    elapsed: float
    request: bytes = field(default=b"", repr=False)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_body(self) -> dict[str, Any]:
        """The ``error`` object of an error answer (``{}`` if the body has none)."""
        try:
            data = self.json()
        except ValueError:
            return {}
        error = data.get("error") if isinstance(data, dict) else None
        return error if isinstance(error, dict) else {}

    def __str__(self) -> str:
        return (
            f"request: {self.request[:600]!r}\n"
            f"answer: status={self.status} error={self.error} elapsed={self.elapsed}s\n"
            f"headers: {self.headers}\nbody: {self.body[:1000]!r}"
        )


def http_request(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
    content_length: bool | str = True,
    close: bool = True,
) -> bytes:
    """The bytes of one HTTP/1.1 request.

    ``content_length``: ``True`` sends the body's real length, ``False`` no header at all,
    a string sends exactly that value (e.g. ``"-1"`` or ``"abc"``).
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: ds01d"]
    if close:
        lines.append("Connection: close")
    if body is not None:
        lines.append("Content-Type: application/json")
    if content_length is True:
        lines.append(f"Content-Length: {len(body or b'')}")
    elif isinstance(content_length, str):
        lines.append(f"Content-Length: {content_length}")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1", errors="replace") + (body or b"")


class RawApi:
    """A helper process running as ``user`` that sends raw requests to ds01d for the test."""

    def __init__(self, socket_path: str | Path, user: str, timeout: float = ANSWER_TIMEOUT_S):
        self.socket_path = str(socket_path)
        self.user = user
        self.timeout = timeout
        self.process: subprocess.Popen[str] | None = None
        self._stderr_file: Any = None

    def __enter__(self) -> RawApi:
        self._stderr_file = tempfile.TemporaryFile()
        env = [f"{k}={v}" for k, v in user_env(self.user).items()]
        command = ["runuser", "-u", self.user, "--", "env", "-i", *env]
        command += [str(BIN_DIR / "python"), "-I", "-u", "-c", HELPER_SCRIPT]
        command += [self.socket_path, str(self.timeout)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,  # a file, not a pipe: a chatty helper cannot block
            text=True,
            cwd="/",
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=self.timeout + 5)
        except subprocess.TimeoutExpired:
            process.kill()  # only the helper this object started
            process.wait()
        if process.stdout:
            process.stdout.close()
        self._stderr_file.close()

    def send(self, raw: bytes, *, half_close: bool = True, until_close: bool = False) -> Reply:
        """Send ``raw`` unchanged on a fresh connection; return the answer the helper read
        (``until_close``: everything until the daemon closes, as the first answer's body:
        a second answer on the same connection shows there)."""
        process = self.process
        if process is None or process.stdin is None or process.stdout is None:
            raise RuntimeError("RawApi is not started: use it as a context manager")
        line = json.dumps(
            {
                "raw": base64.b64encode(raw).decode(),
                "half_close": half_close,
                "until_close": until_close,
            }
        )
        try:
            process.stdin.write(line + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"the {self.user} helper died: {self._stderr()}") from None
        ready, _, _ = select.select([process.stdout], [], [], self.timeout + 10)
        answer = process.stdout.readline() if ready else ""
        if not answer:
            raise RuntimeError(
                f"the {self.user} helper gave no answer to {raw[:200]!r}: {self._stderr()}"
            )
        data = json.loads(answer)
        return Reply(
            status=data["status"],
            headers=data["headers"],
            body=base64.b64decode(data["body"]),
            error=data["error"],
            elapsed=data["elapsed"],
            request=raw,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One well-formed request; ``body`` (if not ``None``) is sent as JSON."""
        payload = None if body is None else json.dumps(body).encode()
        return self.send(http_request(method, path, payload, headers=headers))

    def _stderr(self) -> str:
        """The end of what the helper wrote to stderr."""
        self._stderr_file.seek(0)
        text: str = self._stderr_file.read().decode(errors="replace")
        state = "running" if self.process and self.process.poll() is None else "exited"
        return f"(helper {state}) {text[-2000:]}"


def queue_gpu_create(socket_path: str | Path, user: str, name: str) -> str:
    """Queue a 1-GPU create of a busybox container for ``user`` (``queue: true``, answered
    with HTTP 202, so no client waits for it); return the request id."""
    with RawApi(socket_path, user) as api:
        reply = api.call(
            "POST", "/v1/containers", {"name": name, "image": "busybox", "gpus": 1, "queue": True}
        )
    assert reply.status == 202, reply
    entry = reply.json()
    assert entry["state"] == "waiting", entry
    return str(entry["id"])


def check_error_shape(reply: Reply) -> list[str]:
    """What is wrong with an error answer's body; ``[]`` when it has the documented shape
    ``{"error": {"kind": str, "message": str, "exit_code": int, "details": dict}}``."""
    problems = []
    if reply.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        problems.append(f"Content-Type {reply.headers.get('content-type')!r}")
    try:
        data = reply.json()
    except ValueError:
        return [*problems, "body is not JSON"]
    if not isinstance(data, dict) or set(data) != {"error"} or not isinstance(data["error"], dict):
        return [*problems, "body is not {'error': {...}}"]
    error = data["error"]
    expected = {"kind": str, "message": str, "exit_code": int, "details": dict}
    if set(error) != set(expected):
        problems.append(f"error keys {sorted(error)}")
    for key, kind in expected.items():
        value = error.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"error.{key} = {value!r} is not a {kind.__name__}")
    if isinstance(error.get("message"), str) and not error["message"].strip():
        problems.append("empty message")
    return problems


# --- what a container alice got must look like in Docker ---------------------------------------


def user_slice(docker_client: Any, group: str, user: str) -> str:
    """The cgroup parent ds01 gives ``user`` of config group ``group``, in the
    form of the engine's cgroup driver."""
    if docker_client.info().get("CgroupDriver") == "systemd":
        return f"ds01-{group}-{user}.slice"
    return f"/ds01.slice/ds01-{group}.slice/ds01-{group}-{user}.slice"


def environment(attrs: dict[str, Any]) -> dict[str, str]:
    """A container's environment, from ``docker inspect``."""
    return dict(item.split("=", 1) for item in attrs["Config"]["Env"] or [])


def container_problems(
    attrs: dict[str, Any],
    owner: Any,
    cgroup_parent: str,
    *,
    memory_limit: int | None = None,
    nano_cpus_limit: int | None = None,
) -> list[str]:
    """What is wrong with a container ds01d made for ``owner`` (a ``pwd.struct_passwd``),
    judged from ``docker inspect`` alone; ``[]`` when it is hers, unprivileged and bounded:
    not privileged, on her own network only (``ds01-u<uid>``), her cgroup parent, her uid
    and labels, no added capabilities or host namespaces, ports published only on 127.0.0.1
    (not on a system port), ``DS01_GPUS`` naming exactly the devices its labels record and
    the NVIDIA toolkit's variables naming only those Docker asks the toolkit for (``void``
    for none: always with simulated GPUs), bind mounts only of directories she owns, and memory and
    CPU limits that are set (Docker reads 0 as "unlimited") and within the given limits."""
    host, config = attrs["HostConfig"], attrs["Config"]
    labels = config["Labels"] or {}
    problems = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    check(host["Privileged"] is False, f"Privileged={host['Privileged']}")
    own_network = f"ds01-u{owner.pw_uid}"
    check(host["NetworkMode"] == own_network, f"NetworkMode={host['NetworkMode']}")
    networks = sorted((attrs.get("NetworkSettings") or {}).get("Networks") or {})
    check(networks == [own_network], f"Networks={networks}")
    check(host["CgroupParent"] == cgroup_parent, f"CgroupParent={host['CgroupParent']}")
    check(host.get("PidMode") in ("", None), f"PidMode={host.get('PidMode')}")
    check(host.get("IpcMode") != "host", "IpcMode=host")
    check(host.get("UsernsMode") in ("", None), f"UsernsMode={host.get('UsernsMode')}")
    check(not host.get("CapAdd"), f"CapAdd={host.get('CapAdd')}")
    check(labels.get("ds01.managed") == "true", "not labelled ds01.managed")
    check(labels.get("ds01.user") == owner.pw_name, f"ds01.user={labels.get('ds01.user')}")
    check(labels.get("ds01.uid") == str(owner.pw_uid), f"ds01.uid={labels.get('ds01.uid')}")
    check(config["User"] == f"{owner.pw_uid}:{owner.pw_gid}", f"User={config['User']}")
    gpus = [u for u in labels.get("ds01.gpus", "").split(",") if u]
    env = environment(attrs)
    check(env.get("DS01_GPUS") == ",".join(gpus), f"DS01_GPUS={env.get('DS01_GPUS')} {gpus}")
    requested = [u for r in host.get("DeviceRequests") or [] for u in r.get("DeviceIDs") or []]
    for key in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        wanted = ",".join(requested) or "void"
        check(env.get(key) == wanted, f"{key}={env.get(key)} toolkit devices={requested}")
    for request in host.get("DeviceRequests") or []:
        check(request.get("Count") in (0, None), f"DeviceRequest Count={request.get('Count')}")
        check(set(request.get("DeviceIDs") or []) <= set(gpus), f"DeviceRequest {request}")
    for port, bindings in (host.get("PortBindings") or {}).items():
        for binding in bindings or []:
            check(binding.get("HostIp") == "127.0.0.1", f"{port} published on {binding}")
            host_port = binding.get("HostPort") or ""
            check(host_port == "" or int(host_port) >= 1024, f"{port} on system port {binding}")
    for mount in attrs["Mounts"]:
        source = Path(mount["Source"])
        # ds01d's staging path (<state>/mounts/<key>/<what>, the key the Docker name at create
        # and a digest: ds01.runtime.staging.staging_key): the user's directory is the one its
        # label names, and the staging path is either not staged yet (root's, empty) or that
        # very directory.
        staged = source.parent.name.startswith(attrs["Name"].lstrip("/") + ".") and (
            source.parent.parent.name == "mounts"
        )
        label = {"/workspace": "aime.mlc.WORK_MOUNT", "/data": "aime.mlc.DATA_MOUNT"}.get(
            mount["Destination"], ""
        )
        directory = Path(labels.get(label, "-")) if staged else source
        try:
            st = directory.stat()
            owned = st.st_uid == owner.pw_uid and directory.is_dir()
            if staged:
                at = source.stat()
                owned = owned and (
                    (at.st_dev, at.st_ino) == (st.st_dev, st.st_ino)
                    or (at.st_uid == 0 and at.st_mode & 0o777 == 0o700)
                )
        except OSError:
            owned = False
        check(owned, f"mount of {directory} ({source}), not a directory {owner.pw_name} owns")
    if memory_limit is not None:
        check(0 < host["Memory"] <= memory_limit, f"Memory={host['Memory']} (0 = unlimited)")
        check(0 < host["MemorySwap"] <= memory_limit, f"MemorySwap={host['MemorySwap']}")
    if nano_cpus_limit is not None:
        check(0 < host["NanoCpus"] <= nano_cpus_limit, f"NanoCpus={host['NanoCpus']}")
    return problems
