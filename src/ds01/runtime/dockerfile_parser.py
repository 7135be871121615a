"""BuildKit's Dockerfile parser, run in a child process for ds01d.

The parser is Go code loaded into Python (the ``dockerfile`` package): a panic there would
abort the whole process, and ds01d must not die of a user's Dockerfile. So ds01d runs it in
a short-lived child (its own interpreter, ``-I``, no environment), which reads the text on
stdin and writes the instructions as JSON. A crash, a timeout or unreadable output is a
``DockerfileSyntaxError``: the build is refused, never allowed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

from ds01.core.dockerfile_bases import DockerfileSyntaxError, Instruction

#: Longest a parse may take (a 1 MiB Dockerfile takes well under a second).
PARSE_TIMEOUT_SECONDS = 20.0

_CHILD = """
import json, sys
import dockerfile
text = sys.stdin.buffer.read().decode("utf-8")
try:
    commands = dockerfile.parse_string(text)
except dockerfile.GoParseError as exc:
    json.dump({"error": str(exc)}, sys.stdout)
else:
    json.dump({"instructions": [
        [c.cmd, c.sub_cmd, c.json, c.original, c.start_line, c.end_line, list(c.flags),
         list(c.value), [h.name for h in c.heredocs]]
        for c in commands
    ]}, sys.stdout)
"""


def parse_isolated(text: str) -> Sequence[Instruction]:
    """The instructions of ``text`` (UTF-8 encodable, no NUL), parsed in a child process.

    Raises:
        DockerfileSyntaxError: the parser refused the text, crashed or took too long.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _CHILD],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=PARSE_TIMEOUT_SECONDS,
            env={},
            cwd="/",
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DockerfileSyntaxError(
            f"the parser took longer than {PARSE_TIMEOUT_SECONDS:g} s"
        ) from None
    try:
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise DockerfileSyntaxError(f"the parser failed (exit status {done.returncode})")
    if "error" in answer:
        raise DockerfileSyntaxError(str(answer["error"]))
    return [
        Instruction(
            cmd=str(cmd),
            sub_cmd=None if sub is None else str(sub),
            json=bool(is_json),
            original=str(original),
            start_line=int(start),
            end_line=int(end),
            flags=tuple(str(f) for f in flags),
            value=tuple(str(v) for v in value),
            heredocs=tuple(heredocs),
        )
        for cmd, sub, is_json, original, start, end, flags, value, heredocs in answer[
            "instructions"
        ]
    ]


__all__ = ["PARSE_TIMEOUT_SECONDS", "parse_isolated"]
