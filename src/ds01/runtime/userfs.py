"""Files in users' directories, touched as the user would touch them: never as root.

ds01d runs as root, and a directory a user owns is theirs to rig: any name in it may be a
symlink, a hard link to a file they may only write, a FIFO, a huge file, or a directory
swapped for a link between a check and a use. Root's writes there would land wherever the
user points them, with root's rights. So:

- **Writes run as the user.** :func:`run_as` forks a short-lived child that drops to the
  user's ids (``setgroups``, ``setresgid``, ``setresuid``) before it touches anything, so
  the kernel's own permission checks apply: the child can do nothing the user could not do
  themselves. Changing its ids also makes the child non-dumpable, so the user cannot trace
  it. The child only makes system calls (ds01d has threads: it never logs, imports or
  waits on a lock), reports through a pipe, and is killed if it takes longer than its
  timeout; the caller gets an ``OSError`` for every failure, never a hang.
  ds01d's own operations (:func:`reach_directory`, :func:`make_directory`,
  :func:`replace_file`) are forked by a fork server (``ds01.runtime.fork_server``: this
  module run as a small process of its own), whose children cost a small process's fork, not
  ds01d's; they are the same children, with the same ids, checks and timeout. Where no
  server can be reached, ds01d forks them itself.
- **No symlink is followed.** :func:`open_directory` resolves a path one component at a
  time from ``/`` with ``O_PATH | O_DIRECTORY | O_NOFOLLOW`` (each lookup relative to the
  previous directory's descriptor): a symlink, a FIFO or any other non-directory on the way
  fails the call. ``O_PATH`` opens nothing, so nothing blocks and search permission is
  enough. Paths ds01 keeps (a workspace) are stored resolved, so a symlink found later was
  put there by someone.
- **A file is replaced, never rewritten in place** (:func:`replace_file`): the new content
  goes to a fresh name (``O_CREAT | O_EXCL``: never follows or reuses anything) that is
  then renamed over the target. The old file is never opened, so a hard link, a FIFO or a
  huge file cannot be written through, block, or cost time; a target that is not a regular
  file with a single link is refused and left as it is.

A path a user names for ds01d to use (a bind source) is **reached as the user**
(:func:`reach_directory`): root needs no search permission, so a directory root finds may sit
behind folders the user cannot enter. The child resolves the path with the user's rights and
reports what it reached; the caller then holds that very directory (same device and inode)
through a descriptor of its own.

Root may still *read metadata* in a user's directory (:func:`stat_in`: the keep-alive
file's time) with the same resolution and owner checks: ``O_PATH`` and ``fstatat`` never
open the file.
"""

from __future__ import annotations

import base64
import errno
import os
import select
import signal
import stat
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from ds01.runtime.fork_server import ForkServerClient, serve_inherited

#: How long a child acting as a user may take before it is killed.
DEFAULT_TIMEOUT_SECONDS = 5.0

_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
#: The most a child reports back (its result or error message), in bytes.
_REPORT_BYTES = 4096
_OK = "ok"
_RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# The child of run_as only makes system calls before os._exit, so a fork from ds01d's
# threads is safe; Python >= 3.12 warns about any fork in a threaded process.
warnings.filterwarnings(
    "ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning
)


@dataclass(frozen=True)
class UserIds:
    """The credentials a child takes: uid, primary gid and every supplementary gid."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def of(cls, name: str, uid: int, gid: int) -> UserIds:
        """The ids of account ``name`` (its groups from NSS, as a login gets them)."""
        try:
            groups = tuple(os.getgrouplist(name, gid))
        except OSError:
            groups = (gid,)
        return cls(uid, gid, groups)


class UserFsError(OSError):
    """An operation in a user's directory failed or was refused (``errno`` and ``strerror``
    say why)."""


class PathStep(OSError):
    """Opening a directory failed at one component of its path (``component``: the path up
    to and including it); ``errno`` says why (``ELOOP``/``ENOTDIR``: a symlink or no
    directory, ``ENOENT``, ``EACCES``)."""

    def __init__(self, error: OSError, component: str) -> None:
        super().__init__(error.errno, error.strerror, component)
        self.component = component


def open_directory(path: Path | str) -> int:
    """An ``O_PATH`` descriptor of the absolute directory ``path``, reached without following
    any symlink (module docstring); close it with ``os.close``.

    Raises:
        OSError: ``EINVAL`` for a relative path or one with ``.`` or ``..`` components.
        PathStep: a component is a symlink or no directory, missing, or not reachable.
    """
    text = str(path)
    pure = PurePosixPath(text)
    if not pure.is_absolute() or any(part in (".", "..") for part in text.split("/")):
        raise OSError(errno.EINVAL, "not an absolute path without '.' or '..'", text)
    fd = os.open("/", _DIRECTORY_FLAGS)
    walked = PurePosixPath("/")
    try:
        for part in pure.parts[1:]:
            walked /= part
            try:
                following = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise PathStep(exc, str(walked)) from exc
            os.close(fd)
            fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


def stat_in(directory: Path, name: str, owner_uid: int) -> os.stat_result | None:
    """Metadata of ``directory/name`` (not followed if a symlink), read by the caller (root
    may) without opening anything; ``None`` unless both the directory and the file belong to
    ``owner_uid`` and the file is a regular file, or when it cannot be reached."""
    try:
        fd = open_directory(directory)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != owner_uid:
            return None
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner_uid:
        return None
    return st


@dataclass(frozen=True)
class Reached:
    """A directory a user reached: its path with every symlink resolved, and its identity."""

    path: str
    device: int
    inode: int

    def is_open_in(self, fd: int) -> bool:
        """Whether ``fd`` holds this very directory (the same device and inode)."""
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (self.device, self.inode)


def _take_ids(ids: UserIds) -> None:
    """Become ``ids`` for good (all of real, effective and saved ids), groups first."""
    os.setgroups(list(ids.groups))
    os.setresgid(ids.gid, ids.gid, ids.gid)
    os.setresuid(ids.uid, ids.uid, ids.uid)
    if os.getresuid() != (ids.uid,) * 3 or os.getresgid() != (ids.gid,) * 3:
        raise OSError(errno.EPERM, "could not drop to the user's ids")


def _child(ids: UserIds, work: Callable[[], str], report: int) -> NoReturn:
    """The forked child: close what it inherited, become the user, work, report, exit."""
    outcome = f"{errno.EIO}:the operation failed"
    try:
        for number in _RESET_SIGNALS:  # ds01d's handlers (shutdown, reload) are not the child's
            signal.signal(number, signal.SIG_DFL)
        os.closerange(3, report)
        os.closerange(report + 1, 1 << 20)
        _take_ids(ids)
        os.umask(0o022)
        outcome = f"{_OK}:{work()}"
    except OSError as exc:
        outcome = f"{exc.errno or errno.EIO}:{exc.strerror or exc}"
    except BaseException as exc:  # the child must reach os._exit whatever happens
        outcome = f"{errno.EIO}:{type(exc).__name__}"
    finally:
        try:
            os.write(report, outcome.encode(errors="replace")[:_REPORT_BYTES])
        finally:
            os._exit(0)


def _read_report(fd: int, deadline: float) -> bytes | None:
    """What the child wrote before closing its end; ``None`` if the deadline passed first."""
    received = b""
    poller = select.poll()  # not select(): ds01d may hold more than 1024 descriptors
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, _REPORT_BYTES)
        if not chunk:
            return received
        received += chunk


def _reap(pid: int) -> None:
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def run_as(
    ids: UserIds,
    work: Callable[[], str],
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    what: str = "the operation",
) -> str:
    """Run ``work`` in a child process with ``ids`` (module docstring) and return the short
    text it returns.

    ``work`` runs after ``fork`` in a process that may have had other threads: it must only
    make system calls (``os`` functions), never log, import, or take a lock.

    Raises:
        UserFsError: ``work`` raised (its ``errno`` and message), could not drop to the
            user's ids, or did not finish within ``timeout_seconds`` (``ETIMEDOUT``; the
            child is killed).
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # pragma: no cover - the child; its outcome is what the parent reports
        os.close(read_end)
        _child(ids, work, write_end)
    os.close(write_end)
    try:
        report = _read_report(read_end, time.monotonic() + timeout_seconds)
    finally:
        os.close(read_end)
    if report is None:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        # A child stuck in the kernel (a hung network filesystem) is reaped when it returns.
        threading.Thread(target=_reap, args=(pid,), daemon=True, name="ds01-userfs-reap").start()
        raise _timed_out(what, timeout_seconds)
    _reap(pid)
    return _outcome(report, what)


def _outcome(report: bytes, what: str) -> str:
    """The text a child reported, or its failure as a ``UserFsError``."""
    code, _, message = report.decode(errors="replace").partition(":")
    if code == _OK:
        return message
    if not code.isdigit():  # killed before it could report (e.g. by the user)
        raise UserFsError(errno.EIO, f"{what} ended without a result")
    raise UserFsError(int(code), message)


def _timed_out(what: str, timeout_seconds: float) -> UserFsError:
    return UserFsError(errno.ETIMEDOUT, f"{what} took longer than {timeout_seconds:g} s")


#: The fork server's client (module docstring); the server is this module run as a program.
_SERVER = ForkServerClient(__spec__.name if __spec__ is not None else __name__)


def start_fork_server() -> bool:
    """Start the fork server now (else it starts on first use); whether it runs."""
    return _SERVER.start()


def stop_fork_server() -> None:
    """End the fork server, if it runs; operations fork for themselves until
    :func:`start_fork_server`."""
    _SERVER.stop()


def _as_user(
    ids: UserIds, operation: str, arguments: list[Any], *, timeout_seconds: float, what: str
) -> str:
    """Run one of :data:`_OPERATIONS` as ``ids`` in a child of the fork server (or of this
    process where none can be reached); like :func:`run_as` otherwise."""
    deadline = time.monotonic() + timeout_seconds
    request = {
        "uid": ids.uid,
        "gid": ids.gid,
        "groups": list(ids.groups),
        "operation": operation,
        "arguments": arguments,
        "deadline": deadline,
    }
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        sent = _SERVER.submit(request, write_end)
    finally:
        os.close(write_end)
    if not sent:
        os.close(read_end)
        work = _OPERATIONS[operation]
        return run_as(ids, lambda: work(*arguments), timeout_seconds=timeout_seconds, what=what)
    try:
        report = _read_report(read_end, deadline)
    finally:
        os.close(read_end)
    if report is None:  # the server kills the child at the same deadline
        raise _timed_out(what, timeout_seconds)
    return _outcome(report, what)


def _replace_in(directory: str, name: str, encoded: str, owner_uid: int, mode: int) -> str:
    """In the child: ``directory/name`` replaced by a new file holding the bytes ``encoded``
    in base64."""
    data = base64.b64decode(encoded)
    fd = open_directory(directory)
    try:
        if os.fstat(fd).st_uid != owner_uid:
            raise OSError(errno.EPERM, f"{directory} is not the user's directory")
        try:
            old = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and not (stat.S_ISREG(old.st_mode) and old.st_nlink == 1):
            raise OSError(
                errno.EEXIST, f"{name} is not a regular file with a single link: left as it is"
            )
        temporary = f".{name}.{os.getpid()}.new"
        out = os.open(temporary, _NEW_FILE_FLAGS, mode, dir_fd=fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            os.close(out)
            os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary, dir_fd=fd)
            raise
        return "written"
    finally:
        os.close(fd)


def replace_file(
    directory: Path,
    name: str,
    data: bytes,
    ids: UserIds,
    *,
    mode: int = 0o644,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Make ``directory/name`` a new regular file holding ``data``, as the user ``ids``.

    ``directory`` must be reachable without symlinks and be the user's own; ``name`` (one
    path component) is replaced by a rename, and refused unless it is missing or a regular
    file with a single link (module docstring).

    Raises:
        UserFsError: refused or failed (``EPERM``, ``EEXIST``, ``EACCES``, ``ENOSPC``,
            ``EDQUOT``, ``ETIMEDOUT``, …), with the reason.
    """
    if not name or "/" in name or name in (".", ".."):
        raise UserFsError(errno.EINVAL, f"not a file name: {name!r}")
    encoded = base64.b64encode(data).decode()
    _as_user(
        ids,
        "replace",
        [str(directory), name, encoded, ids.uid, mode],
        timeout_seconds=timeout_seconds,
        what=f"writing {directory / name}",
    )


def _reach(path: str) -> str:
    """In the child: ``"device:inode:resolved path"`` of the directory ``path`` leads to
    (symlinks followed with the child's rights; the path from the kernel's own name of the
    open descriptor)."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        return f"{st.st_dev}:{st.st_ino}:{os.readlink(f'/proc/self/fd/{fd}')}"
    finally:
        os.close(fd)


def reach_directory(
    path: str, ids: UserIds, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> Reached:
    """The directory the absolute ``path`` leads to when the user ``ids`` follows it, every
    symlink included, with the user's own search rights on each folder on the way.

    A directory the user cannot reach is an error exactly like one that is not there: the
    caller learns nothing the user could not learn herself. A resolved path that does not
    fit the child's report arrives cut short: its identity then differs from the directory's
    (the caller compares, :meth:`Reached.is_open_in`).

    Raises:
        UserFsError: ``ENOENT``, ``EACCES``, ``ENOTDIR``, ``ELOOP``, ``ENAMETOOLONG``,
            ``ETIMEDOUT``, … from the user's own lookup.
    """
    if not path.startswith("/") or "\0" in path:
        raise UserFsError(errno.EINVAL, f"not an absolute path: {path!r}")
    report = _as_user(
        ids, "reach", [path], timeout_seconds=timeout_seconds, what=f"reaching {path}"
    )
    device, inode, resolved = report.split(":", 2)
    return Reached(resolved, int(device), int(inode))


def _mkdir_in(text: str, mode: int) -> str:
    """In the child: the directory ``text`` created; ``"exists"`` if something has that
    name already."""
    path = PurePosixPath(text)
    fd = open_directory(str(path.parent))
    try:
        os.mkdir(path.name, mode, dir_fd=fd)
    except FileExistsError:
        return "exists"
    finally:
        os.close(fd)
    return "created"


def make_directory(
    path: Path,
    ids: UserIds,
    *,
    mode: int = 0o755,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> bool:
    """Create the directory ``path`` as the user ``ids`` (so it is theirs, with no ``chown``);
    ``False`` if the name exists already (whatever it is: the caller checks it).

    Raises:
        UserFsError: the parent cannot be reached without symlinks, or the user may not
            create there (``EACCES``), or it failed otherwise.
    """
    if not path.is_absolute() or path.name in ("", ".", ".."):
        raise UserFsError(errno.EINVAL, f"not an absolute directory path: {path}")
    done = _as_user(
        ids, "mkdir", [str(path), mode], timeout_seconds=timeout_seconds, what=f"creating {path}"
    )
    return done == "created"


#: What a child of the fork server may be asked to do, by name (its arguments: JSON values).
_OPERATIONS: dict[str, Callable[..., str]] = {
    "reach": _reach,
    "mkdir": _mkdir_in,
    "replace": _replace_in,
}


def _child_of_server(request: Mapping[str, Any], report: int) -> NoReturn:
    """A fork server's child: the request's ids and operation (:func:`_as_user`), run as
    :func:`run_as`'s child runs."""
    try:
        ids = UserIds(
            int(request["uid"]), int(request["gid"]), tuple(int(g) for g in request["groups"])
        )
        work = _OPERATIONS[str(request["operation"])]
        arguments = list(request["arguments"])
    except (KeyError, TypeError, ValueError, OverflowError):
        try:
            os.write(report, f"{errno.EINVAL}:a malformed request".encode())
        finally:
            os._exit(0)
    _child(ids, lambda: work(*arguments), report)


__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "Reached",
    "UserFsError",
    "UserIds",
    "make_directory",
    "open_directory",
    "reach_directory",
    "replace_file",
    "run_as",
    "start_fork_server",
    "stat_in",
    "stop_fork_server",
]


if __name__ == "__main__":
    serve_inherited(_child_of_server)
