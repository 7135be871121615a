"""A command run to its end with its output captured, without the ``subprocess`` module.

``subprocess`` loads ``threading``, ``selectors``, ``signal``, ``contextlib`` and ``locale``:
about 4 ms, a tenth of a login node's ``container-list``, whose budget is a bare ``squeue``'s
time (at most 3 x). ``run_captured`` does what ``subprocess.run(argv, capture_output=True,
text=True, timeout=T)`` does for Slurm's tools (``ds01.runtime.slurm``) with ``os`` and
``select`` alone: ``posix_spawnp`` (``PATH`` searched), both pipes read as they fill (a
chatty standard error cannot block the command), the child killed and reaped on a timeout or
an interruption.
"""

from __future__ import annotations

import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_CHUNK = 65536


def run_captured(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``argv`` (standard input inherited; ``env``: its whole environment, else this
    process's) and wait for it: its exit code (``-N`` when signal N ended it) and its
    standard output and error, decoded as UTF-8 (an undecodable byte replaced).

    Raises:
        FileNotFoundError: (and other ``OSError``) the program could not be started.
        TimeoutError: it ran longer than ``timeout`` seconds (it was killed).
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            os.environ if env is None else dict(env),
            file_actions=[(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)],
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    try:
        _read_all(chunks, time.monotonic() + timeout)
    except BaseException:  # the timeout, or an interruption: no child left behind
        os.kill(pid, 9)  # SIGKILL (the signal module alone would cost a start-up more)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(out_r)
        os.close(err_r)
    _, status = os.waitpid(pid, 0)
    out, err = (b"".join(chunks[fd]).decode(errors="replace") for fd in (out_r, err_r))
    return os.waitstatus_to_exitcode(status), out, err


def _read_all(chunks: dict[int, list[bytes]], deadline: float) -> None:
    """Read every pipe of ``chunks`` (its read end → what came) until each is closed."""
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    open_fds = len(chunks)
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        for fd, _ in poller.poll(left * 1000):
            data = os.read(fd, _CHUNK)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                open_fds -= 1
