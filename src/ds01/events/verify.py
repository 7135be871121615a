"""Check the audit log's hash chain: ``ds01 audit verify``. Reads the files, writes nothing.

The files are read in chain order (``ds01.events.chain``): the rotated files, oldest first,
then the live file. For each line the checker compares its ``prev`` with the SHA-256 of the
line before it and its ``seq`` with the numbering so far, and says what broke and where:

- ``corrupt``: the line is not an intact event (not JSON, or no valid ``seq``/``prev``);
- ``edited``: the line's hash does not match the ``prev`` its successor recorded (reported
  at the edited line), or its ``seq`` differs from the one its intact ``prev`` implies;
- ``removed``: numbers are missing before a line (lines, or a whole rotated file, deleted);
- ``reordered``: a missing number turns up later: the lines are out of order;
- ``duplicate``: a number appears twice (a line copied or inserted);
- ``empty``: an empty line; ``unreadable``: a file cannot be read (e.g. broken gzip).

The first chained line of the oldest file begins the chain: ``prev`` is the genesis value
for the first event ever, or the hash of a line in a rotated file that retention deleted
(not a problem). Lines ds01 wrote before the chain existed (no ``seq``, no ``prev``) are
accepted only before it begins, and counted as legacy events.

A damaged line does not hide later problems: the check resumes after it, so one edit is
reported once, at the line that was edited. (A changed ``prev`` field cannot be told apart
from an edit of the line before it, so both lines are reported then.)

What no hash chain can show (see ``ds01.events.log``): an edit of the newest line, or lines
cut off the end, while ds01d is stopped (while it runs, its next event reveals them); the
oldest rotated files deleted (that looks like retention); a chain recomputed by root.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ds01.events import chain
from ds01.paths import EVENTS_FILE

#: How many recent lines' hashes the checker remembers, to recognise reordered lines.
RECENT_LINES = 65_536
#: Attempts when a file disappears while it is read (a rotation happened meanwhile).
ATTEMPTS = 3

Position = tuple[int, int]  # (index of the file in chain order, line number from 1)


@dataclass(frozen=True)
class Problem:
    """One finding. ``line`` counts from 1 in ``file``; ``seq`` is the event number concerned,
    if known; ``kind`` is one of the kinds in this module's docstring."""

    file: str
    line: int
    seq: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "seq": self.seq,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The result of :func:`verify`.

    Attributes:
        log_dir: the directory checked.
        files: the files read, in chain order.
        events: non-empty lines read.
        legacy_events: of those, lines from before the hash chain existed.
        first_seq: the number of the chain's first event (``None``: no event).
        last_seq: the highest event number seen.
        chain_start: how the chain begins, in words.
        problems: every finding, in file and line order; empty when the chain is intact.
    """

    log_dir: str
    files: tuple[str, ...]
    events: int
    legacy_events: int
    first_seq: int | None
    last_seq: int | None
    chain_start: str
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """``OK: N events in M files, chain intact`` or ``Tampered: <file>:<line>: <what>``."""
        if self.problems:
            return f"Tampered: {self.problems[0]}"
        files = "file" if len(self.files) == 1 else "files"
        return f"OK: {self.events} events in {len(self.files)} {files}, chain intact"

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "log_dir": self.log_dir,
            "files": list(self.files),
            "events": self.events,
            "legacy_events": self.legacy_events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "chain_start": self.chain_start,
            "problems": [p.to_dict() for p in self.problems],
        }


class _Vanished(Exception):
    """A listed file disappeared while the log was being checked."""


def verify(log_dir: Path, live_name: str = EVENTS_FILE) -> VerifyReport:
    """Check the hash chain of the event log in ``log_dir`` (live file ``live_name``).

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        PermissionError: a file or the directory cannot be read by this user.
    """
    live = log_dir / live_name
    for attempt in range(1, ATTEMPTS + 1):
        files = chain.chain_files(live)
        try:
            return _check(log_dir, files, last_attempt=attempt == ATTEMPTS)
        except _Vanished:
            continue
    raise AssertionError("unreachable: the last attempt reports a vanished file")


@dataclass(frozen=True)
class _Line:
    digest: str
    seq: int | None
    pos: Position


@dataclass
class _Gap:
    """Numbers ``lo``..``hi`` missing before the line at ``pos``, whose ``seq`` is ``seq``."""

    lo: int
    hi: int
    pos: Position
    seq: int


def _check(log_dir: Path, files: list[Path], *, last_attempt: bool) -> VerifyReport:
    checker = _Checker([str(f) for f in files])
    for index, path in enumerate(files):
        number = 0
        try:
            for number, raw in enumerate(chain.iter_lines(path), start=1):
                checker.line((index, number), raw)
        except FileNotFoundError:
            if not last_attempt:
                raise _Vanished from None
            checker.report((index, number + 1), None, "unreadable", "vanished while read")
        except PermissionError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            checker.report((index, number + 1), None, "unreadable", f"cannot read: {reason}")
    return checker.finish(str(log_dir))


class _Checker:
    """Follows the chain line by line; see the module docstring."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.found: list[tuple[Position, Problem]] = []
        self.flagged: set[Position] = set()
        self.gaps: list[_Gap] = []
        self.recent: OrderedDict[int, _Line] = OrderedDict()
        self.prev: _Line | None = None  # the line physically before
        self.high: int | None = None  # the highest seq so far
        self.events = 0
        self.legacy = 0
        self.first_seq: int | None = None
        self.start = "no events"

    def where(self, pos: Position) -> str:
        return f"{self.names[pos[0]]}:{pos[1]}"

    def report(
        self, pos: Position, seq: int | None, kind: str, message: str, *, once: bool = False
    ) -> None:
        """Record a problem; with ``once``, not if that line already has one."""
        if once and pos in self.flagged:
            return
        self.flagged.add(pos)
        self.found.append((pos, Problem(self.names[pos[0]], pos[1], seq, kind, message)))

    def line(self, pos: Position, raw: bytes) -> None:
        if not raw:
            self.report(pos, None, "empty", "empty line (ds01d never writes one): inserted")
            return
        self.events += 1
        digest = chain.line_hash(raw)
        fields = chain.chain_fields(raw)
        if fields is not None and fields.seq is None and self.high is None:
            self.legacy += 1
            self.prev = _Line(digest, None, pos)
            return
        if fields is None or fields.seq is None or fields.prev is None:
            seq = None if self.high is None else self.high + 1  # it took one number
            if fields is None:
                message = "not an intact event line: cut short, or edited"
            else:
                message = "line without seq and prev inside the chain: inserted"
            self.report(pos, seq, "corrupt", message)
            self.advance(digest, seq, pos)
            return
        self.chained(pos, digest, fields.seq, fields.prev)

    def chained(self, pos: Position, digest: str, seq: int, prev: str) -> None:
        before = self.prev
        if self.high is None:
            self.begin(pos, seq, prev)
        elif before is not None and prev == before.digest:
            # It truly follows the line before it, so its number must follow too.
            if before.seq is not None and seq != before.seq + 1:
                self.report(
                    pos,
                    seq,
                    "edited",
                    f"seq edited: {seq}, but this line follows seq {before.seq}",
                    once=True,
                )
                seq = before.seq + 1
        elif seq == self.high + 1:
            self.check_link(pos, seq, prev, strict=True)
        elif seq > self.high + 1:
            self.gaps.append(_Gap(self.high + 1, seq - 1, pos, seq))
        else:
            if not self.fill(pos, seq):
                first = self.recent.get(seq)
                also = f" (also at {self.where(first.pos)})" if first else ""
                self.report(pos, seq, "duplicate", f"seq {seq} appears again{also}: inserted")
            self.check_link(pos, seq, prev, strict=False)
        self.advance(digest, seq, pos)

    def begin(self, pos: Position, seq: int, prev: str) -> None:
        """The first chained line."""
        self.first_seq = seq
        before = self.prev
        if before is not None:  # legacy or damaged lines precede it
            if prev != before.digest:
                self.report(before.pos, None, "edited", self.edited(pos), once=True)
            self.start = f"after {self.legacy} line(s) written before the hash chain existed"
        elif prev == chain.GENESIS:
            self.start = f"seq {seq}, the first event ever"
        else:
            self.start = f"seq {seq} at {self.where(pos)}; older events were deleted by retention"

    def edited(self, successor: Position) -> str:
        return f"line edited: its hash does not match prev of {self.where(successor)}"

    def check_link(self, pos: Position, seq: int, prev: str, *, strict: bool) -> None:
        """Compare ``prev`` with the hash of the line numbered ``seq - 1``, if known."""
        known = self.recent.get(seq - 1)
        if known is not None and known.digest != prev:
            self.report(known.pos, seq - 1, "edited", self.edited(pos), once=True)
        elif known is None and strict:
            self.report(pos, seq, "edited", "prev matches no line before it: edited", once=True)

    def fill(self, pos: Position, seq: int) -> bool:
        """If ``seq`` was missing, it was out of order: say so. Returns whether it was."""
        for index, gap in enumerate(self.gaps):
            if gap.lo <= seq <= gap.hi:
                message = f"out of order: seq {gap.seq} stands before seq {seq} ({self.where(pos)})"
                self.report(gap.pos, gap.seq, "reordered", message, once=True)
                parts = [
                    _Gap(gap.lo, seq - 1, gap.pos, gap.seq),
                    _Gap(seq + 1, gap.hi, gap.pos, gap.seq),
                ]
                self.gaps[index : index + 1] = [p for p in parts if p.lo <= p.hi]
                return True
        return False

    def advance(self, digest: str, seq: int | None, pos: Position) -> None:
        self.prev = _Line(digest, seq, pos)
        if seq is None:
            return
        if self.high is None or seq > self.high:
            self.high = seq
        if seq not in self.recent:
            self.recent[seq] = self.prev
            if len(self.recent) > RECENT_LINES:
                self.recent.popitem(last=False)

    def finish(self, log_dir: str) -> VerifyReport:
        for gap in self.gaps:
            count = gap.hi - gap.lo + 1
            numbers = f"seq {gap.lo}" if count == 1 else f"seq {gap.lo}-{gap.hi}"
            message = f"{count} event(s) missing before this line ({numbers}): removed"
            if gap.pos[1] == 1 and gap.pos[0] > 0:
                message += ", or a rotated file deleted"
            self.report(gap.pos, gap.lo, "removed", message)
        self.found.sort(key=lambda item: item[0])
        return VerifyReport(
            log_dir=log_dir,
            files=tuple(self.names),
            events=self.events,
            legacy_events=self.legacy,
            first_seq=self.first_seq,
            last_seq=self.high,
            chain_start=self.start,
            problems=tuple(problem for _, problem in self.found),
        )
