"""``--guided``: a command's questions, one at a time, then the command line they make.

The questions are declared in ``ds01.cli.help_texts`` (``CommandHelp.questions``). Each
answer is checked by the question's validator and by the option's own argparse type and
choices; a bad answer is asked again with the reason. Then the equivalent command line is
shown and, after a yes, run exactly as if it had been typed. Prompts use ``input()``, so a
guided command works on a terminal, through a pty and with answers piped in.

Some choices come from ds01d (the images present here, your containers, the MIG profiles,
your queued requests): they are fetched once, before the first question, so a daemon that
cannot be reached is reported before anything is asked. Some answers are checked against
ds01d as soon as they are given (``ANSWER_CHECKS``: a name you already use, more GPUs than
you may have or the server has), and a command that cannot be done at all (no room for
another container) says so before the first question, not after the last.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ds01.cli import render
from ds01.cli.client import Ds01Client
from ds01.cli.help_pages import command_of, entry_of
from ds01.cli.help_texts import Question
from ds01.core import answer_checks
from ds01.errors import Ds01Error, InvalidInput, QuotaExceeded

#: A choice offered at a prompt: the value and a note shown beside it ("" for none).
Choice = tuple[str, str]


@dataclass(frozen=True)
class ChoiceSource:
    """Where ``Question.choices_from`` choices come from.

    Args:
        fetch: asks ds01d for the choices.
        none_left: what to tell the user when there are none and the answer is required.
    """

    fetch: Callable[[Ds01Client], list[Choice]]
    none_left: str


def _images(client: Ds01Client) -> list[Choice]:
    return [(i["name"], i.get("description") or "") for i in client.request("GET", "/v1/images")]


def _containers(client: Ds01Client) -> list[Choice]:
    rows = client.request("GET", "/v1/containers")
    return [(r["name"], f"{r['status']}, {r['image']}") for r in rows]


def _mig_profiles(client: Ds01Client) -> list[Choice]:
    free: dict[str, int] = {}
    for device in client.request("GET", "/v1/gpus")["devices"]:
        if device["kind"] == "mig" and device.get("profile"):
            idle = device["holder"] is None and not device["reserved"]
            free[device["profile"]] = free.get(device["profile"], 0) + idle
    return [(p, f"{n} free now" if n else "none free now: you would wait") for p, n in free.items()]


def _queued(client: Ds01Client) -> list[Choice]:
    rows = client.request("GET", "/v1/queue")
    return [(r["id"], f"{r['container']}, {r['request']}") for r in rows]


CHOICE_SOURCES: dict[str, ChoiceSource] = {
    "images": ChoiceSource(
        _images,
        "No registry image is present on this server: `image-list --all` shows the registry; "
        "ask an admin to pull or build one.",
    ),
    "containers": ChoiceSource(
        _containers, "You have no containers. Create one: `container-create --guided`."
    ),
    "mig-profiles": ChoiceSource(_mig_profiles, "This server has no MIG slices."),
    "queue": ChoiceSource(_queued, "You have no requests waiting in the GPU queue."),
}

@dataclass(frozen=True)
class AnswerCheck:
    """What ``Question.checked_by`` asks ds01d, with the user's own requests only.

    Args:
        before: before the first question, whether the command can be done at all: the
            reason it cannot (the interview stops with exit 3), or ``None``.
        answer: as soon as an answer is given, why it does not fit (it is asked again with
            that reason), or ``None``.
    """

    answer: Callable[[Ds01Client, str], str | None]
    before: Callable[[Ds01Client], str | None] | None = None


def _mine(client: Ds01Client) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The user's containers and waiting requests, as ds01d has them now."""
    return client.request("GET", "/v1/containers"), client.request("GET", "/v1/queue")


def _room_for_a_container(client: Ds01Client) -> str | None:
    return answer_checks.container_room_problem(
        client.request("GET", "/v1/limits"), *_mine(client)
    )


def _new_container_name(client: Ds01Client, name: str) -> str | None:
    return answer_checks.container_name_problem(name, *_mine(client))


def _gpu_count(client: Ds01Client, count: str) -> str | None:
    return answer_checks.gpu_count_problem(
        int(count), client.request("GET", "/v1/limits"), client.request("GET", "/v1/gpus")
    )


ANSWER_CHECKS: dict[str, AnswerCheck] = {
    "new-container": AnswerCheck(_new_container_name, before=_room_for_a_container),
    "gpu-count": AnswerCheck(_gpu_count),
}

#: Choices without notes are listed in the prompt itself, up to this many.
_MAX_INLINE = 8
_YES = frozenset({"y", "yes"})
_NO = frozenset({"n", "no"})


def interview(parser: argparse.ArgumentParser) -> list[str] | None:
    """Ask the questions of ``parser``'s command; return the arguments the answers make,
    or ``None`` when the user did not confirm (nothing was done)."""
    command = command_of(parser)
    entry = entry_of(parser)
    if entry is None or not entry.questions:
        raise InvalidInput(
            f"{parser.prog} has no --guided mode: `{parser.prog} --info` shows its options."
        )
    actions = {_key(a): a for a in parser._actions}
    offered = _fetch_choices(entry.questions)
    client = Ds01Client() if any(q.checked_by for q in entry.questions) else None
    if client is not None:
        _refuse_early(entry.questions, client)
    render.echo(f"{parser.prog}: {command.summary}")
    render.echo("Answer each question; Enter takes the [default]; Ctrl-C stops, doing nothing.")
    answers: dict[str, str] = {}
    for question in entry.questions:
        if question.ask_if is not None and not question.ask_if(answers):
            continue
        action = actions.get(question.option)
        choices = offered.get(question.choices_from or "", [])
        if question.choices_from and not choices:
            if question.required:
                raise Ds01Error(CHOICE_SOURCES[question.choices_from].none_left)
            continue  # nothing to choose from, nothing to ask
        if not choices and not question.yes_no and action is not None and action.choices:
            choices = [(str(c), "") for c in action.choices]
        if question.choices:
            choices = [(c, "") for c in question.choices]
        answers[question.option] = _ask(question, action, choices, client)
    argv = _command_line(parser, entry.questions, answers)
    render.echo("")
    render.echo("The command:")
    render.echo(f"  {parser.prog} {shlex.join(argv)}".rstrip())
    if not _yes(_read("Proceed? [y/N]: "), default=False):
        render.echo("Nothing done. The command above does the same whenever you run it.")
        return None
    return argv


def _key(action: argparse.Action) -> str:
    """How a question names an argument: an option string, or a positional's metavar."""
    if action.option_strings:
        return max(action.option_strings, key=len)
    return action.metavar if isinstance(action.metavar, str) else action.dest.upper()


def _refuse_early(questions: tuple[Question, ...], client: Ds01Client) -> None:
    """Raise ``QuotaExceeded`` (exit 3) with the reason when a question's check says the
    command cannot be done at all, before anything is asked."""
    for question in questions:
        check = ANSWER_CHECKS[question.checked_by] if question.checked_by else None
        problem = check.before(client) if check is not None and check.before else None
        if problem:
            raise QuotaExceeded(problem)


def _fetch_choices(questions: tuple[Question, ...]) -> dict[str, list[Choice]]:
    wanted = {q.choices_from for q in questions if q.choices_from}
    if not wanted:
        return {}
    client = Ds01Client()
    return {name: CHOICE_SOURCES[name].fetch(client) for name in sorted(wanted)}


def _read(prompt: str) -> str:
    try:
        return input(prompt).strip()
    except EOFError:
        render.echo("")
        raise Ds01Error("The input ended before the last answer: nothing done.") from None
    except KeyboardInterrupt:
        render.echo("\nStopped: nothing done.")
        raise


def _yes(text: str, *, default: bool) -> bool:
    word = text.lower()
    while word not in _YES | _NO:
        if not word:
            return default
        render.echo("  Please answer y or n.")
        word = _read("  y or n? ").lower()
    return word in _YES


def _ask(
    question: Question,
    action: argparse.Action | None,
    choices: list[Choice],
    client: Ds01Client | None,
) -> str:
    """Ask ``question`` until the answer is valid (and fits, as ds01d says when the
    question is ``checked_by`` it); return it ("" = left out)."""
    if question.yes_no:
        default_yes = question.default == "y"
        hint = "[Y/n]" if default_yes else "[y/N]"
        return "y" if _yes(_read(f"{question.prompt} {hint}: "), default=default_yes) else "n"
    default = question.default or (choices[0][0] if choices and question.required else "")
    inline = ""
    if choices and not any(note for _, note in choices) and len(choices) <= _MAX_INLINE:
        inline = f" ({', '.join(value for value, _ in choices)})"
    elif choices:
        width = max(len(value) for value, _ in choices)
        for number, (value, note) in enumerate(choices, 1):
            render.echo(f"  {number}) {value.ljust(width)}  {note}".rstrip())
    prompt = f"{question.prompt}{inline}{f' [{default}]' if default else ''}: "
    while True:
        text = _read(prompt) or default
        if not text:
            if not question.required:
                return ""
            render.echo("  An answer is needed here.")
            continue
        try:
            text = _check(question, action, choices, text)
            if question.checked_by and client is not None:
                problem = ANSWER_CHECKS[question.checked_by].answer(client, text)
                if problem:
                    raise ValueError(problem)
            return text
        except ValueError as exc:
            render.echo(f"  {render.style('✗', 'red')} {exc} Please try again.")


def _check(
    question: Question, action: argparse.Action | None, choices: list[Choice], text: str
) -> str:
    values = [value for value, _ in choices]
    if values:
        if text.isdigit() and 1 <= int(text) <= len(values) and text not in values:
            text = values[int(text) - 1]
        if text not in values:
            raise ValueError(f"{text!r} is not one of: {', '.join(values)}.")
    if question.validate is not None:
        text = question.validate(text)
    if action is not None and callable(action.type):
        try:
            action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
    return text


def _command_line(
    parser: argparse.ArgumentParser, questions: tuple[Question, ...], answers: dict[str, str]
) -> list[str]:
    """The arguments the answers make: positionals in the parser's order, then options.

    An answer that is the option's own default is left out, so the command line shows only
    what differs from typing the bare command (and ``--gpus 0`` never meets ``--mig``).
    """
    actions = {_key(a): a for a in parser._actions}

    def given(key: str) -> str:
        answer = answers.get(key, "")
        default = getattr(actions.get(key), "default", None)
        return "" if default is not None and answer == str(default) else answer

    argv = [given(_key(a)) for a in parser._actions if not a.option_strings and given(_key(a))]
    for question in questions:
        answer = given(question.option)
        if not question.option.startswith("-") or not answer:
            continue
        if question.yes_no:
            argv += [question.option] if answer == "y" else []
        else:
            argv += [question.option, answer]
    return argv


__all__ = ["ANSWER_CHECKS", "CHOICE_SOURCES", "AnswerCheck", "ChoiceSource", "interview"]
