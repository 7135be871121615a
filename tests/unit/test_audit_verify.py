"""``ds01 audit verify``: every edited, removed or reordered line is found and named by file
and line (``ds01.events.verify``), and the command's output and exit codes."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ds01.cli.main import main
from ds01.events.chain import encode, rotated_files
from ds01.events.log import EventLog
from ds01.events.verify import Problem, verify

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def make_log(log_dir: Path, events: int, *, every: timedelta = timedelta(hours=1)) -> EventLog:
    """``events`` events, ``every`` apart (a week of them fills one file)."""
    times = (START + every * n for n in itertools.count())
    log = EventLog(log_dir / "events.jsonl", clock=times.__next__)
    for i in range(events):
        log.emit("test.event", user="alice", resource=f"r/{i}", details={"i": i})
    return log


def edit_lines(path: Path, change: Callable[[list[bytes]], object]) -> None:
    """Apply ``change`` to the lines of a plain or compressed log file, in place."""
    compressed = path.suffix == ".gz"
    data = path.read_bytes()
    lines = (gzip.decompress(data) if compressed else data).splitlines(keepends=True)
    change(lines)
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if compressed else data)


def set_user(index: int, user: str) -> Callable[[list[bytes]], None]:
    """A change that rewrites one line's ``user``, keeping the line valid JSON."""

    def change(lines: list[bytes]) -> None:
        record = json.loads(lines[index])
        record["user"] = user
        lines[index] = encode(record) + b"\n"

    return change


def only_problem(log_dir: Path) -> Problem:
    report = verify(log_dir)
    assert not report.ok
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    return report.problems[0]


@pytest.fixture
def live(tmp_path: Path) -> Path:
    make_log(tmp_path, 20)
    return tmp_path / "events.jsonl"


def test_an_intact_log_verifies(live: Path) -> None:
    report = verify(live.parent)
    assert report.ok
    assert (report.events, report.first_seq, report.last_seq) == (20, 1, 20)
    assert report.summary() == "OK: 20 events in 1 file, chain intact"
    assert report.chain_start == "seq 1, the first event ever"


def test_an_edited_value_is_found_at_its_line(live: Path) -> None:
    edit_lines(live, set_user(6, "mallory"))
    problem = only_problem(live.parent)
    assert (problem.file, problem.line, problem.seq, problem.kind) == (str(live), 7, 7, "edited")
    assert str(problem).startswith(f"{live}:7: line edited")


def test_a_removed_line_is_found_where_it_was(live: Path) -> None:
    edit_lines(live, lambda lines: lines.pop(9))
    problem = only_problem(live.parent)
    assert (problem.line, problem.seq, problem.kind) == (10, 10, "removed")


def test_swapped_lines_are_found(live: Path) -> None:
    def swap(lines: list[bytes]) -> None:
        lines[4], lines[5] = lines[5], lines[4]

    edit_lines(live, swap)
    problem = only_problem(live.parent)
    assert (problem.line, problem.kind) == (5, "reordered")
    assert f"{live}:6" in problem.message


def test_a_line_moved_far_away_is_found(live: Path) -> None:
    edit_lines(live, lambda lines: lines.insert(15, lines.pop(2)))
    problem = only_problem(live.parent)
    assert (problem.line, problem.kind) == (3, "reordered")


def test_an_edited_seq_is_found(live: Path) -> None:
    def renumber(lines: list[bytes]) -> None:
        record = json.loads(lines[3])
        record["seq"] = 99
        lines[3] = encode(record) + b"\n"

    edit_lines(live, renumber)
    problem = only_problem(live.parent)
    assert (problem.line, problem.kind) == (4, "edited")


@pytest.mark.parametrize(
    ("change", "line", "kind"),
    [
        (lambda lines: lines.insert(8, lines[7]), 9, "duplicate"),
        (lambda lines: lines.insert(8, b"\n"), 9, "empty"),
        (lambda lines: lines.__setitem__(3, lines[3][:30] + b"\n"), 4, "corrupt"),
        (lambda lines: lines.__setitem__(3, b'{"action":"x","ts":"y"}\n'), 4, "corrupt"),
    ],
    ids=["duplicated", "empty", "cut-short", "unchained"],
)
def test_other_damage_is_found(
    live: Path, change: Callable[[list[bytes]], object], line: int, kind: str
) -> None:
    edit_lines(live, change)
    problem = only_problem(live.parent)
    assert (problem.line, problem.kind) == (line, kind)


def test_an_edit_of_the_newest_line_is_found_by_the_next_event(tmp_path: Path) -> None:
    log = make_log(tmp_path, 5)
    live = tmp_path / "events.jsonl"
    edit_lines(live, set_user(4, "mallory"))
    assert verify(tmp_path).ok  # nothing follows it yet
    log.emit("next", user="bob", resource="r")  # ds01d still knows the true hash
    assert only_problem(tmp_path).line == 5


# -- several files ------------------------------------------------------------------------


@pytest.fixture
def rotated_log(tmp_path: Path) -> Path:
    """Three weeks of events, one every 12 hours: two rotated files and the live one."""
    make_log(tmp_path, 36, every=timedelta(hours=12))
    assert len(rotated_files(tmp_path / "events.jsonl")) == 2
    return tmp_path


def test_a_log_across_two_rotations_verifies(rotated_log: Path) -> None:
    report = verify(rotated_log)
    assert report.ok
    assert (len(report.files), report.events, report.last_seq) == (3, 36, 36)


def test_an_edit_inside_a_rotated_file_names_that_file(rotated_log: Path) -> None:
    first = rotated_files(rotated_log / "events.jsonl")[0]
    edit_lines(first, set_user(2, "mallory"))
    problem = only_problem(rotated_log)
    assert (problem.file, problem.line) == (str(first), 3)


def test_an_edit_of_a_rotated_files_last_line_is_found_in_the_next_file(
    rotated_log: Path,
) -> None:
    first = rotated_files(rotated_log / "events.jsonl")[0]
    edit_lines(first, lambda lines: set_user(len(lines) - 1, "mallory")(lines))
    problem = only_problem(rotated_log)
    assert (problem.file, problem.kind) == (str(first), "edited")
    assert f"{rotated_log}/events-" in problem.message


def test_a_rotated_file_deleted_from_the_middle_is_found(rotated_log: Path) -> None:
    _, second = rotated_files(rotated_log / "events.jsonl")
    second.unlink()
    problem = only_problem(rotated_log)
    assert (problem.file, problem.line, problem.kind) == (
        str(rotated_log / "events.jsonl"),
        1,
        "removed",
    )
    assert "rotated file deleted" in problem.message


def test_the_oldest_file_deleted_by_retention_is_not_a_problem(rotated_log: Path) -> None:
    rotated_files(rotated_log / "events.jsonl")[0].unlink()
    report = verify(rotated_log)
    assert report.ok
    assert report.first_seq == 15 and "retention" in report.chain_start


def test_a_broken_compressed_file_is_reported(rotated_log: Path) -> None:
    first = rotated_files(rotated_log / "events.jsonl")[0]
    first.write_bytes(first.read_bytes()[:-20])
    problems = verify(rotated_log).problems
    assert (problems[0].file, problems[0].kind) == (str(first), "unreadable")


def test_a_missing_log_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "nowhere")


# -- the command --------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        main(["audit", "verify", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out + err


def test_the_command_says_ok_and_exits_0(
    live: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS01_LOG_DIR", str(live.parent))
    code, out = run_cli(capsys)
    assert code == 0
    assert "OK: 20 events in 1 file, chain intact" in out


def test_the_command_names_the_tampered_line_and_exits_1(
    live: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_lines(live, set_user(2, "mallory"))
    code, out = run_cli(capsys, "--log-dir", str(live.parent))
    assert code == 1
    said, first_problem = out.splitlines()[:2]
    assert said == f"Verifying the event log in {live.parent} (from the command line)."
    assert first_problem.startswith(f"Tampered: {live}:3: line edited")


def test_the_command_prints_json(live: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_lines(live, lambda lines: lines.pop(4))
    code, out = run_cli(capsys, "--log-dir", str(live.parent), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["problems"][0] | {"message": ""} == {
        "file": str(live),
        "line": 5,
        "seq": 5,
        "kind": "removed",
        "message": "",
    }


@pytest.mark.parametrize("make_dir", [False, True], ids=["no-directory", "no-log-in-it"])
def test_the_command_exits_4_without_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_dir: bool
) -> None:
    log_dir = tmp_path / "log"
    if make_dir:
        log_dir.mkdir()
    code, out = run_cli(capsys, "--log-dir", str(log_dir))
    assert code == 4 and str(log_dir) in out
