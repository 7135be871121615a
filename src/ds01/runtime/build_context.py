"""The build-context packer: a tar of a user's directory, read as that user.

ds01d never reads a user's build context itself: ``tar`` runs with the user's uid, gid and
groups, so a build sends exactly what the user could read. The archive is spooled to an
unlinked file (below ds01d's state directory), bounded in size and in time; the Dockerfile
ds01d resolved is then appended to it under a name of its own (:func:`add_dockerfile`).

``remove-user --archive`` packs the user's workspace the same way (:func:`archive_as_user`):
a symbolic link the user swaps in while it is read leads ``tar`` only to what the user
could read anyway, never to root's files.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ds01.errors import Conflict, PermissionDenied, QuotaExceeded
from ds01.model.units import format_bytes
from ds01.runtime.identity import UnixUser

#: Largest build context ds01d accepts (the archive of the directory).
MAX_CONTEXT_BYTES = 4 * 1024**3
#: Longest ds01d waits for the archive of a build context.
CONTEXT_TIMEOUT_SECONDS = 240.0
_TAR_PATH = "/usr/bin:/bin"
_STDERR_KEEP = 64 * 1024
_CHUNK_BYTES = 1 << 20


class Sink(Protocol):
    """Where tar's output goes: a file, or a compressor writing to one."""

    def write(self, data: bytes, /) -> int: ...


@dataclass
class _TarRun:
    """What one ``tar`` run gave: its exit code, its error text, and whether it was cut."""

    code: int
    errors: str
    too_big: bool
    timed_out: bool


def context_archive(user: UnixUser, context: Path, spool: IO[bytes]) -> tuple[IO[bytes], list[str]]:
    """A tar of ``context`` made by ``tar`` running as ``user``, in ``spool`` (an empty
    file, closed here if this fails); and the warnings tar gave. Files the user cannot
    read make it fail.

    Raises:
        PermissionDenied: something in the context is unreadable to the user.
        QuotaExceeded: the archive is larger than ``MAX_CONTEXT_BYTES``.
        Conflict: tar failed otherwise, or took longer than ``CONTEXT_TIMEOUT_SECONDS``.
    """
    # Owner root in the archive, as `docker build` sends it.
    arguments = ["-C", str(context), "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", "."]
    try:
        tar = shutil.which("tar", path=_TAR_PATH)
        if tar is None:
            raise Conflict("ds01d cannot pack the build context: `tar` is not installed.")
        run = _run_tar(
            _start_tar(tar, user, arguments), spool, MAX_CONTEXT_BYTES, CONTEXT_TIMEOUT_SECONDS
        )
        lines = [line for line in run.errors.splitlines() if line.strip()]
        _check_tar_run(run, lines, user, context)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, lines if run.code == 1 else []


def archive_as_user(user: UnixUser, parent: Path, member: str, out: Sink) -> list[str]:
    """Write to ``out`` a tar of ``parent/member``, made by ``tar`` running as ``user``, each
    name below ``user.name/`` (``alice/workspace/…``). Symbolic links are stored as links,
    never followed; owners are kept; sparse files are stored as such (``--sparse``: their
    holes found with SEEK_HOLE, neither read nor stored, so ``truncate -s 15T`` costs no
    time). No bound on size or time otherwise (the admin asked for it all).

    Returns tar's complaints about what it could not read as the user (left out of the
    archive); empty when everything is in it.

    Raises:
        Conflict: ``tar`` is not installed, or failed beyond files it could not read.
    """
    tar = shutil.which("tar", path=_TAR_PATH)
    if tar is None:
        raise Conflict("ds01d cannot pack the workspace: `tar` is not installed.")
    # S: symbolic link targets keep their text; member and hard link names get the prefix.
    prefix = f"--transform=s|^|{user.name}/|S"
    arguments = ["-C", str(parent), prefix, "--sparse", "-cf", "-", "--", member]
    run = _run_tar(_start_tar(tar, user, arguments), out, None, None)
    lines = [line for line in run.errors.splitlines() if line.strip()]
    if run.code not in (0, 1, 2):  # 1: a file changed while read; 2: some were unreadable
        raise Conflict(f"tar failed (exit {run.code}) packing {parent / member}: {lines[:5]}")
    return lines if run.code else []


def _start_tar(tar: str, user: UnixUser, arguments: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [tar, *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env={"PATH": _TAR_PATH, "LC_ALL": "C"},
        user=user.uid,
        group=user.gid,
        extra_groups=os.getgrouplist(user.name, user.gid),
        start_new_session=True,
    )


def _run_tar(
    process: subprocess.Popen[bytes],
    spool: Sink,
    max_bytes: int | None,
    timeout_seconds: float | None,
) -> _TarRun:
    """Copy ``process``'s archive into ``spool`` until it ends, grows beyond ``max_bytes``
    or takes longer than ``timeout_seconds`` (then it is killed; ``None``: no bound); its
    error output is kept (the first ``_STDERR_KEEP`` bytes)."""
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    errors = bytearray()

    def read_errors() -> None:
        for chunk in iter(lambda: stderr.read(4096), b""):
            if len(errors) < _STDERR_KEEP:
                errors.extend(chunk)

    reader = threading.Thread(target=read_errors, daemon=True)
    reader.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    timer = threading.Timer(timeout_seconds, expire) if timeout_seconds is not None else None
    if timer is not None:
        timer.start()
    size, too_big = 0, False
    try:
        for chunk in iter(lambda: stdout.read(_CHUNK_BYTES), b""):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                too_big = True
                process.kill()
                break
            spool.write(chunk)  # may refuse (a spool file on a disk running low)
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        stdout.close()
        reader.join(timeout=5)
    return _TarRun(code, errors.decode("utf-8", "replace"), too_big, timed_out.is_set())


def _check_tar_run(run: _TarRun, lines: list[str], user: UnixUser, context: Path) -> None:
    """Raise what a failed or cut ``tar`` run means for the user; nothing if it succeeded."""
    if run.too_big:
        raise QuotaExceeded(
            f"Your build context {context} is larger than {format_bytes(MAX_CONTEXT_BYTES)}. "
            "Keep data sets and checkpoints out of it (mount them with --data when you "
            "create a container), or build from a smaller directory (--context)."
        )
    if run.timed_out:
        raise Conflict(
            f"Reading your build context {context} took longer than "
            f"{CONTEXT_TIMEOUT_SECONDS:g} s. Build from a smaller directory (--context)."
        )
    if run.code not in (0, 1):  # 1: a file changed while it was read (a warning)
        shown = "\n  ".join(lines[:10]) + ("\n  …" if len(lines) > 10 else "")
        if "Permission denied" in run.errors:
            raise PermissionDenied(
                f"ds01 reads your build context as you ({user.name}), and you cannot read "
                f"everything in {context}:\n  {shown}\nMake those files readable to you, or "
                "move them out of the build context."
            )
        raise Conflict(f"Could not read your build context {context}:\n  {shown}")


def add_dockerfile(archive: IO[bytes], text: str) -> str:
    """Append ``text`` to the build context's ``archive`` as a Dockerfile under a name no
    member has, and return that name (what Docker is told to build from).

    A new name rather than a second member under the user's Dockerfile's name: Docker then
    reads exactly this text, whatever its extraction does with duplicate members. Like any
    Dockerfile, Docker reads it before it applies ``.dockerignore``."""
    archive.seek(0)
    try:
        with tarfile.open(fileobj=archive, mode="a") as tar:
            taken = set(tar.getnames())
            name = f".ds01-Dockerfile-{uuid.uuid4().hex[:12]}"
            while f"./{name}" in taken or name in taken:  # pragma: no cover - 48 random bits
                name = f".ds01-Dockerfile-{uuid.uuid4().hex[:12]}"
            data = text.encode("utf-8")
            member = tarfile.TarInfo(f"./{name}")
            member.size, member.mode, member.mtime = len(data), 0o644, int(time.time())
            tar.addfile(member, io.BytesIO(data))
    except tarfile.TarError as exc:
        raise Conflict(f"Could not write to the archive of your build context: {exc}") from exc
    finally:
        archive.seek(0)
    return name
