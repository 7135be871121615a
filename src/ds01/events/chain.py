"""The hash chain and the file layout shared by the writer (``log``) and the checker (``verify``).

Standard library only: ``ds01 audit verify`` imports this module in the CLI process.

Lines
    Every line is the canonical JSON of one event: keys sorted, no spaces, ASCII only
    (:func:`encode`), so anyone can reproduce it. Besides the event schema a
    line carries ``seq``, a number counting events from 1 across every file, and ``prev``,
    the hex SHA-256 of the previous line's exact bytes without its newline
    (:func:`line_hash`). The first line ever has ``prev`` = :data:`GENESIS`.

Files
    ``<dir>/events.jsonl`` is the live file. Rotated files are gzip-compressed and named
    after the UTC date of their first event and that event's ``seq``:
    ``events-20260102-000000000001.jsonl.gz`` (:func:`rotated_name`); a name that is taken
    gets a ``.N`` suffix before ``.jsonl.gz``. Their order is the order of that ``seq``
    (:func:`rotated_files`), then the live file. Lines of a file that ds01 wrote before the
    chain existed have neither ``seq`` nor ``prev`` ("legacy" lines).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from datetime import datetime
    from io import BufferedIOBase

#: ``prev`` of the first line ever written.
GENESIS = "0" * 64
#: Mode of every event log file: owner (root) reads and writes, the admin group reads.
FILE_MODE = 0o640
LIVE_SUFFIX = ".jsonl"
ROTATED_SUFFIX = ".jsonl.gz"
#: Width of the zero-padded ``seq`` in rotated file names, so that ``ls`` sorts them.
SEQ_DIGITS = 12

_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_ROTATED_RE = re.compile(r"-(\d{8})-(\d+)(?:\.(\d+))?" + re.escape(ROTATED_SUFFIX))


def line_hash(raw: bytes) -> str:
    """Hex SHA-256 of one line's bytes (without its newline): the next line's ``prev``."""
    return hashlib.sha256(raw).hexdigest()


def encode(record: Mapping[str, object]) -> bytes:
    """The canonical line for ``record`` (no newline). Values JSON cannot hold become ``str``."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return text.encode("ascii")


@dataclass(frozen=True)
class ChainFields:
    """What one parsed line says about the chain.

    Attributes:
        seq: its number, or ``None`` for a legacy line (written before the chain existed).
        prev: the hash it records of the line before it (``None`` for a legacy line).
        ts: its ``ts`` field, if it is a string.
    """

    seq: int | None
    prev: str | None
    ts: str | None


def chain_fields(raw: bytes) -> ChainFields | None:
    """Parse one line; ``None`` if it is not an event line (not JSON, or bad ``seq``/``prev``)."""
    try:
        obj = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(obj, dict):
        return None
    ts = obj.get("ts")
    ts = ts if isinstance(ts, str) else None
    seq, prev = obj.get("seq"), obj.get("prev")
    if seq is None and prev is None:
        return ChainFields(None, None, ts) if "action" in obj and ts is not None else None
    if type(seq) is not int or seq < 1 or not isinstance(prev, str):
        return None
    if not _HEX64_RE.fullmatch(prev):
        return None
    return ChainFields(seq, prev, ts)


def live_stem(live: Path) -> str:
    """``events`` for ``events.jsonl``: the prefix of the rotated files' names."""
    name = live.name
    return name[: -len(LIVE_SUFFIX)] if name.endswith(LIVE_SUFFIX) else name


def rotated_name(live: Path, start: datetime, first_seq: int, copy: int = 0) -> str:
    """The name of a rotated file whose first event has ``first_seq`` and was written at
    ``start`` (its UTC date is used); ``copy`` > 0 tells apart names that would collide."""
    suffix = f".{copy}" if copy else ""
    date = start.strftime("%Y%m%d")
    return f"{live_stem(live)}-{date}-{first_seq:0{SEQ_DIGITS}d}{suffix}{ROTATED_SUFFIX}"


def _rotated_key(live: Path, path: Path) -> tuple[int, int] | None:
    stem = live_stem(live)
    name = path.name
    if not name.startswith(stem):
        return None
    match = _ROTATED_RE.fullmatch(name, len(stem))
    if match is None:
        return None
    return int(match.group(2)), int(match.group(3) or 0)


def rotated_files(live: Path) -> list[Path]:
    """The rotated files next to ``live``, oldest first (by the ``seq`` in their names).

    Raises:
        OSError: the directory cannot be listed (``FileNotFoundError`` if it is missing).
    """
    keyed = []
    for path in live.parent.iterdir():
        key = _rotated_key(live, path)
        if key is not None:
            keyed.append((key, path))
    keyed.sort()
    return [path for _, path in keyed]


def chain_files(live: Path) -> list[Path]:
    """Every file of the chain in order: the rotated files, then ``live`` if it exists."""
    files = rotated_files(live)
    if live.exists():
        files.append(live)
    return files


def iter_lines(path: Path) -> Iterator[bytes]:
    """The lines of a plain or gzip-compressed (``*.gz``) file, each without its newline.

    Raises:
        OSError: the file cannot be read, or (``gzip.BadGzipFile``) is not valid gzip.
        EOFError: a compressed file is cut short.
    """
    with _open(path) as stream:
        for line in stream:
            yield _strip_newline(line)


def first_line(path: Path) -> bytes | None:
    """The first line of a plain or compressed file (no newline), ``None`` if it is empty.

    Raises:
        OSError, EOFError: as :func:`iter_lines`.
    """
    with _open(path) as stream:
        line = stream.readline()
    return _strip_newline(line) if line else None


def _open(path: Path) -> BufferedIOBase:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _strip_newline(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\n") else line
