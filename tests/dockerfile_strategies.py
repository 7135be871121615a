"""Hypothesis strategies for Dockerfiles whose meaning is known by construction.

``dockerfiles(images)`` draws an abstract build (global ARGs, stages with a base and
``COPY --from`` sources, stage names that may shadow image names) and writes it out with
the noise of real files and of attackers: a tab or several spaces between words, mixed case
of instructions, ``AS`` and stage names, the ``# escape=`` directive (and a look-alike that
is not one, after a blank line or later in the file), line continuations with trailing
blanks, comments and empty lines inside them, leading Unicode spaces, decoy lines that end in
the escape character followed by a no-break or other Unicode space (no continuation for
Docker), ``--platform``, quoted ARG defaults and ``${NAME:-…}``/``${NAME:+…}``. The drawn
``GeneratedDockerfile`` knows, from the abstract build alone and without parsing anything,
which images Docker uses (``expected``) or that the reference cannot be known before the
build (``unknowable``).

Shared by the unit property test (ds01's reading against this model) and the integration
test that builds a sample with Docker's classic builder (Docker's reading against the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

#: Stage names; some equal image names without a slash, so a stage shadows the image.
STAGE_NAMES = ("build", "base", "Deps", "probe-b", "x.y_z")
#: Blanks Go's parser trims at the start of a line (unicode.IsSpace).
LEADING_BLANKS = ("", " ", "\t", "  \t", "\u00a0", "\u3000", "\u2003 ")
#: What may follow an escape character without making a continuation (Docker's regex is
#: ``escape[ \t]*$``): other Unicode spaces.
NOT_CONTINUATION = ("\u00a0", "\u3000", "\u2003", "\u00a0 ", "\u205f")


@dataclass
class GeneratedDockerfile:
    text: str
    expected: list[str] = field(default_factory=list)  # images, in order
    unknowable: bool = False  # a reference uses an ARG without a value: must be refused
    stages: int = 0


def _case(draw: st.DrawFn, word: str) -> str:
    style = draw(st.sampled_from(["upper", "lower", "title", "mixed"]))
    if style == "upper":
        return word.upper()
    if style == "lower":
        return word.lower()
    if style == "title":
        return word.title()
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True))


class _Writer:
    """Writes instructions as lines, with the noise drawn for each."""

    def __init__(self, draw: st.DrawFn, escape: str, allow_unicode: bool) -> None:
        self.draw = draw
        self.escape = escape
        self.lines: list[str] = []
        self.unicode = allow_unicode

    def blank(self) -> str:
        return self.draw(st.sampled_from([" ", "\t", "  ", " \t "]))

    def leading(self) -> str:
        options = LEADING_BLANKS if self.unicode else ("", " ", "\t", "  \t")
        return self.draw(st.sampled_from(options))

    def noise(self) -> None:
        """Comment or blank lines between instructions, maybe."""
        for _ in range(self.draw(st.integers(0, 2))):
            kind = self.draw(st.sampled_from(["comment", "blank", "fake"]))
            if kind == "blank":
                self.lines.append(self.draw(st.sampled_from(["", " ", "\t"])))
            elif kind == "comment":
                self.lines.append(self.leading() + "# a comment " + self.escape)
            else:  # an instruction inside a comment is nothing
                self.lines.append(self.leading() + "#FROM alice/secret")

    def instruction(self, words: Sequence[str]) -> None:
        """One instruction; words may be split over continuation lines."""
        self.noise()
        line = self.leading() + words[0]
        for word in words[1:]:
            if self.draw(st.integers(0, 4)) == 0:  # continue on the next line
                trailing = self.draw(st.sampled_from(["", " ", "\t", "  "]))
                self.lines.append(line + self.blank() + self.escape + trailing)
                for _ in range(self.draw(st.integers(0, 2))):
                    extra = self.draw(st.sampled_from(["comment", "empty"]))
                    self.lines.append(
                        self.leading() + "# inside " + self.escape if extra == "comment" else ""
                    )
                line = self.draw(st.sampled_from(["", " ", "\t", "   "])) + word
            else:
                line += self.blank() + word
        self.lines.append(line)

    def decoy(self) -> None:
        """A LABEL line that ends in an escape character a naive reader takes for a
        continuation (or the other escape character)."""
        other = "`" if self.escape == "\\" else "\\"
        endings = [other, self.escape * 2]  # the other character; an escaped escape
        if self.unicode:
            endings += [self.escape + space for space in NOT_CONTINUATION]
        ending = self.draw(st.sampled_from(endings))
        self.instruction([_case(self.draw, "LABEL"), f"probe.decoy=x{ending}"])


@st.composite
def dockerfiles(
    draw: st.DrawFn,
    images: Sequence[str],
    *,
    allow_unicode: bool = True,
    allow_mounts: bool = True,
    allow_onbuild: bool = True,
    allow_unknowable: bool = True,
) -> GeneratedDockerfile:
    """A Dockerfile over the image references ``images`` (see the module docstring)."""
    escape = draw(st.sampled_from(["\\", "`"]))
    header: list[str] = []
    directive = draw(st.sampled_from(["none", "top", "after-blank", "after-comment"]))
    spelled = draw(st.sampled_from(["# escape=", "#escape=", "# ESCAPE = ", "#\tEscape\t=\t"]))
    if directive == "top":
        if draw(st.booleans()):
            header.append("# syntax=docker/dockerfile:1")
        header.append(spelled + escape)
    elif directive in ("after-blank", "after-comment"):
        # Not a directive: Docker stops looking for them at the first other line.
        header += ["" if directive == "after-blank" else "# hello", spelled + "`"]
        escape = "\\"
    else:
        escape = "\\"
    out = GeneratedDockerfile("")
    writer = _Writer(draw, escape, allow_unicode)
    writer.lines += header

    # Global ARGs: name -> value (None: declared without a default).
    args: dict[str, str | None] = {}
    for index in range(draw(st.integers(0, 3))):
        name = f"A{index}"
        kind = draw(st.sampled_from(["image", "quoted", "chain", "bare", "empty"]))
        if kind == "bare":
            writer.instruction([_case(draw, "ARG"), name])
            args[name] = None
            continue
        if kind == "empty":
            writer.instruction([_case(draw, "ARG"), f"{name}="])
            args[name] = ""
            continue
        if kind == "chain" and [k for k, v in args.items() if v]:
            source = draw(st.sampled_from([k for k, v in args.items() if v]))
            writer.instruction([_case(draw, "ARG"), f"{name}=${{{source}}}"])
            args[name] = args[source]
            continue
        image = draw(st.sampled_from(images))
        value = f'"{image}"' if kind == "quoted" else image
        writer.instruction([_case(draw, "ARG"), f"{name}={value}"])
        args[name] = image

    stages: list[str] = []  # lower-case names, "" for unnamed
    has_files: list[bool] = []  # whether the stage has /who (a base that is an image)
    for number in range(draw(st.integers(1, 4))):
        words = [_case(draw, "FROM")]
        if draw(st.integers(0, 3)) == 0:
            words.append("--platform=linux/amd64")
        kind = draw(st.sampled_from(["image", "image", "arg", "stage", "scratch", "unknown"]))
        named = [s for s in stages if s]
        if kind == "stage" and not named:
            kind = "image"
        if kind == "unknown" and not allow_unknowable:
            kind = "image"
        resolved: str | None
        if kind == "image":
            resolved = draw(st.sampled_from(images))
            word = resolved
        elif kind == "scratch":
            resolved, word = "scratch", "scratch"
        elif kind == "stage":
            resolved = draw(st.sampled_from(named))
            word = _case(draw, resolved)
        elif kind == "unknown":
            unset = [k for k, v in args.items() if v is None] + ["NEVER_DECLARED"]
            word = "$" + draw(st.sampled_from(unset))
            resolved = None
        else:
            word, resolved = _arg_word(draw, args, images)
        words.append(word)
        stage_name = ""
        if draw(st.booleans()):
            free = [s for s in STAGE_NAMES if s.lower() not in stages]
            if free:
                spelled_name = draw(st.sampled_from(free))
                stage_name = spelled_name.lower()
                words += [_case(draw, "as"), _case(draw, spelled_name)]
        writer.instruction(words)
        if resolved is None:
            out.unknowable = True
        elif resolved == "scratch" or resolved.lower() in stages:
            pass
        else:
            out.expected.append(resolved)
        files = resolved is not None and (
            resolved != "scratch"
            and (resolved.lower() not in stages or has_files[stages.index(resolved.lower())])
        )
        stages.append(stage_name)
        has_files.append(files)

        for _ in range(draw(st.integers(1 if not files else 0, 2))):
            if draw(st.integers(0, 3)) == 0:
                writer.decoy()
            source_kind = draw(st.sampled_from(["image", "stage", "index"]))
            earlier = [i for i in range(number) if has_files[i]]
            if source_kind != "image" and not earlier:
                source_kind = "image"
            if source_kind == "image":
                usable = [
                    i for i in images if i not in stages[:number] or has_files[stages.index(i)]
                ]
                source = draw(st.sampled_from(usable))
                if source not in stages[:number]:  # else the exact name of an earlier stage
                    out.expected.append(source)
            else:
                which = draw(st.sampled_from(earlier))
                source = stages[which] if source_kind == "stage" and stages[which] else str(which)
            flags = [f"--from={source}"]
            if draw(st.integers(0, 3)) == 0:
                flags.insert(draw(st.integers(0, 1)), "--chown=0:0")
            writer.instruction([_case(draw, "COPY"), *flags, "/who/", "/who/"])
            files = True
            has_files[number] = True
        if allow_mounts and draw(st.integers(0, 5)) == 0:
            source = draw(st.sampled_from(images))
            key = draw(st.sampled_from(["from", "FROM", "From"]))
            spec = f"type=bind,{key}={source},target=/mnt"
            writer.instruction([_case(draw, "RUN"), f"--mount={spec}", "true"])
            if source not in stages[:number]:
                out.expected.append(source)
        if allow_onbuild and draw(st.integers(0, 5)) == 0:
            source = draw(st.sampled_from(images))
            writer.instruction(
                [_case(draw, "ONBUILD"), _case(draw, "COPY"), f"--from={source}", "/a", "/b"]
            )
            out.expected.append(source)  # a later build's stages are unknown: an image
    out.text = "\n".join(writer.lines) + "\n"
    out.stages = len(stages)
    return out


def _arg_word(
    draw: st.DrawFn, args: dict[str, str | None], images: Sequence[str]
) -> tuple[str, str]:
    """A FROM word built from the global ARGs, and the image it names."""
    valued = [k for k, v in args.items() if v]
    empty = [k for k, v in args.items() if not v] + ["NEVER_DECLARED"]
    form = draw(st.sampled_from(["bare", "braced", "default", "alternative", "prefix"]))
    if form in ("bare", "braced", "prefix") and valued:
        name = draw(st.sampled_from(valued))
        value = args[name]
        assert value is not None
        if form == "prefix" and "/" in value:
            head, tail = value.split("/", 1)
            return f"{head}${{{name}:+/}}{tail}", value
        return (f"${name}" if form == "bare" else f"${{{name}}}"), value
    if form == "alternative" and valued:
        name = draw(st.sampled_from(valued))
        image = draw(st.sampled_from(images))
        return f"${{{name}:+{image}}}", image
    image = draw(st.sampled_from(images))
    if valued and draw(st.booleans()):
        name = draw(st.sampled_from(valued))
        value = args[name]
        assert value is not None
        return f"${{{name}:-{image}}}", value
    return f"${{{draw(st.sampled_from(empty))}:-{image}}}", image
