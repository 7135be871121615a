"""Which images a Dockerfile builds from, read the way Docker's builder reads it.

ds01d checks every image a build would use against the image policy *before* Docker sees
the Dockerfile, so ds01 must read the Dockerfile exactly as the builder does: a line that
ds01 reads one way and Docker another is a way around the policy. Two decisions keep the
two readings equal:

- **Docker's own parser.** Lines, parser directives (``# escape=``), escape characters, line
  continuations, comments inside continuations, instruction case, whitespace (Unicode
  spaces included), ``--flags`` with their quotes, JSON forms and here-documents are read by
  BuildKit's Dockerfile parser (the Go code that Docker's builders use, through the
  ``dockerfile`` package), never by code of ours.
- **Refuse what the parser versions read differently.** ds01 builds with Docker's classic
  builder (``/build`` with ``version=1``, no build args); its parser is the one vendored in
  the engine, which may be older or newer than the package's. Inputs that known versions
  read differently are refused: NUL bytes (and text that is not UTF-8, before this module),
  a carriage return that does not end a line, here-documents (Docker 20.10 reads their lines
  as instructions), variable forms beyond ``$NAME``, ``${NAME}``, ``${NAME:-word}`` and
  ``${NAME:+word}``, quotes or escapes inside an image reference, unknown instructions and
  unknown flags of ``FROM``, ``COPY``, ``ADD`` and ``RUN``.

What the builder resolves, as the classic builder does it:

- ``FROM image [AS name]``: ``image`` expanded with the ARGs declared before the first
  ``FROM`` (each default expanded with those before it; an ``ARG`` without a default
  unsets the name); then an earlier stage's name (compared in lower case) is that stage,
  ``scratch`` is no image, and anything else is an image. ``--platform`` picks a variant of
  the same image; any other flag is refused.
- ``COPY --from=x``, ``RUN --mount=…,from=x``: an integer is a stage index; the exact name of
  an earlier stage is that stage; anything else is an image. The value is not expanded by
  the classic builder, so a ``$`` in it is refused.
- ``ONBUILD COPY --from=x`` and ``ONBUILD RUN --mount=…,from=x`` run in the build of an image
  made ``FROM`` this one, whose stages ds01 cannot know: every name is an image, checked now.

``ADD`` of a URL or git repository is refused (not only checked): the classic builder fetches
it in dockerd, as root, on the host's network, outside the build's network mode and ds01's
per-user firewall. So is a ``$`` in an ``ADD`` source (in a trigger too), which ds01 does not
expand and which could make a URL. ``RUN curl``/``wget`` or ``COPY`` do the same job.

Registry short names. ``resolve_short_names`` rewrites a ``FROM`` whose image is the
short name of a registry entry (``FROM python``) to that entry's image reference, on the
parsed instruction, and reads the rewritten text again: what is checked is what Docker
builds.

Every refusal is raised as ``InvalidInput`` (malformed: Docker would refuse it too; exit 2)
or ``PermissionDenied`` (Docker would run it, but ds01 cannot prove which image it uses;
exit 5). The function is pure: no Docker, no files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, cast

from ds01.errors import InvalidInput, PermissionDenied

#: Instructions of Docker's builders; anything else is refused (Docker refuses it too).
KNOWN_INSTRUCTIONS = frozenset(
    {
        "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
        "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume",
        "workdir",
    }
)  # fmt: skip
#: The flags ds01 understands, per instruction that can name an image or a mount.
KNOWN_FLAGS: Mapping[str, frozenset[str]] = {
    "from": frozenset({"platform"}),
    "copy": frozenset({"from", "chown", "chmod"}),
    "add": frozenset({"chown", "chmod"}),
    "run": frozenset({"mount", "network", "security"}),
}
#: Longest word (run without a blank) ds01 lets through to the parser, whose time grows with
#: the square of a word's length (64 KiB: half a second; 4 KiB: 3 ms).
MAX_WORD_CHARS = 4096
#: ``FROM scratch``: an empty file system, no image.
SCRATCH = "scratch"

_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9-_.]*")
#: What Go's ``strconv.Atoi`` reads as an integer (then a stage index, never an image).
_INDEX_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1
#: How Docker cuts ``ONBUILD`` off a trigger (Go's ``\\s`` is ASCII whitespace, no ``\\v``).
_ONBUILD_PREFIX_RE = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE | re.ASCII)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: Characters that every version of Docker's word lexer takes literally (ASCII only).
_LITERAL_CHARS = r"!#%&()*+,./0-9:;<=>?@A-Z\[\]^_a-z{|}~-"
_LITERAL = f"[{_LITERAL_CHARS}]"
#: The word of ``${NAME:-word}``: literal characters up to the closing brace.
_MODIFIER_WORD = "[" + _LITERAL_CHARS.replace("}", "") + "]"
_WORD_TOKEN_RE = re.compile(
    rf"(?P<literal>{_LITERAL}+)"
    rf"|\$(?P<bare>{_NAME})(?![A-Za-z0-9_])"
    rf"|\$\{{(?P<braced>{_NAME})(?::(?P<modifier>[-+])(?P<word>{_MODIFIER_WORD}*))?\}}"
    rf"|'(?P<single>{_LITERAL}*)'"
    rf"|\"(?P<double>[${_LITERAL_CHARS}]*)\""
)


@dataclass(frozen=True)
class BaseReference:
    """An image a Dockerfile builds from: ``line`` (1-based) and the reference as written."""

    line: int
    instruction: str  # "FROM", "COPY --from" or "RUN --mount from"
    reference: str


class Instruction(NamedTuple):
    """One instruction as BuildKit's parser returns it (the ``dockerfile`` package's
    ``Command``)."""

    cmd: str
    sub_cmd: str | None
    json: bool
    original: str
    start_line: int
    end_line: int
    flags: tuple[str, ...]
    value: tuple[str, ...]
    heredocs: tuple[object, ...]


class DockerfileSyntaxError(Exception):
    """The parser refused the text; the message is the parser's."""


#: A parser: text in, instructions out; raises ``DockerfileSyntaxError``.
Parser = Callable[[str], Sequence[Instruction]]


class _GoParser(Protocol):
    GoParseError: type[Exception]

    def parse_string(self, text: str) -> Sequence[Instruction]: ...


def parse_in_process(text: str) -> Sequence[Instruction]:
    """BuildKit's parser in this process. ``text`` must encode as UTF-8 and hold no NUL
    (``base_references`` checks both first): the package crashes on a lone surrogate and
    cuts the text at a NUL."""
    import dockerfile  # BuildKit's Go parser; loaded on first use (it starts a Go runtime)

    parser = cast(_GoParser, dockerfile)
    try:
        return parser.parse_string(text)
    except parser.GoParseError as exc:
        raise DockerfileSyntaxError(str(exc)) from None


class _Unknown:
    """An ``ARG`` whose value ds01 cannot know before the build; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


_Args = dict[str, "str | _Unknown | None"]  # None: declared without a value (unset)


def _longest_word(text: str) -> str:
    """The longest run without a space, tab or line end that the parser could see, counted
    generously: comment and blank lines dropped, every escape-newline joined."""
    kept = "\n".join(
        line for line in text.split("\n") if line.strip() and not line.lstrip().startswith("#")
    )
    joined = re.sub(r"[\\`][ \t]*\r?\n", "", kept)
    return max(re.findall(r"[^ \t\n]+", joined), key=len, default="")


def _parse(text: str, parse: Parser) -> Sequence[Instruction]:
    if "\x00" in text:
        raise InvalidInput("The Dockerfile contains a NUL byte; is it a text file?")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("The Dockerfile is not UTF-8 text.") from None
    longest = _longest_word(text)
    if len(longest) > MAX_WORD_CHARS:
        raise InvalidInput(
            f"The Dockerfile has a word of more than {MAX_WORD_CHARS} characters without a "
            f"blank ({longest[:40]!r}…); Docker's parser slows down on those quadratically. "
            "Split it, or keep the data in a file of the build context and COPY it."
        )
    if re.search(r"\r(?!\n)", text):
        raise InvalidInput(
            "The Dockerfile has a carriage return (CR) that does not end a line; Docker's "
            "versions read such lines differently. Save it with plain line ends (LF or CRLF)."
        )
    try:
        return parse(text)
    except DockerfileSyntaxError as exc:
        raise InvalidInput(f"Docker cannot parse the Dockerfile: {exc}") from None


def _expand(word: str, args: Mapping[str, str | _Unknown | None], where: str) -> str:
    """``word`` as Docker's lexer expands it with ``args``; ``PermissionDenied`` for what
    ds01 cannot expand exactly (see the module docstring)."""
    out: list[str] = []
    position = 0
    while position < len(word):
        match = _WORD_TOKEN_RE.match(word, position)
        if match is None:
            raise PermissionDenied(
                f"{where}: ds01 cannot tell which image {word!r} names (it reads "
                f"{word[position : position + 20]!r} differently in different Docker versions). "
                "Write the image reference out, or use $NAME, ${NAME}, ${NAME:-default} "
                "with ARGs declared before the first FROM."
            )
        position = match.end()
        if match["literal"] is not None:
            out.append(match["literal"])
        elif match["single"] is not None:
            out.append(match["single"])
        elif match["double"] is not None:
            out.append(_expand(match["double"], args, where))
        else:
            name = match["bare"] or match["braced"]
            value = args.get(name)
            if isinstance(value, _Unknown):
                raise PermissionDenied(f"{where}: {value.reason}")
            modifier = match["modifier"]
            if modifier == "-":
                out.append(value or match["word"])
            elif modifier == "+":
                out.append(match["word"] if value else "")
            elif value is None:
                raise PermissionDenied(
                    f"{where}: {word!r} uses ${name}, which has no default here; ds01 checks "
                    "base images before building, so write the image out (or give the ARG a "
                    "default before the first FROM)."
                )
            else:
                out.append(value)
    return "".join(out)


def _flags(command: Instruction, instruction: str, where: str) -> list[tuple[str, str | None]]:
    """``(name, value)`` of each ``--flag`` of ``command``; unknown flags refused."""
    known = KNOWN_FLAGS.get(instruction)
    result: list[tuple[str, str | None]] = []
    for flag in command.flags:
        name, equals, value = flag.removeprefix("--").partition("=")
        if known is not None and name not in known:
            raise InvalidInput(
                f"{where}: {instruction.upper()} has no flag --{name} that Docker's classic "
                f"builder knows (it knows {', '.join('--' + k for k in sorted(known)) or 'none'})."
            )
        result.append((name, value if equals else None))
    return result


def _mount_sources(spec: str, where: str) -> list[str]:
    """The ``from=`` values of a ``RUN --mount`` spec (comma-separated ``key=value``)."""
    if '"' in spec:
        raise PermissionDenied(f"{where}: ds01 cannot read a quoted --mount spec ({spec!r}).")
    return [
        value
        for key, _, value in (field.partition("=") for field in spec.split(","))
        if key.strip().lower() == "from"
    ]


def _source(
    value: str, stages: Sequence[str], line: int, instruction: str, *, stage_names: bool
) -> BaseReference | None:
    """The image a ``--from`` value names, or ``None`` for a stage (see the module
    docstring); ``stage_names=False`` for ONBUILD triggers, whose stages are unknown."""
    where = f"Dockerfile line {line}"
    if "$" in value:
        raise PermissionDenied(
            f"{where}: {instruction}={value} uses a variable; write the stage name or image "
            "out, so that ds01 can check it before building."
        )
    if _INDEX_RE.fullmatch(value) and abs(int(value)) <= _INT64_MAX:
        return None  # a stage index (Docker refuses one that is out of range)
    if not value or (stage_names and value in stages):
        return None
    return BaseReference(line, instruction, value)


def _from(command: Instruction, args: _Args, stages: list[str], line: int) -> BaseReference | None:
    where = f"Dockerfile line {line}"
    _flags(command, "from", where)
    words = list(command.value)
    if not words or words == [""]:
        raise InvalidInput(f"{where}: FROM without an image.")
    if len(words) == 3 and words[1].casefold() == "as":
        stage = words[2].lower()
        if not _STAGE_NAME_RE.fullmatch(stage):
            raise InvalidInput(f"{where}: {words[2]!r} is not a valid name for a build stage.")
        if stage in stages:
            raise InvalidInput(f"{where}: the stage name {stage!r} is used twice.")
    elif len(words) == 1:
        stage = ""
    else:
        raise InvalidInput(
            f"{where}: FROM takes an image and optionally `AS name` ({command.original!r})."
        )
    image = _expand(words[0], args, where)
    earlier = list(stages)
    stages.append(stage)
    if not image:
        raise InvalidInput(f"{where}: FROM {words[0]} is empty once its variables are expanded.")
    if image == SCRATCH or image.lower() in earlier:
        return None
    return BaseReference(line, "FROM", image)


#: A source of ``ADD`` that dockerd would fetch itself: ``scheme://…`` (any case, quotes
#: and escapes taken off first, as Docker's lexer does) or a git remote (``git@host:…``,
#: ``github.com/…``, which newer builders clone).
_REMOTE_SOURCE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|git@|github\.com/", re.IGNORECASE)


def _refuse_remote_add(command: Instruction, where: str) -> None:
    """Refuse an ``ADD`` (or ``ONBUILD ADD``) with a URL or git source, or with a variable in
    a source (ds01 does not expand ADD's words, so ``$X`` could become a URL).

    The classic builder fetches an ``ADD`` URL in dockerd itself, as root, from the host's
    network: outside the build's network mode and past ds01's per-user firewall (which lets
    root reach every user's bridge), so a URL could read another user's service, 127.0.0.1
    or a link-local address. ``RUN curl``/``wget`` fetch on the build's own network."""
    for source in command.value[:-1]:  # the last word is the destination
        plain = re.sub(r"[\\`\"']", "", source)
        if "$" in plain:
            raise PermissionDenied(
                f"{where}: ADD {source} uses a variable in a source; write the source out, so "
                "that ds01 can tell it is a file of the build context."
            )
        if _REMOTE_SOURCE_RE.search(plain):
            raise PermissionDenied(
                f"{where}: ADD {source} would be fetched by dockerd outside your build's "
                "network; ds01 refuses ADD of a URL or git repository. Download it in the "
                "build with RUN curl or RUN wget (on the build's own network), or put the "
                "file in the build context and COPY it."
            )


def _sources(
    command: Instruction, instruction: str, stages: Sequence[str], line: int, *, trigger: bool
) -> list[BaseReference]:
    """The images a COPY, ADD or RUN names with ``--from`` or ``--mount=…,from=``; an ADD
    whose source is remote is refused (``_refuse_remote_add``)."""
    where = f"Dockerfile line {line}"
    if instruction == "add":
        _refuse_remote_add(command, where)
    found: list[BaseReference] = []
    for name, value in _flags(command, instruction, where):
        if value is None:
            continue  # Docker refuses a string flag without a value
        if name == "from" and instruction == "copy":
            values, label = [value], "COPY --from"
        elif name == "mount" and instruction == "run":
            values, label = _mount_sources(value, where), "RUN --mount from"
        else:
            continue
        for source in values:
            reference = _source(source, stages, line, label, stage_names=not trigger)
            if reference is not None:
                found.append(reference)
    return found


def _trigger(command: Instruction, line: int, parse: Parser) -> list[BaseReference]:
    """The images an ``ONBUILD`` trigger names. Docker keeps the trigger as the line's text
    without ``ONBUILD`` and parses it on its own in the later build (default escape, no
    directives): so does ds01, with the same parser."""
    where = f"Dockerfile line {line}"
    sub = (command.sub_cmd or "").lower()
    if sub in ("onbuild", "from", "maintainer"):
        raise InvalidInput(f"{where}: ONBUILD {sub.upper()} is not allowed by Docker.")
    if sub not in KNOWN_INSTRUCTIONS:
        raise InvalidInput(f"{where}: ONBUILD {command.sub_cmd} is not a Dockerfile instruction.")
    if sub not in KNOWN_FLAGS:
        return []
    trigger = _ONBUILD_PREFIX_RE.sub("", command.original, count=1)
    inner = _parse(trigger, parse)
    if len(inner) != 1 or inner[0].cmd.lower() != sub:
        raise PermissionDenied(f"{where}: ds01 cannot read the ONBUILD trigger {trigger!r}.")
    return _sources(inner[0], sub, (), line, trigger=True)


def base_references(text: str, parse: Parser = parse_in_process) -> list[BaseReference]:
    """The images a Dockerfile builds from, in order (stages and ``scratch`` left out).
    ``parse`` runs BuildKit's parser (ds01d runs it in a child process).

    Raises:
        InvalidInput: the Dockerfile is malformed (Docker would refuse it as well).
        PermissionDenied: ds01 cannot prove which image a line uses.
    """
    return _references(_parse(text, parse), parse)


def _references(commands: Sequence[Instruction], parse: Parser) -> list[BaseReference]:
    """``base_references`` of parsed ``commands``."""
    if not any(command.cmd.lower() == "from" for command in commands):
        raise InvalidInput("The Dockerfile has no FROM line: it must start from an image.")
    args: _Args = {}
    stages: list[str] = []
    found: list[BaseReference] = []
    for command in commands:
        line = command.start_line
        where = f"Dockerfile line {line}"
        instruction = command.cmd.lower()
        if instruction not in KNOWN_INSTRUCTIONS:
            raise InvalidInput(f"{where}: unknown instruction {command.cmd!r}.")
        if command.heredocs:
            raise PermissionDenied(
                f"{where}: here-documents (<<EOF) need BuildKit; ds01 builds with Docker's "
                "classic builder, which reads their lines as instructions. Put the script in "
                "a file of the build context and COPY it."
            )
        if instruction == "arg" and not stages:
            _declare(command, args, where)
        elif instruction == "from":
            reference = _from(command, args, stages, line)
            if reference is not None:
                found.append(reference)
        elif instruction in ("copy", "add", "run"):
            if not stages:
                raise InvalidInput(f"{where}: {command.cmd} comes before the first FROM.")
            found.extend(_sources(command, instruction, stages[:-1], line, trigger=False))
        elif instruction == "onbuild":
            found.extend(_trigger(command, line, parse))
    return found


def _declare(command: Instruction, args: _Args, where: str) -> None:
    """Record the ARGs of one line before the first ``FROM`` (later ones cannot be
    used in ``FROM``). Defaults are expanded with the ARGs of the lines before, as Docker
    does (not with those of the same line)."""
    before = dict(args)
    for word in command.value:
        name, equals, default = word.partition("=")
        if not name:
            raise InvalidInput(f"{where}: ARG {word!r} has no name.")
        if not equals:
            args[name] = None
            continue
        try:
            args[name] = _expand(default, before, where)
        except PermissionDenied as exc:
            args[name] = _Unknown(
                f"ARG {name} is used, and ds01 cannot know its value: "
                + exc.message.removeprefix(f"{where}: ")
            )


#: A ``FROM`` flag ds01 writes back unchanged when it rewrites the line: no blank, quote or
#: escape, so it reads the same on the rewritten line.
_PLAIN_FLAG_RE = re.compile(r"--[a-z]+=[A-Za-z0-9/._:+-]*", re.ASCII)


@dataclass(frozen=True)
class ShortName:
    """A ``FROM`` at ``line`` that named a registry entry (``name``), built from its
    ``image`` instead."""

    line: int
    name: str
    image: str


@dataclass(frozen=True)
class ResolvedDockerfile:
    """What a build uses: the Dockerfile ``text`` Docker is given, the images it builds from
    (read from that text), and the short names that were replaced to make it."""

    text: str
    bases: list[BaseReference]
    short_names: tuple[ShortName, ...]


def resolve_short_names(
    text: str, image_of: Callable[[str], str | None], parse: Parser = parse_in_process
) -> ResolvedDockerfile:
    """The Dockerfile with every ``FROM`` whose image is a registry short name (``FROM
    python``) rewritten to that entry's image reference, and the images the result builds
    from.

    ``image_of(name)`` is the image of the registry entry called ``name``, or ``None``. Only
    what :func:`base_references` reads as an image of a ``FROM`` is looked up (an earlier
    stage of the same name stays that stage). The rewrite works on the parsed instruction:
    its lines (``start_line`` to ``end_line``) become one line ``FROM [flags] IMAGE [AS
    stage]`` followed by blank lines, so every other line keeps its number; a ``FROM`` with
    a flag that does not read the same on one plain line is left as it is (and then checked
    as the reference it names). When anything was rewritten, the new text is parsed and read
    again, so the images returned are those of the text Docker builds, never of the text
    the user wrote.

    Raises what :func:`base_references` raises.
    """
    commands = _parse(text, parse)
    bases = _references(commands, parse)
    froms = {c.start_line: c for c in commands if c.cmd.lower() == "from"}
    lines = text.split("\n")  # Docker splits at LF only; a CR before it stays with its line
    replaced: list[ShortName] = []
    for base in bases:
        image = image_of(base.reference) if base.instruction == "FROM" else None
        command = froms.get(base.line)
        if image is None or command is None:
            continue
        if not all(_PLAIN_FLAG_RE.fullmatch(flag) for flag in command.flags):
            continue
        stage = [] if len(command.value) == 1 else ["AS", command.value[2]]
        first, last = command.start_line - 1, command.end_line
        lines[first:last] = [" ".join(["FROM", *command.flags, image, *stage])] + [""] * (
            last - first - 1
        )
        replaced.append(ShortName(base.line, base.reference, image))
    if not replaced:
        return ResolvedDockerfile(text, bases, ())
    rewritten = "\n".join(lines)
    return ResolvedDockerfile(rewritten, base_references(rewritten, parse), tuple(replaced))


__all__ = [
    "KNOWN_FLAGS",
    "KNOWN_INSTRUCTIONS",
    "MAX_WORD_CHARS",
    "SCRATCH",
    "BaseReference",
    "DockerfileSyntaxError",
    "Instruction",
    "Parser",
    "ResolvedDockerfile",
    "ShortName",
    "base_references",
    "parse_in_process",
    "resolve_short_names",
]
