"""Sizes and CPU counts as written in configuration files."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.model.units import GIB, KIB, MAX_BYTES, MIB, TIB, format_bytes, parse_bytes, parse_cpus


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32G", 32 * GIB),
        ("32g", 32 * GIB),
        ("512m", 512 * MIB),
        ("512M", 512 * MIB),
        ("1.5g", 1536 * MIB),
        ("1024", 1024),
        ("16GiB", 16 * GIB),
        ("16gib", 16 * GIB),
        ("16GB", 16 * GIB),
        ("4k", 4 * KIB),
        ("2t", 2 * TIB),
        ("100b", 100),
        ("0", 0),
        (".5k", 512),
        (" 8G ", 8 * GIB),
        ("8 G", 8 * GIB),
        (2048, 2048),
        (0, 0),
    ],
)
def test_parse_bytes_accepts_docker_sizes(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_parse_bytes_rounds_fractional_bytes_down() -> None:
    assert parse_bytes("0.3k") == 307  # 307.2 bytes


@pytest.mark.parametrize(
    "bad",
    ["", "G", "abc", "32X", "32 GB extra", "1ib", "1e3", "1,5g", "0x10", "--1", "32GG", "1.2.3g"],
)
def test_parse_bytes_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_bytes(bad)


@pytest.mark.parametrize("negative", ["-1", "-32G", " -0.5g", -1])
def test_parse_bytes_rejects_negative_sizes(negative: str | int) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_bytes(negative)


@pytest.mark.parametrize("wrong_type", [True, False, 1.5, None, [1]])
def test_parse_bytes_rejects_other_types(wrong_type: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_bytes(wrong_type)  # type: ignore[arg-type]


def test_parse_bytes_rejects_sizes_docker_cannot_store() -> None:
    assert parse_bytes(MAX_BYTES) == MAX_BYTES
    with pytest.raises(ValueError, match="larger than the maximum"):
        parse_bytes("9000000t")
    with pytest.raises(ValueError, match="larger than the maximum"):
        parse_bytes(MAX_BYTES + 1)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (32 * GIB, "32G"),
        (1536 * MIB, "1.5G"),
        (1280 * MIB, "1.25G"),
        (512 * MIB, "512M"),
        (2 * TIB, "2T"),
        (1024, "1K"),
        (1000, "1000"),
        (0, "0"),
        (GIB + 1, str(GIB + 1)),
    ],
)
def test_format_bytes_writes_the_shortest_exact_form(n: int, expected: str) -> None:
    assert format_bytes(n) == expected


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_format_bytes_rejects_non_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_bytes(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_format_bytes_round_trips(n: int) -> None:
    assert parse_bytes(format_bytes(n)) == n


@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_format_bytes_is_a_fixed_point(n: int) -> None:
    text = format_bytes(n)
    assert format_bytes(parse_bytes(text)) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8, 8.0), ("8", 8.0), ("0.5", 0.5), (2.5, 2.5), (" 4 ", 4.0), (1024, 1024.0)],
)
def test_parse_cpus_accepts_positive_counts(value: str | float, expected: float) -> None:
    assert parse_cpus(value) == expected


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (0, "greater than 0"),
        (-1, "greater than 0"),
        ("-0.5", "greater than 0"),
        (1025, "at most 1024"),
        (math.inf, "finite"),
        (math.nan, "finite"),
        ("nan", "finite"),
        ("eight", "expected a number"),
        ("", "expected a number"),
        (True, "expected a number"),
        (None, "expected a number"),
    ],
)
def test_parse_cpus_rejects_bad_counts(bad: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cpus(bad)  # type: ignore[arg-type]
