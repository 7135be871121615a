"""Bounded text: what ds01 shows or logs of a value somebody else typed. Pure, standard library.

A user can send a name, path or image reference of any length (up to the API's body limit).
Messages that quote such input, and audit events that record it, show at most a bounded
prefix, visibly marked as cut, so that a flood of long inputs cannot fill a terminal, a
response or the log:

    >>> clip("a" * 4000, 40)
    'aaaaaaaaaaaaa...[cut: 4000 chars in all]'

:func:`clip` never returns more than ``max_chars`` characters, leaves text that fits
unchanged, and is idempotent (clipping a clipped text changes nothing).
"""

from __future__ import annotations

import codecs
import re

#: How many characters of an input messages quote (:func:`shown`).
SHOWN_INPUT_CHARS = 80

#: The mark that ends a cut text; ``{total}`` is the length of the whole text.
CUT_MARK = "...[cut: {total} chars in all]"


def clip(text: str, max_chars: int) -> str:
    """``text`` if it has at most ``max_chars`` characters, else a prefix of it followed by
    :data:`CUT_MARK`, ``max_chars`` characters in all (only the mark's tail if even the mark
    does not fit).

    Raises:
        ValueError: ``max_chars`` is negative.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be 0 or more, got {max_chars}")
    if len(text) <= max_chars:
        return text
    mark = CUT_MARK.format(total=len(text))
    keep = max_chars - len(mark)
    if keep <= 0:
        return mark[len(mark) - max_chars :] if max_chars else ""
    return text[:keep] + mark


def shown(value: object, max_chars: int = SHOWN_INPUT_CHARS) -> str:
    """``value`` quoted for a message (``repr`` of a string), its text clipped to
    ``max_chars`` characters: how every message quotes what a user sent."""
    text = value if isinstance(value, str) else str(value)
    return repr(clip(text, max_chars))


#: Characters that show nothing, or change how the text around them shows: Unicode's
#: format characters (category Cf: the soft hyphen, bidi marks, embeddings, overrides and
#: isolates (U+202E shows the rest of a line reversed), zero-width spaces and joiners, the
#: byte-order mark, interlinear annotations, tag characters, …), the line and paragraph
#: separators (Zl, Zp), and the blank letters a name could hide behind (the combining
#: grapheme joiner, the Hangul fillers). As a regular expression class's body; Unicode 15.1's
#: Cf, a superset of older versions' (``tests/unit/test_plain_text.py`` checks it against
#: ``unicodedata``).
_INVISIBLE_FORMAT = (
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)

#: A terminal escape sequence (CSI ``ESC [ … letter``, OSC ``ESC ] … BEL/ST``, or a
#: two-character ``ESC x``), a control character other than tab (C0, DEL and C1: some
#: terminals read ``\x9b`` as ``ESC [``), or an invisible formatting character.
_TERMINAL_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window titles, links, the clipboard
    r"|\x1b[@-_]"  # other escapes
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f" + _INVISIBLE_FORMAT + "]"  # controls (tab kept)
)

#: Every character :func:`visible` writes as its escape: C0 (tab included), DEL, C1 and the
#: invisible formatting characters.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f" + _INVISIBLE_FORMAT + "]")


def plain(line: str) -> str:
    """``line`` without terminal escape sequences and control characters: what a program
    printed (a build's ``RUN`` in red, a progress bar's carriage returns) as text, which
    cannot recolour or rewrite the terminal of whoever reads it.

        >>> plain("\x1b[91mE: no such package\x1b[0m")
        'E: no such package'
    """
    return _TERMINAL_CONTROL.sub("", line)


def visible(text: str) -> str:
    r"""``text`` with every control and invisible formatting character written as its
    escape, as Python writes one: what a table shows of a value somebody else sent (an
    audit event's resource or details), so that it can neither drive the reader's terminal
    (move the cursor, write the clipboard, forge a line) nor reorder what it says, and the
    reader still sees that it was there. Idempotent: an escape is plain text.

        >>> visible("user/\x1b]52;c;ZWNobwo=\x07\nforged")
        'user/\\x1b]52;c;ZWNobwo=\\x07\\x0aforged'
    """
    return _UNSHOWABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: What :func:`visible_output` writes as escapes: as :data:`_UNSHOWABLE`, but a program's
#: line breaks (``\n``, ``\r\n``) and tabs kept; a lone carriage return (which would let a
#: line be written over) is escaped.
_UNSHOWABLE_IN_OUTPUT = re.compile(
    "\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + _INVISIBLE_FORMAT + "]"
)
#: The same with every carriage return kept: a progress bar redraws its line.
_UNSHOWABLE_IN_OWN_OUTPUT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + _INVISIBLE_FORMAT + "]"
)


def visible_output(text: str, *, returns: bool = False) -> str:
    r"""What a program printed, for a terminal: as :func:`visible`, its lines and tabs kept;
    ``returns``: a lone carriage return kept too (for one's own program's progress bars,
    which redraw their line; someone else's could hide what it wrote before).

    >>> visible_output("ok\r\n\x1b]52;c;ZWNobwo=\x07\tx\n")
    'ok\r\n\\x1b]52;c;ZWNobwo=\\x07\tx\n'
    >>> visible_output("10%\r50%\r", returns=True)
    '10%\r50%\r'
    """
    pattern = _UNSHOWABLE_IN_OWN_OUTPUT if returns else _UNSHOWABLE_IN_OUTPUT
    return pattern.sub(_escape, text)


class VisibleStream:
    r"""A stream of bytes (UTF-8, invalid bytes replaced) turned, chunk by chunk, into
    :func:`visible_output` text (``returns`` as there): a character or a ``\r\n`` split
    between two chunks comes out as if it had come whole."""

    def __init__(self, *, returns: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # a carriage return at the end of a chunk: is a newline next?
        self._returns = returns

    def feed(self, chunk: bytes, *, final: bool = False) -> str:
        """The text of ``chunk`` that can be shown now; ``final`` for the last one."""
        text = self._held + self._decoder.decode(chunk, final)
        self._held = ""
        if text.endswith("\r") and not final:
            text, self._held = text[:-1], "\r"
        return visible_output(text, returns=self._returns)
