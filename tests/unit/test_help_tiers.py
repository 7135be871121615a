"""The four help tiers: every user command has them, the texts are there and of a sensible
length, ``--help`` stays short, the pages render as plain text and with rich, and
``--guided`` checks answers, shows the command and acts only after a yes.

Guided commands that need ds01d are driven through a pty against a real daemon in
``tests/e2e/test_guided_create.py``; ``tests/unit/test_project_init.py`` drives
``project-init --guided`` through a pty.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01.cli import guided, help_pages, validators
from ds01.cli.help_texts import ADMIN_NOUNS, CONCEPTS, HELP, CommandHelp
from ds01.cli.main import COMMANDS, Command, command_parser, main
from ds01.cli.tiers import TIER_OPTIONS

USER_COMMANDS = [c for c in COMMANDS if c.path[0] not in ADMIN_NOUNS]
MAX_HELP_LINES = 25
MAX_LINE = 88


def ident(command: Command) -> str:
    return command.alias or "ds01 " + " ".join(command.path)


def parser_of(command: Command) -> argparse.ArgumentParser:
    return command_parser(ident(command), command)


def entry(command: Command) -> CommandHelp:
    return HELP[" ".join(command.path)]


def run_tier(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def _terminal_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")


def test_user_commands_are_the_expected_ones() -> None:
    names = {ident(c) for c in USER_COMMANDS}
    expected = {
        "container-create",
        "container-start",
        "container-stop",
        "container-remove",
        "container-list",
        "gpu-status",
        "check-limits",
        "image-list",
        "project-init",
        "ds01 queue",
        "ds01 whoami",
        "ds01 simulate",
    }
    assert expected <= names


@pytest.mark.parametrize("command", USER_COMMANDS, ids=ident)
def test_every_user_command_has_an_entry(command: Command) -> None:
    assert " ".join(command.path) in HELP, (
        f"{ident(command)} has no entry in ds01/cli/help_texts.py HELP"
    )


def test_no_entry_without_a_command() -> None:
    paths = {" ".join(c.path) for c in COMMANDS}
    assert set(HELP) <= paths


@pytest.mark.parametrize("command", USER_COMMANDS, ids=ident)
def test_texts_are_present_and_of_sensible_length(command: Command) -> None:
    help_entry = entry(command)
    assert 250 <= len(help_entry.info) <= 2500
    assert 1 <= len(help_entry.examples) <= 8
    assert all(line and what for line, what in help_entry.examples)
    assert 1 <= len(help_entry.concepts) <= 8
    assert set(help_entry.concepts) <= set(CONCEPTS)
    assert 1 <= len(help_entry.questions) <= 10
    for line in help_entry.info.splitlines():
        assert len(line) <= MAX_LINE, line
    for line, _ in help_entry.examples:
        assert line.split()[:1] == ident(command).split()[:1], line


@pytest.mark.parametrize("key", sorted(CONCEPTS))
def test_concepts_are_written_for_learners(key: str) -> None:
    concept = CONCEPTS[key]
    words = concept.text.split()
    assert 80 <= len(words) <= 400, f"{key}: {len(words)} words"
    assert all(len(line) <= MAX_LINE for line in concept.text.splitlines())
    assert not concept.text.lstrip().startswith("#"), "the renderer adds the heading"


def test_every_concept_is_used() -> None:
    used = {key for e in HELP.values() for key in e.concepts}
    assert used == set(CONCEPTS)


def test_concepts_match_what_ds01_does() -> None:
    text = " ".join(c.text for c in CONCEPTS.values())
    for fact in (
        "touch /workspace/.keep-alive",
        "idle_timeout_hours",
        "GPU-equivalents",
        "exit 3",
        "127.0.0.1",
        "ds01 queue",
        "3g.20gb",
    ):
        assert fact in text


@pytest.mark.parametrize("command", USER_COMMANDS, ids=ident)
def test_questions_and_more_name_real_options(command: Command) -> None:
    parser = parser_of(command)
    keys = {guided._key(a): a for a in parser._actions}
    help_entry = entry(command)
    for question in help_entry.questions:
        assert question.option in keys, f"{ident(command)}: no argument {question.option}"
        action = keys[question.option]
        if question.yes_no:
            assert action.nargs == 0, f"{question.option} is not a flag"
            assert question.default in ("y", "n")
        if question.choices_from:
            assert question.choices_from in guided.CHOICE_SOURCES
        if question.default and not question.yes_no:
            choices = [(str(c), "") for c in action.choices or ()]
            assert guided._check(question, action, choices, question.default)
    options = {o for a in parser._actions for o in a.option_strings}
    assert set(help_entry.more) <= options
    # A required argument must be asked for, or the guided command line cannot work.
    for action in parser._actions:
        optional_positional = action.nargs in ("?", "*", argparse.REMAINDER)
        if action.required and not optional_positional:
            assert guided._key(action) in {q.option for q in help_entry.questions}, action


@pytest.mark.parametrize("command", USER_COMMANDS, ids=ident)
def test_help_fits_in_25_lines(command: Command, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([*command.path, "--help"], [*command.path, "-h"]):
        text = run_tier(capsys, argv)
        assert len(text.splitlines()) <= MAX_HELP_LINES, text
        assert "--info" in text and "--concepts" in text and "--guided" in text
        assert "Exit codes: 0 ok" in text
    alias = parser_of(command).format_help()
    assert alias  # the full page, which --help shortens
    brief = help_pages.brief_help(parser_of(command))
    assert len(brief.splitlines()) <= MAX_HELP_LINES, brief


@pytest.mark.parametrize("command", USER_COMMANDS, ids=ident)
def test_four_tiers_exist_and_differ(command: Command, capsys: pytest.CaptureFixture[str]) -> None:
    brief = run_tier(capsys, [*command.path, "--help"])
    info = run_tier(capsys, [*command.path, "--info"])
    concepts = run_tier(capsys, [*command.path, "--concepts"])
    assert len({brief, info, concepts}) == 3
    assert len(info) > len(brief)
    assert entry(command).questions
    for key in entry(command).concepts:
        assert CONCEPTS[key].title.upper() in concepts


@pytest.mark.parametrize("command", USER_COMMANDS, ids=ident)
def test_info_lists_every_option_and_example(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    info = run_tier(capsys, [*command.path, "--info"])
    for action in parser_of(command)._actions:
        for option in set(action.option_strings) - TIER_OPTIONS:
            assert f"`{option}" in info, option
    for line, _ in entry(command).examples:
        assert line in info
    assert "```" not in info and "**" not in info  # plain text when not a terminal


def test_tiers_need_no_required_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """Like --help, a tier acts before argparse asks for the required --image and NAME."""
    assert "CONTAINERS" in run_tier(capsys, ["container", "create", "--concepts"])


def test_admin_commands_keep_help_and_get_a_generic_info(
    capsys: pytest.CaptureFixture[str],
) -> None:
    info = run_tier(capsys, ["admin", "exempt", "--info"])
    assert "`--hours HOURS`" in info
    assert "--info" in run_tier(capsys, ["admin", "exempt", "--help"])


def test_admin_commands_have_no_guided_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["admin", "exempt", "--guided"])
    assert exit_info.value.code == 2
    assert "no --guided mode" in capsys.readouterr().err


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pages_render_with_rich_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    command = next(c for c in COMMANDS if c.alias == "container-create")
    page = help_pages.info_page(parser_of(command))
    out = FakeTty()
    help_pages.show(page, out)
    text = out.getvalue()
    assert "\x1b[" in text  # styled by rich
    assert "OPTIONS" in text and "--image" in text
    assert "```" not in text and "**" not in text
    assert max(len(line) for line in _unstyled(text).splitlines()) <= help_pages.MAX_WIDTH


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_pages_are_plain_with_no_color_or_a_dumb_terminal(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    command = next(c for c in COMMANDS if c.alias == "container-create")
    out = FakeTty()
    help_pages.show(help_pages.concepts_page(parser_of(command)), out)
    assert "\x1b[" not in out.getvalue()
    assert out.getvalue() == help_pages.plain_text(help_pages.concepts_page(parser_of(command)))


def _unstyled(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


TIER_MODULES = ("rich", "ds01.cli.help_", "ds01.cli.guided", "ds01.core")


def loaded_after(code: str) -> list[str]:
    """The modules of interest that a fresh interpreter has loaded after running ``code``."""
    report = (
        "import json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({TIER_MODULES!r})"
        " or m in ('typing', 'dataclasses'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_building_the_parsers_loads_no_tier_machinery() -> None:
    """rich, the texts and the guided mode load only when a tier is asked for."""
    loaded = loaded_after("from ds01.cli.main import build_parser\nbuild_parser()")
    assert not [m for m in loaded if m.startswith(TIER_MODULES)], loaded


def test_container_list_starts_with_the_standard_library_only() -> None:
    loaded = loaded_after(
        "from ds01.cli.main import COMMANDS, command_parser\n"
        "command = next(c for c in COMMANDS if c.alias == 'container-list')\n"
        "command_parser('container-list', command).parse_args([])"
    )
    assert loaded == [], loaded


def test_container_list_starts_without_the_http_and_email_libraries() -> None:
    """urllib.request (http.client, email, ssl) costs a command's start-up 20 ms; only
    the commands that wait for a JupyterLab load it, when they do."""
    code = (
        "from ds01.cli.main import COMMANDS, command_parser\n"
        "command = next(c for c in COMMANDS if c.alias == 'container-list')\n"
        "command_parser('container-list', command).parse_args([])\n"
        "import sys\n"
        "print(sorted(m for m in ('urllib.request', 'http.client', 'email.parser', 'ssl') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


# -- --guided, with input() fed by the test ---------------------------------------------------


def feed(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """Make input() return ``answers`` in turn; return the prompts it was given."""
    prompts: list[str] = []
    replies: Iterator[str] = iter(answers)

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    return prompts


def test_guided_asks_again_after_a_bad_answer_then_declines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    prompts = feed(monkeypatch, ["a/b", "demo", "cv", "", "0", "", "", "n", "n"])
    with pytest.raises(SystemExit) as exit_info:
        main(["project", "init", "--guided"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Invalid project name 'a/b'" in out
    assert prompts[0] == prompts[1]  # the same question, again
    assert "ds01 project init demo --type cv --gpus 0\n" in out
    assert prompts[-1] == "Proceed? [y/N]: "
    assert "Nothing done" in out
    assert list(tmp_path.iterdir()) == []


def test_guided_runs_the_command_after_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    feed(monkeypatch, ["demo", "2", "3", "", "A demo", "", "y", "yes"])
    with pytest.raises(SystemExit) as exit_info:
        main(["project", "init", "--guided"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert (
        "ds01 project init demo --type cv --framework python --description 'A demo' "
        "--no-git\n" in out
    )
    assert (tmp_path / "demo" / "Dockerfile").is_file()
    assert not (tmp_path / "demo" / ".git").exists()


def test_guided_input_that_ends_does_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    feed(monkeypatch, ["demo"])
    with pytest.raises(SystemExit) as exit_info:
        main(["project", "init", "--guided"])
    assert exit_info.value.code == 1
    assert "nothing done" in capsys.readouterr().err


def test_guided_without_a_daemon_says_so_before_asking(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DS01_SOCKET", str(tmp_path / "none.sock"))
    prompts = feed(monkeypatch, [])
    with pytest.raises(SystemExit) as exit_info:
        main(["container", "create", "--guided"])
    assert exit_info.value.code == 1
    assert "Cannot reach ds01d" in capsys.readouterr().err
    assert prompts == []


def test_guided_yes_no_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    feed(monkeypatch, ["maybe", "Y"])
    assert guided._yes("", default=False) is False
    assert guided._yes("maybe", default=False) is True  # asked again, then "Y"


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (validators.container_name, "exp-01", "a/b"),
        (validators.container_name, "thesis", "-x"),
        (validators.size, "16G", "16Q"),
        (validators.cpus, "0.5", "0"),
        (validators.gpu_count, "2", "65"),
        (validators.port, "18888:8888", "80:8888"),
        (validators.port, "8888", "70000"),
        (validators.project_name, "cv-seg", "1cv"),
    ],
)
def test_validators(check: object, good: str, bad: str) -> None:
    assert callable(check)
    assert check(good) == good
    with pytest.raises(ValueError):
        check(bad)
