"""The fork server that forks ds01d's checks made as a user (``ds01.runtime.fork_server``).

Real processes, real users: the operations of ``ds01.runtime.userfs`` run in the server's
children (this process does not fork for them), with the user's ids; a dead server is
started again; a stopped client, or a server that never says it is ready, leaves the caller
to fork for itself; a busy server hands requests back and is kept; a request its caller gave
up on is never run late; a name that is not UTF-8 comes through. The server kills a child
past its deadline and reaps it, drops malformed requests and ends with its client.
"""

from __future__ import annotations

import array
import errno
import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

import pytest

from ds01.runtime import userfs
from ds01.runtime.fork_server import ForkServerClient, serve
from ds01.runtime.userfs import UserFsError, UserIds, make_directory, reach_directory
from support import make_world_traversable_dir, wait_until

SERVER_MODULE = "ds01.runtime.userfs"
WAIT_SECONDS = 30.0


def ids_of(user: Any) -> UserIds:
    return UserIds.of(user.pw_name, user.pw_uid, user.pw_gid)


def server_pids(module: bytes = SERVER_MODULE.encode()) -> list[int]:
    """This process's children running the fork server (``module``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and module in argv:
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(word) for word in text.split()]


@pytest.fixture
def alices_directory(unix_users: dict[str, Any]) -> Iterator[Path]:
    scratch = make_world_traversable_dir("ds01-forkserver-")
    mine = scratch / "alice"
    mine.mkdir()
    os.chown(mine, unix_users["alice"].pw_uid, unix_users["alice"].pw_gid)
    yield mine
    userfs.stop_fork_server()
    for path in sorted(scratch.rglob("*"), reverse=True):
        path.rmdir()
    scratch.rmdir()


def no_fork(*_: object) -> NoReturn:
    raise AssertionError("this process forked for an operation the server should fork")


def test_operations_run_in_the_servers_children_as_the_user(
    unix_users: dict[str, Any], alices_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = unix_users["alice"]
    assert userfs.start_fork_server()
    assert len(server_pids()) == 1
    monkeypatch.setattr(os, "fork", no_fork)

    made = alices_directory / "workspace"
    assert make_directory(made, ids_of(alice)) is True
    assert (made.stat().st_uid, made.stat().st_gid) == (alice.pw_uid, alice.pw_gid)
    reached = reach_directory(str(made), ids_of(alice))
    assert (reached.path, reached.device, reached.inode) == (
        str(made),
        made.stat().st_dev,
        made.stat().st_ino,
    )
    userfs.replace_file(made, ".ds01-notice", b"\x00binary\xffnotice\n", ids_of(alice))
    notice = made / ".ds01-notice"
    assert notice.read_bytes() == b"\x00binary\xffnotice\n"
    assert notice.stat().st_uid == alice.pw_uid
    notice.unlink()

    # The user's own rights, not root's: bob cannot make a directory in alice's.
    with pytest.raises(UserFsError) as refused:
        make_directory(alices_directory / "bobs", ids_of(unix_users["bob"]))
    assert refused.value.errno == errno.EACCES


def test_a_killed_server_is_started_again_and_a_stopped_one_leaves_the_fork_to_us(
    unix_users: dict[str, Any], alices_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = unix_users["alice"]
    assert userfs.start_fork_server()
    (first,) = server_pids()
    os.kill(first, signal.SIGKILL)
    wait_until("the killed server is gone", lambda: first not in server_pids() or _zombie(first))

    with monkeypatch.context() as patched:
        patched.setattr(os, "fork", no_fork)
        assert reach_directory(str(alices_directory), ids_of(alice)).path == str(alices_directory)
    (second,) = server_pids()
    assert second != first

    userfs.stop_fork_server()
    assert server_pids() == []
    reached = reach_directory(str(alices_directory), ids_of(alice))  # forked here
    assert reached.path == str(alices_directory)
    assert server_pids() == []


def test_a_server_that_never_gets_ready_is_not_used_nor_tried_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[object] = []
    popen = subprocess.Popen

    def counted(*args: Any, **kwargs: Any) -> Any:
        started.append(args)
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counted)
    client = ForkServerClient("ds01.no_such_module")
    read_end, write_end = os.pipe()
    try:
        assert client.start() is False
        for _ in range(3):
            assert client.submit({"deadline": time.monotonic() + 5}, write_end) is False
    finally:
        os.close(read_end)
        os.close(write_end)
    assert len(started) == 1  # the requests after a failed start were not worth a start each
    assert server_pids(b"ds01.no_such_module") == []


def test_a_busy_server_hands_requests_back_and_is_not_replaced(
    unix_users: dict[str, Any], alices_directory: Path
) -> None:
    alice = unix_users["alice"]
    client = ForkServerClient(SERVER_MODULE)
    assert client.start()
    (server,) = server_pids()
    request = {
        "uid": alice.pw_uid,
        "gid": alice.pw_gid,
        "groups": [alice.pw_gid],
        "operation": "reach",
        "arguments": [str(alices_directory)],
        "deadline": time.monotonic() + WAIT_SECONDS,
        "padding": "x" * 60000,
    }
    reports: list[int] = []
    os.kill(server, signal.SIGSTOP)
    try:
        for _ in range(64):  # the socket's buffer holds a few such requests, not 64
            read_end, write_end = os.pipe()
            reports.append(read_end)
            taken = client.submit(request, write_end)
            os.close(write_end)
            if not taken:
                break
        else:
            pytest.fail("a server that reads nothing took 64 requests of 60 KB")
    finally:
        os.kill(server, signal.SIGCONT)
    assert server_pids() == [server]  # busy, not replaced
    answered = [report_of(fd) for fd in reports[:-1]]
    assert all(report.startswith(b"ok:") for report in answered), answered
    os.close(reports[-1])
    client.stop()
    assert server_pids() == []


def test_a_request_the_caller_gave_up_on_is_never_run_late(
    unix_users: dict[str, Any], alices_directory: Path
) -> None:
    ids = ids_of(unix_users["alice"])
    assert userfs.start_fork_server()
    (server,) = server_pids()
    too_late = alices_directory / "too-late"
    os.kill(server, signal.SIGSTOP)
    try:
        with pytest.raises(UserFsError) as timed_out:
            make_directory(too_late, ids, timeout_seconds=0.5)
        assert timed_out.value.errno == errno.ETIMEDOUT
    finally:
        os.kill(server, signal.SIGCONT)
    # The server reads in order: once the next request is answered, the late one was read.
    accented = alices_directory / "caf\udce9"  # a name that is not UTF-8: b"caf\xe9"
    assert make_directory(accented, ids) is True
    assert sorted(os.listdir(bytes(alices_directory))) == [b"caf\xe9"]
    assert not too_late.exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _blocking_child(request: Any, report: int) -> NoReturn:
    if request.get("block"):
        signal.pause()
    os.write(report, b"done")
    os._exit(0)


@pytest.fixture
def bare_server() -> Iterator[tuple[socket.socket, int]]:
    """``serve`` in a forked process whose children block when asked to."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the server
        ours.close()
        try:
            serve(theirs, _blocking_child)
        finally:
            os._exit(0)
    theirs.close()
    yield ours, pid
    ours.close()
    with suppress(ChildProcessError):  # the test may have reaped it
        os.waitpid(pid, 0)


def ask(control: socket.socket, request: dict[str, Any], *, with_fd: bool = True) -> int:
    """Send ``request``; the read end of its report pipe."""
    read_end, write_end = os.pipe()
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write_end]))]
    control.sendmsg([json.dumps(request).encode()], rights if with_fd else [])
    os.close(write_end)
    return read_end


def report_of(read_end: int) -> bytes:
    """Everything written to the pipe until its last writer closed it."""
    received = b""
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], WAIT_SECONDS)
            assert ready, "the report pipe never reached end-of-file"
            chunk = os.read(read_end, 4096)
            if not chunk:
                return received
            received += chunk
    finally:
        os.close(read_end)


def test_the_server_kills_a_child_past_its_deadline_and_reaps_it(
    bare_server: tuple[socket.socket, int],
) -> None:
    control, server = bare_server
    stuck = ask(control, {"deadline": time.monotonic() + 0.3, "block": True})
    served = ask(control, {"deadline": time.monotonic() + WAIT_SECONDS})
    assert report_of(served) == b"done"  # one stuck child holds up no other request
    assert report_of(stuck) == b""  # killed: end-of-file, no report
    wait_until("the killed child is reaped", lambda: children_of(server) == [])


def test_malformed_requests_are_dropped_and_the_server_ends_with_its_client(
    bare_server: tuple[socket.socket, int],
) -> None:
    control, server = bare_server
    soon = time.monotonic() + WAIT_SECONDS
    for malformed in ({"deadline": str(soon)}, {"deadline": True}, {}, {"block": True}):
        assert report_of(ask(control, malformed)) == b""
    assert report_of(ask(control, {"deadline": time.monotonic() - 1})) == b""  # too late
    os.close(ask(control, {"deadline": soon}, with_fd=False))
    assert report_of(ask(control, {"deadline": soon})) == b"done"
    wait_until("the children are reaped", lambda: children_of(server) == [])

    control.shutdown(socket.SHUT_RDWR)
    _, status = os.waitpid(server, 0)
    assert os.waitstatus_to_exitcode(status) == 0
