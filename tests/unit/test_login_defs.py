"""``UID_MIN`` of /etc/login.defs: where ordinary accounts start (a hub acts for those only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.runtime.identity import DEFAULT_UID_MIN, ordinary_uid_min, uid_min_in


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("UID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n", 1000),
        ("# UID_MIN 10\nUID_MIN 500\n", 500),  # a comment is no setting
        ("UID_MIN 500\nUID_MIN 2000\n", 2000),  # the last one wins, as in shadow-utils
        ("SYS_UID_MIN 100\nUID_MAX 60000\n", DEFAULT_UID_MIN),  # unset
        ("UID_MIN\n", DEFAULT_UID_MIN),  # no value
        ("UID_MIN -5\nUID_MIN 0x10\nUID_MIN \u0661\u0660\n", DEFAULT_UID_MIN),  # not a plain number
        ("", DEFAULT_UID_MIN),
    ],
)
def test_uid_min_is_the_last_plain_setting(text: str, expected: int) -> None:
    assert uid_min_in(text) == expected


def test_a_missing_login_defs_means_the_default(tmp_path: Path) -> None:
    assert ordinary_uid_min(tmp_path / "absent") == DEFAULT_UID_MIN
    written = tmp_path / "login.defs"
    written.write_text("UID_MIN 1500\n", encoding="utf-8")
    assert ordinary_uid_min(written) == 1500
