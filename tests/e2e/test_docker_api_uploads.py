"""End to end: the uploads ds01d spools for a user (``docker build`` contexts, ``docker cp``
into a container, ``docker load``) are bounded before a byte of them is read.

alice holds her share of uploads (``ds01.core.spool_room.MAX_SPOOLS_PER_USER``): build
requests on the Docker API door whose bodies she has not sent, each answered ``100
Continue`` (the door asks for a body only once it holds a spool for it). Her next ``docker
build``, with Debian's docker CLI, is refused with HTTP 429, saying why; bob's upload is
not; once her connections are gone, her uploads are taken again.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

from ds01.core.spool_room import MAX_SPOOLS_PER_USER
from support import BIN_DIR, TEST_IMAGES_YAML, describe, user_env, wait_until

#: Run as a user: opens argv[2] build requests on the door (argv[1]) that wait for
#: ``100 Continue`` before their (chunked) body, tagged argv[3] (``{n}``: each one's
#: number), prints each one's first answer line, and holds them open until its standard
#: input ends.
HOLD = r"""
import socket, sys
held = []
for n in range(int(sys.argv[2])):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    sock.sendall(
        b"POST /v1.41/build?t=" + sys.argv[3].replace("{n}", str(n)).encode() + b" HTTP/1.1\r\n"
        + b"Host: docker\r\nContent-Type: application/x-tar\r\n"
        + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    answer = b""
    while b"\r\n" not in answer and (data := sock.recv(4096)):
        answer += data
    print(answer.split(b"\r\n", 1)[0].decode(), flush=True)
    held.append(sock)
sys.stdin.read()
"""
CONTINUE = "HTTP/1.1 100 Continue"


@contextlib.contextmanager
def holding(d: Any, user: str, count: int, tag: str = "{user}%2Fheld{n}") -> Iterator[list[str]]:
    """``count`` uploads begun by ``user`` and held, tagged ``tag`` (URL-encoded; ``{user}``,
    and ``{n}``: the upload's number); the first answer line of each."""
    command = ["runuser", "-u", user, "--", "env", "-i"]
    command += [f"{k}={v}" for k, v in user_env(user).items()]
    command += [str(BIN_DIR / "python"), "-I", "-c", HOLD, str(d.docker_socket), str(count)]
    command.append(tag.replace("{user}", user))
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/"
    ) as helper:
        assert helper.stdin is not None and helper.stdout is not None
        try:
            yield [helper.stdout.readline().strip() for _ in range(count)]
        finally:
            helper.stdin.close()
            helper.wait(timeout=30)


def test_a_user_past_their_share_of_uploads_is_refused_before_any_byte(ds01d: Any) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    with holding(d, "alice", MAX_SPOOLS_PER_USER) as answers:
        assert answers == [CONTINUE] * MAX_SPOOLS_PER_USER
        build = d.docker("alice", "build", "-t", "alice/more", "-", input="FROM busybox\n")
        assert build.returncode != 0, describe(build)
        assert "uploads of yours" in build.stderr and "(2)" in build.stderr, describe(build)
        with holding(d, "bob", 1) as bobs:
            assert bobs == [CONTINUE]
    denied = d.events_where(action="docker_api.request", user="alice", outcome="denied")
    statuses = [e["details"]["status"] for e in denied if "of yours" in e["details"]["reason"]]
    assert statuses == [429], denied

    def taken_again() -> bool:
        with holding(d, "alice", MAX_SPOOLS_PER_USER) as again:
            return again == [CONTINUE] * MAX_SPOOLS_PER_USER

    wait_until("alice's uploads released with her connections", taken_again)

    # A build whose tag ds01 does not take is refused before its body, never after it.
    with holding(d, "alice", 1, tag="{user}%2Fheld:" + "x" * 200 + "{n}") as refused:
        assert refused[0].startswith("HTTP/1.1 400"), refused
    denied = d.events_where(action="docker_api.request", user="alice", outcome="denied")
    [too_long] = [e for e in denied if "cannot build this" in e["details"]["reason"]]
    assert too_long["details"]["status"] == 400 and ": tag: " in too_long["details"]["reason"]
