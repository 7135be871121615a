"""What a program printed, as plain text (core.text.plain): no escape sequence or control
character survives, and printable text is kept as it was."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.model.text import plain


@pytest.mark.parametrize(
    ("printed", "shown"),
    [
        ("\x1b[91mE: no such package\x1b[0m", "E: no such package"),
        ("50%\r100%", "50%100%"),
        ("\x1b]0;pwned title\x07after", "after"),
        ("\x1b[2J\x1b[Hclear", "clear"),
        ("tab\tkept", "tab\tkept"),
        ("bell\x07 and \x7fdel", "bell and del"),
        ("c1\x9b31mcsi", "c131mcsi"),
    ],
)
def test_escape_sequences_and_control_characters_are_removed(printed: str, shown: str) -> None:
    assert plain(printed) == shown


@given(st.text())
def test_nothing_a_terminal_would_act_on_remains(text: str) -> None:
    result = plain(text)
    assert not any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in result)


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0xA0)
        | st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    )
)
def test_printable_text_is_kept(text: str) -> None:
    assert plain(text) == text
