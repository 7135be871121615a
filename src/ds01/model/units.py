"""Parsing and formatting of the units used in configuration: byte sizes and CPU counts.

Sizes follow Docker's conventions (``--memory 32g``, ``--shm-size 512m``): a number with an
optional unit ``k``, ``m``, ``g`` or ``t``, case-insensitive, always 1024-based, optionally
followed by ``b`` or ``ib`` (``"16GiB"`` and ``"16gb"`` both mean 16 * 1024**3 bytes).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

#: The largest size accepted: Docker stores byte counts as signed 64-bit integers.
MAX_BYTES = 2**63 - 1

#: The most CPUs a container limit may name; far above any real host, it only stops typos.
MAX_CPUS = 1024.0

_UNIT_FACTORS: dict[str, int] = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}

# Largest unit first: format_bytes picks the first one that expresses the value exactly.
_FORMAT_UNITS: tuple[tuple[str, int], ...] = (("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB))

# Decimal places format_bytes may use before falling back to a smaller unit ("1.25G").
_FORMAT_MAX_DECIMALS = 2

_SIZE_RE = re.compile(
    r"""
    ^\s*
    (?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)   # 32, 1.5, .5
    \s*
    (?:(?P<unit>[kmgt])(?:i?b)?|b)?            # k, kb, kib, ... or a bare b
    \s*$
    """,
    re.IGNORECASE | re.VERBOSE,
)

_SIZE_HINT = "expected a byte count with an optional unit k, m, g or t (1024-based), e.g. '32G'"


def parse_bytes(value: str | int) -> int:
    """Convert a Docker-style size to a number of bytes.

    Accepts a non-negative integer (bytes) or a string such as ``"32G"``, ``"512m"``,
    ``"1.5g"``, ``"16GiB"`` or ``"1024"``. Units are 1024-based and case-insensitive.
    A fractional result is rounded down to whole bytes, as Docker does.

    Raises ``ValueError`` with a message that quotes the input for negative numbers,
    anything that is not a size, and sizes beyond ``MAX_BYTES``.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    if isinstance(value, int):
        size = value
    else:
        if value.strip().startswith("-"):
            raise ValueError(f"invalid size {value!r}: a size cannot be negative")
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
        factor = _UNIT_FACTORS[(match["unit"] or "").lower()]
        size = int(Decimal(match["number"]) * factor)  # the regex admits only plain decimals
    if size < 0:
        raise ValueError(f"invalid size {value!r}: a size cannot be negative")
    if size > MAX_BYTES:
        raise ValueError(f"invalid size {value!r}: larger than the maximum of {MAX_BYTES} bytes")
    return size


def format_bytes(n: int) -> str:
    """Write a number of bytes in the shortest exact Docker-style form.

    Uses the largest unit in which the value is at least 1 and exact to two decimal places:
    ``34359738368`` → ``"32G"``, ``1610612736`` → ``"1.5G"``, ``536870912`` → ``"512M"``,
    ``1000`` → ``"1000"``. ``parse_bytes(format_bytes(n)) == n`` for every ``n >= 0``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"cannot format {n!r} as a size: expected a non-negative integer")
    scale = 10**_FORMAT_MAX_DECIMALS
    for suffix, factor in _FORMAT_UNITS:
        if n >= factor and (n * scale) % factor == 0:
            number = Decimal(n * scale // factor) / scale  # exact: "32", "1.5", "1.25"
            return f"{number:f}{suffix}"
    return str(n)


def parse_cpus(value: str | int | float) -> float:
    """Convert a CPU count (``--cpus`` style: ``8``, ``"0.5"``, ``2.5``) to a float.

    The count is a number of CPUs (1.0 = one full core's time). It must be greater than 0
    and at most ``MAX_CPUS``; booleans, NaN, infinity and non-numeric text raise ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid CPU count {value!r}: expected a number such as 8 or 0.5")
    try:
        cpus = float(value)
    except ValueError:
        raise ValueError(
            f"invalid CPU count {value!r}: expected a number such as 8 or 0.5"
        ) from None
    if not math.isfinite(cpus):
        raise ValueError(f"invalid CPU count {value!r}: must be a finite number")
    if cpus <= 0:
        raise ValueError(f"invalid CPU count {value!r}: must be greater than 0")
    if cpus > MAX_CPUS:
        raise ValueError(f"invalid CPU count {value!r}: must be at most {MAX_CPUS:g}")
    return cpus


def format_duration(seconds: float) -> str:
    """A duration for people: ``45 s``, ``14 min``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{max(seconds, 0):.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
