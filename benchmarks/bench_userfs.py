"""What writing in a user's directory as the user costs (``ds01.runtime.userfs``).

ds01d writes a notice file at each idle warning and stop, and creates a missing default
workspace at ``container-create``. Both now run in a child that drops to the user's ids;
this compares, in one process with the RSS of a small daemon:

- ``replace_file as the user``: fork, setgroups/setresgid/setresuid, a symlink-free walk
  to the directory, a new file renamed over the old one;
- ``root write, O_TRUNC + fchown``: what ds01d did before (unsafe; the baseline only);
- ``stat_in``: the keep-alive file's time read by root through a symlink-free walk (each
  running container, every lifecycle pass), against ``os.lstat`` of the joined path.

Needs root and a user to act as (``--user``, default ``nobody``). Medians over ``--rounds``.
Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_userfs.py [--user NAME] [--rounds N]``
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ds01.runtime.userfs import UserIds, replace_file, stat_in
from quick import parse_args


def median_ms(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="nobody")
    parser.add_argument("--rounds", type=int, default=200)
    args = parse_args(parser, {"rounds": 2})
    user = pwd.getpwnam(args.user)
    ids = UserIds.of(user.pw_name, user.pw_uid, user.pw_gid)
    top = Path(tempfile.mkdtemp(prefix="ds01-bench-userfs-"))
    top.chmod(0o755)
    directory = top / "workspace"
    directory.mkdir()
    os.chown(directory, user.pw_uid, user.pw_gid)
    (directory / ".keep-alive").touch()
    os.chown(directory / ".keep-alive", user.pw_uid, user.pw_gid)
    ballast = bytearray(64 << 20)  # a daemon-sized process: fork copies its page tables
    text = b"ds01: your container 'x' is idle and will be stopped at 12:00\n"

    def root_write() -> None:
        fd = os.open(directory / "root-notice", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchown(fd, user.pw_uid, user.pw_gid)
            os.write(fd, text)
        finally:
            os.close(fd)

    try:
        rows = [
            ("replace_file as the user", lambda: replace_file(directory, "notice", text, ids)),
            ("root write, O_TRUNC + fchown", root_write),
            ("stat_in (keep-alive time)", lambda: stat_in(directory, ".keep-alive", user.pw_uid)),
            ("os.lstat (before)", lambda: os.lstat(directory / ".keep-alive")),
        ]
        print(f"{'operation':32} median ms ({args.rounds} rounds, RSS + {len(ballast) >> 20} MiB)")
        for name, action in rows:
            print(f"{name:32} {median_ms(action, args.rounds):8.3f}")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
