"""What a program printed, as plain text (model.text.plain): no escape sequence, control
character or invisible formatting character survives, and printable text is kept as it was.
What somebody else sent, shown in a table (model.text.visible, cli.render.table): every such
character written as its escape, never acted on."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.cli import events, render
from ds01.model.text import VisibleStream, plain, visible

#: What shows nothing or changes how the text around it shows: this Python's Unicode format
#: characters and line and paragraph separators, and the blank letters a name could hide
#: behind (the combining grapheme joiner, the Hangul fillers).
INVISIBLE = frozenset(
    [code for code in range(0x110000) if unicodedata.category(chr(code)) in ("Cf", "Zl", "Zp")]
    + [0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0]
)


def acted_on(c: str) -> bool:
    """Whether a terminal acts on ``c`` (or reorders or hides text around it)."""
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or ord(c) in INVISIBLE


#: Printable text: what neither function changes.
PRINTABLE = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, exclude_characters="".join(map(chr, [*range(0x7F, 0xA0), *INVISIBLE]))
    )
)


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
        ("note\u202e1 UPG", "note1 UPG"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
    ],
)
def test_escape_sequences_and_control_characters_are_removed(printed: str, shown: str) -> None:
    assert plain(printed) == shown


@given(st.text())
def test_nothing_a_terminal_would_act_on_remains(text: str) -> None:
    assert not any(acted_on(c) and c != "\t" for c in plain(text))


@given(PRINTABLE)
def test_printable_text_is_kept(text: str) -> None:
    assert plain(text) == text


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("user/\x1b]52;c;ZWNobwo=\x07", "user/\\x1b]52;c;ZWNobwo=\\x07"),
        ("a\nforged row", "a\\x0aforged row"),
        ("\x1b[1A\x1b[2K", "\\x1b[1A\\x1b[2K"),
        ("note\u202e1 UPG", "note\\u202e1 UPG"),
        ("tab\t", "tab\\x09"),
        ("c1\x9b", "c1\\x9b"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("soft\u00adhyphen\u2028", "soft\\xadhyphen\\u2028"),
    ],
)
def test_visible_writes_what_a_terminal_would_act_on_as_its_escape(sent: str, shown: str) -> None:
    assert visible(sent) == shown


def test_every_invisible_character_is_dropped_by_plain_and_escaped_by_visible() -> None:
    text = "".join(map(chr, sorted(INVISIBLE)))
    assert plain(text) == ""
    assert not any(acted_on(c) for c in visible(text))


@given(st.text())
def test_visible_leaves_nothing_to_act_on_and_is_idempotent(text: str) -> None:
    shown = visible(text)
    assert not any(acted_on(c) for c in shown)
    assert visible(shown) == shown


@given(PRINTABLE)
def test_visible_keeps_printable_text(text: str) -> None:
    assert visible(text) == text


@given(st.lists(st.binary(), max_size=8))
def test_a_streams_output_keeps_its_lines_and_tabs_and_nothing_else_to_act_on(
    chunks: list[bytes],
) -> None:
    stream = VisibleStream()
    shown = "".join(stream.feed(c) for c in chunks) + stream.feed(b"", final=True)
    printed = b"".join(chunks).decode(errors="replace")
    # Lines and tabs as printed; a carriage return only as part of a \r\n.
    assert shown.count("\n") == printed.count("\n") and shown.count("\t") == printed.count("\t")
    kept = shown.replace("\r\n", "\n").replace("\t", "")
    assert not any(acted_on(c) for c in kept.replace("\n", ""))


def test_a_stream_split_anywhere_shows_as_if_whole() -> None:
    printed = "ok\r\n\x1b]52;c;ZWNobwo=\x07 \u2013 done\r".encode()
    whole = VisibleStream()
    expected = whole.feed(printed, final=True)
    assert expected == "ok\r\n\\x1b]52;c;ZWNobwo=\\x07 \u2013 done\\x0d"
    for cut in range(len(printed) + 1):
        split = VisibleStream()
        shown = split.feed(printed[:cut]) + split.feed(printed[cut:]) + split.feed(b"", final=True)
        assert shown == expected, cut


def test_ones_own_output_keeps_its_carriage_returns_and_nothing_else_to_act_on() -> None:
    """A progress bar redraws its line in one's own logs; escapes are still shown."""
    printed = b"epoch 1  10%\repoch 1  50%\r\x1b]52;c;ZWNobwo=\x07\x1b[1A\n"
    own = VisibleStream(returns=True)
    shown = own.feed(printed[:14]) + own.feed(printed[14:]) + own.feed(b"", final=True)
    assert shown == "epoch 1  10%\repoch 1  50%\r\\x1b]52;c;ZWNobwo=\\x07\\x1b[1A\n"
    assert "\\x0d" in VisibleStream().feed(printed, final=True)  # someone else's


FORGED = "user/\x1b]52;c;ZWNobwo=\x07\x1b[1A\x1b[2K\n2026-12-07 18:00:00  root  container.remove"


def test_a_table_shows_a_forged_cell_on_its_own_row_without_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    render.table(["USER", "RESOURCE", "TAGS"], [["alice", FORGED, ["ok", "\x1b[31mred"]]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert len(out.splitlines()) == 2, out
    assert "\\x0a2026-12-07" in out and "\\x1b[31mred" in out


def test_followed_events_show_forged_fields_on_one_line_without_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = {
        "ts": "2026-12-07T18:00:00+00:00",
        "user": "alice",
        "action": "limits.read",
        "resource": FORGED,
        "outcome": "denied",
        "details": {"reason": "no user \x1b]0;title\x07\nforged"},
    }
    for header in (True, False):  # a listing, and --follow's lines
        events._print([event], as_json=False, header=header, width=None)
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out
        assert len(out.splitlines()) == (2 if header else 1), out
