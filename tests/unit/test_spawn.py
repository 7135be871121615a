"""``ds01.runtime.spawn.run_captured``: a command's exit code and both outputs, as
``subprocess.run(..., capture_output=True, text=True)`` gives them, on real processes."""

from __future__ import annotations

import os
import time

import pytest

from ds01.runtime.spawn import run_captured


def test_both_outputs_and_the_exit_code() -> None:
    assert run_captured(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10) == (
        3,
        "out\n",
        "err\n",
    )


def test_a_signal_is_a_negative_code() -> None:
    assert run_captured(["sh", "-c", "kill -TERM $$"], timeout=10)[0] == -15


def test_large_outputs_on_both_pipes_do_not_block() -> None:
    """More than a pipe holds on each, standard error first."""
    script = "head -c 300000 /dev/zero | tr '\\0' e >&2; head -c 300000 /dev/zero | tr '\\0' o"
    code, out, err = run_captured(["sh", "-c", script], timeout=30)
    assert (code, len(out), len(err)) == (0, 300000, 300000)
    assert set(out) == {"o"} and set(err) == {"e"}


def test_the_environment_given_is_the_whole_environment() -> None:
    code, out, _ = run_captured(["/usr/bin/env"], timeout=10, env={"ONLY": "this"})
    assert (code, out) == (0, "ONLY=this\n")


def test_path_is_searched_and_a_missing_program_is_file_not_found() -> None:
    assert run_captured(["true"], timeout=10)[0] == 0
    with pytest.raises(FileNotFoundError):
        run_captured(["no-such-program-ds01"], timeout=10)


def test_a_timeout_kills_the_command() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_captured(["sh", "-c", "echo $$; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10


def test_no_descriptor_is_left_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        run_captured(["true"], timeout=10)
    with pytest.raises(FileNotFoundError):
        run_captured(["no-such-program-ds01"], timeout=10)
    assert len(os.listdir("/proc/self/fd")) == before
