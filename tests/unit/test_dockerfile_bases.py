"""ds01's reading of a Dockerfile's base images (``ds01.core.dockerfile_bases``).

The property tests draw Dockerfiles from a model (``dockerfile_strategies``): the abstract
build says which images Docker uses, the text is written with the noise that made ds01 read
Dockerfiles differently from Docker (tabs, Unicode spaces, continuations, the escape
directive, comments, case). ds01 must name exactly the model's images, or refuse when the
model says the reference cannot be known. The same model is checked against Docker's
classic builder in ``tests/integration/test_base_images_dockerfile.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockerfile_strategies import GeneratedDockerfile, dockerfiles
from ds01.core.dockerfile_bases import (
    MAX_WORD_CHARS,
    base_references,
    parse_in_process,
    resolve_short_names,
)
from ds01.errors import InvalidInput, PermissionDenied
from ds01.runtime.dockerfile_parser import parse_isolated

BUSYBOX = "ds01-test/busybox"
BB = f"FROM {BUSYBOX}\n"
IMAGES = ("ds01-test/busybox", "alice/secret:v1", "probe-b", "lab/x@sha256:" + "a" * 64)


def refs(text: str) -> list[tuple[int, str, str]]:
    return [(b.line, b.instruction, b.reference) for b in base_references(text)]


def images(text: str) -> list[str]:
    return [b.reference for b in base_references(text)]


@settings(max_examples=600, deadline=None)
@given(dockerfiles(IMAGES))
def test_ds01_names_every_image_the_model_says_docker_uses(generated: GeneratedDockerfile) -> None:
    if generated.unknowable:
        with pytest.raises(PermissionDenied, match="no default"):
            base_references(generated.text)
    else:
        assert images(generated.text) == generated.expected, generated.text


@settings(max_examples=200, deadline=None)
@given(dockerfiles(IMAGES), st.sampled_from(["\r\n", "\n"]))
def test_line_ends_do_not_change_the_reading(generated: GeneratedDockerfile, end: str) -> None:
    text = generated.text.replace("\n", end)
    if not generated.unknowable:
        assert images(text) == generated.expected


# --- the bypasses found, and the variants an attacker tries next -----------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM\talice/x\n", ["alice/x"]),  # a tab after FROM
        ("FROM \t alice/x\n", ["alice/x"]),
        ("\u00a0FROM alice/x\n", ["alice/x"]),  # Go trims Unicode spaces before a line
        ("from alice/x\n", ["alice/x"]),
        ("fRoM alice/x AS base\nFROM BASE\n", ["alice/x"]),  # the stage, in any case
        # A no-break space after the escape: no continuation, so the FROM is an instruction.
        (BB + "LABEL a=b \\\u00a0\nFROM alice/x\n", [BUSYBOX, "alice/x"]),
        (BB + "LABEL a=b \\\u3000\nFROM alice/x\n", [BUSYBOX, "alice/x"]),
        # An escaped escape at the end is no continuation either.
        (BB + "LABEL a=b\\\\\nFROM alice/x\n", [BUSYBOX, "alice/x"]),
        # The backtick is the escape only with the directive at the very top.
        ("# escape=`\nFROM ds01-test/busybox\nLABEL a=b\\\nFROM alice/x\n", [BUSYBOX, "alice/x"]),
        ("\n# escape=`\nFROM ds01-test/busybox\nRUN echo `\nFROM alice/x\n", [BUSYBOX, "alice/x"]),
        ("# escape=`\nFROM ds01-test/busybox\nRUN echo `\nFROM alice/x\n", ["ds01-test/busybox"]),
        ('FROM "alice/x"\n', ["alice/x"]),  # Docker's lexer takes the quotes off
        ("FROM 'alice/'x\n", ["alice/x"]),
        # Comments inside a continuation are dropped, instruction-looking or not.
        ("FROM \\\n# FROM ds01-test/busybox\n alice/x\n", ["alice/x"]),
        ("ARG A=alice\nFROM ${A}/secret\n", ["alice/secret"]),
        ('ARG A="alice/secret"\nFROM $A\n', ["alice/secret"]),
        ("ARG A=alice/secret\nARG B=${A}\nFROM ${B:-ds01-test/busybox}\n", ["alice/secret"]),
        ("ARG A=x\nFROM ${A:+alice/secret}\n", ["alice/secret"]),
        (BB + "COPY --from=alice/secret / /x\n", [BUSYBOX, "alice/secret"]),
        (BB + 'COPY --from="alice/secret" / /x\n', [BUSYBOX, "alice/secret"]),
        (BB + "COPY --chown=0 --from=alice/secret / /x\n", [BUSYBOX, "alice/secret"]),
        (BB + "RUN --mount=type=bind,FROM=alice/secret,target=/x 1\n", [BUSYBOX, "alice/secret"]),
        # A stage counts only after it is defined, and COPY --from compares exactly.
        ("FROM alice-secret AS alice-secret\n", ["alice-secret"]),
        ("FROM ds01-test/busybox AS b\nCOPY --from=B / /x\n", [BUSYBOX, "B"]),
        (BB + "COPY --from=b / /x\n" + BB[:-1] + " AS b\n", [BUSYBOX, "b", BUSYBOX]),
        ("FROM --platform=linux/arm64 alice/x\n", ["alice/x"]),
        (BB + "FROM 0\n", [BUSYBOX, "0"]),  # FROM has no indexes
        (BB + "COPY --from=0 / /x\nCOPY --from=+1 / /y\n", ["ds01-test/busybox"]),
        (BB + "COPY --from=99999999999999999999 / /x\n", [BUSYBOX, "99999999999999999999"]),
        # ONBUILD triggers run in a later build whose stages ds01 cannot know.
        ("FROM ds01-test/busybox AS s\nONBUILD COPY --from=s / /x\n", [BUSYBOX, "s"]),
        (BB + "ONBUILD\vCOPY --from=alice/x / /x\n", [BUSYBOX, "alice/x"]),
        (BB + "onbuild run --mount=from=alice/x true\n", [BUSYBOX, "alice/x"]),
        ("\ufeffFROM alice/x\n", ["alice/x"]),
        # Docker's flag reader takes quotes off: --mount="from=…" is from=….
        (BB + 'RUN --mount="from=alice/x" true\n', [BUSYBOX, "alice/x"]),
    ],
)
def test_docker_reads_these_lines_so_ds01_does(text: str, expected: list[str]) -> None:
    assert images(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ARG BASE\nFROM $BASE\n", "no default"),  # only --build-arg could set it
        ("FROM busybox\nARG LATER=x\nFROM lab/${LATER}\n", "no default"),  # only global ARGs
        ("ARG A=alice/x B=$A\nFROM $B\n", "no default"),  # Docker expands with earlier lines
        ("ARG A=ds01-test/busybox\nARG A\nFROM $A\n", "no default"),  # a bare ARG unsets
        ("FROM ${A-alice/x}\n", "cannot tell"),  # no ':': Docker versions differ
        ("FROM ${A:?x}\n", "cannot tell"),
        ("FROM alice/x${A#y}\n", "cannot tell"),
        ('FROM "alice/$"\n', "cannot tell"),
        ("FROM alice\\/x\n", "cannot tell"),
        ("FROM $1\n", "cannot tell"),
        ("ARG A='x y'\nFROM $A\n", "ARG A is used"),
        (BB + "COPY --from=$S / /x\n", "variable"),
        (BB + "RUN --mount=from=${S} true\n", "variable"),
        (BB + "RUN --mount='\"from=alice/x\"' true\n", "quoted"),
        (BB + "RUN <<EOF\nFROM alice/x\nEOF\n", "here-documents"),
        (BB + "COPY <<EOF /x\nFROM alice/x\nEOF\n", "here-documents"),
    ],
)
def test_what_ds01_cannot_prove_is_refused_as_a_permission(text: str, match: str) -> None:
    with pytest.raises(PermissionDenied, match=match):
        base_references(text)


@pytest.mark.parametrize(
    "line",
    [
        "ADD http://172.17.0.5:8000/secret /x",
        "ADD https://example.org/a.tar.gz /x",
        "ADD HTTP://127.0.0.1/x /x",  # any case of the scheme
        "add http://169.254.169.254/latest/meta-data /x",  # lower-case instruction
        "ADD --chown=1000 ./local ftp://host/y /x",  # any source, not only the first
        'ADD ["http://127.0.0.1/x", "/x"]',  # JSON form
        'ADD "http://127.0.0.1/x" /x',  # the lexer takes quotes off
        "ADD ht\\tp://127.0.0.1/x /x",  # and escapes
        "ADD git@github.com:alice/private.git /src",
        "ADD github.com/alice/private /src",
        "ADD git://host/repo.git /src",
        "ADD $URL /x",  # ds01 does not expand ADD's words: a variable could be a URL
        "ADD h${T}tp://127.0.0.1/x /x",
        "ONBUILD ADD http://127.0.0.1/x /x",  # a trigger runs in a later build
        "onbuild add https://127.0.0.1/x /x",
        "ONBUILD ADD $URL /x",
    ],
)
def test_add_of_a_url_or_git_repository_is_refused(line: str) -> None:
    """dockerd fetches an ADD URL itself, on the host's network, past the build's network
    mode and ds01's firewall: refused, with the way to do it instead."""
    with pytest.raises(PermissionDenied, match=r"ADD .*(RUN curl|variable)"):
        base_references(f"{BB}ARG URL=http://127.0.0.1/x\nENV T=t\n{line}\n")


def test_add_of_local_files_still_reads() -> None:
    text = BB + 'ADD --chown=1000 a.tar.gz b/ /x/\nADD ["c d", "/y"]\nONBUILD ADD e /z\n'
    assert images(text) == [BUSYBOX]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("RUN echo\nFROM a\n", "before the first FROM"),
        ("# nothing\nRUN echo\n", "no FROM"),
        ("# nothing\n", "parse"),
        ("ARG A=x\n", "no FROM"),
        ("FROM --platform=linux/amd64\n", "FROM without an image"),
        ("FROM --plat=x alice/x\n", "no flag --plat"),
        ("FROM --PLATFORM=x alice/x\n", "no flag --PLATFORM"),
        ("FROM a b\n", "optionally"),
        ("FROM a AS b c\n", "optionally"),
        ("FROM a AS 1b\n", "not a valid name"),
        ("FROM a AS b\nFROM c AS B\n", "used twice"),
        ("ARG A=\nFROM $A\n", "empty"),
        (BB + "ADD --from=alice/x / /x\n", "no flag --from"),
        (BB + "COPY --link --from=alice/x / /x\n", "no flag --link"),
        (BB + "RUN --foo=alice/x true\n", "no flag --foo"),
        (BB + "FROMM alice/x\n", "unknown instruction"),
        # Go splits words on ASCII blanks only.
        (BB + "FROM\u00a0alice/x\n", "unknown instruction"),
        (BB + "ONBUILD FROM alice/x\n", "not allowed"),
        (BB + "\x00\nFROM alice/x\n", "NUL"),
        (BB + "RUN a \\\r\r\nFROM alice/x\n", "carriage return"),
        ("FROM ds01-test/busybox\rFROM alice/x\n", "carriage return"),
        ("# escape=x\nFROM a\n", "parse"),
    ],
)
def test_malformed_dockerfiles_are_refused_as_input(text: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        base_references(text)


def test_references_carry_their_line_and_instruction() -> None:
    text = (
        "# escape=`\nFROM `\n  alice/a AS s\nCOPY --from=alice/b / /x\nRUN --mount=from=alice/c x\n"
    )
    assert refs(text) == [
        (2, "FROM", "alice/a"),
        (4, "COPY --from", "alice/b"),
        (5, "RUN --mount from", "alice/c"),
    ]


def test_words_that_would_make_the_parser_slow_are_refused() -> None:
    long_word = "x" * (MAX_WORD_CHARS // 2 + 1)
    assert images(BB + "RUN " + "x" * MAX_WORD_CHARS + "\n") == [BUSYBOX]
    for text in (
        BB + "RUN " + "x" * (MAX_WORD_CHARS + 1) + "\n",
        BB + "RUN " + long_word + "\\\n" + long_word + "\n",  # joined by a continuation
        BB + "RUN " + long_word + "\\\n# a comment\n\n" + long_word + "\n",
    ):
        with pytest.raises(InvalidInput, match="characters without a blank"):
            base_references(text)


# --- registry short names in FROM ------------------------------------------------------------

#: A registry where "probe-b" (one of the model's images, a bare name) is a short name.
SHORT = {"probe-b": "lab/probe:v1", "python": "ds01-test/python:latest"}


@settings(max_examples=300, deadline=None)
@given(dockerfiles(IMAGES))
def test_a_short_name_in_from_reads_as_its_image_and_nothing_else_changes(
    generated: GeneratedDockerfile,
) -> None:
    if generated.unknowable:
        return
    before = base_references(generated.text)
    resolved = resolve_short_names(generated.text, SHORT.get)
    # The rewritten text, read again, names the same images on the same lines, each FROM
    # short name replaced by its image; COPY --from and RUN --mount are never rewritten.
    assert [(b.line, b.instruction) for b in resolved.bases] == [
        (b.line, b.instruction) for b in before
    ]
    for old, new in zip(before, resolved.bases, strict=True):
        rewritten = old.instruction == "FROM" and old.reference in SHORT
        if rewritten and any(s.line == old.line for s in resolved.short_names):
            assert new.reference == SHORT[old.reference]
        else:
            assert new.reference == old.reference
    assert resolved.bases == base_references(resolved.text)


@pytest.mark.parametrize(
    ("text", "expected", "rewritten"),
    [
        ("FROM python\nRUN x\n", "FROM ds01-test/python:latest\nRUN x\n", ["python"]),
        ("ARG B=python\nFROM $B AS b\n", "ARG B=python\nFROM ds01-test/python:latest AS b\n",
         ["python"]),
        # A continuation becomes one line and blank ones: later lines keep their numbers.
        ("FROM --platform=linux/amd64 \\\n  python\nRUN x\n",
         "FROM --platform=linux/amd64 ds01-test/python:latest\n\nRUN x\n", ["python"]),
        # An earlier stage of that name is the stage, not the registry's image.
        ("FROM alice/a AS python\nFROM python\n", "FROM alice/a AS python\nFROM python\n", []),
        # COPY --from is checked as the reference it names, never rewritten.
        ("FROM alice/a\nCOPY --from=python / /\n", "FROM alice/a\nCOPY --from=python / /\n",
         []),
        # A flag that would not read the same on a plain line: left as written.
        ('FROM --platform="linux amd64" python\n', 'FROM --platform="linux amd64" python\n',
         []),
        ("FROM pythonx\nFROM python:3\n", "FROM pythonx\nFROM python:3\n", []),
    ],
)  # fmt: skip
def test_short_names_in_from_are_rewritten_on_the_parsed_instruction(
    text: str, expected: str, rewritten: list[str]
) -> None:
    resolved = resolve_short_names(text, SHORT.get)
    assert resolved.text == expected
    assert [s.name for s in resolved.short_names] == rewritten
    assert resolved.bases == base_references(expected)


def test_a_short_name_does_not_lift_what_is_refused() -> None:
    with pytest.raises(PermissionDenied, match="no default"):
        resolve_short_names("ARG B\nFROM python$B\n", SHORT.get)
    with pytest.raises(InvalidInput, match="unknown instruction"):
        resolve_short_names("FROM python\nFROMM x\n", SHORT.get)


# --- the parser in a child process, as ds01d runs it ------------------------------------------


@settings(max_examples=25, deadline=None)
@given(dockerfiles(IMAGES))
def test_the_child_process_parses_as_the_package_does(generated: GeneratedDockerfile) -> None:
    assert list(parse_isolated(generated.text)) == list(parse_in_process(generated.text))


def test_a_parser_that_crashes_refuses_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'fatal error: unexpected signal' >&2\nkill -ABRT $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crashing))
    with pytest.raises(InvalidInput, match="parser failed"):
        base_references("FROM alice/x\n", parse=parse_isolated)
    with pytest.raises(InvalidInput, match="unknown instruction"):
        base_references("FROM alice/x\nFROMM x\n", parse=parse_in_process)
