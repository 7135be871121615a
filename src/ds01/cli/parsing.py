"""The argument parser of every ds01 command: a usage error names what was meant.

argparse ends the process itself on bad usage. ds01's parser raises :class:`UsageError`
instead, with a "did you mean" for a mistyped option or command, so that the one place
that reports errors (``ds01.cli.main``) says it in words, or as JSON under ``--json``.
"""

from __future__ import annotations

import argparse
import re
import sys

from ds01.errors import Ds01Error
from ds01.exitcodes import ExitCode

TYPE_CHECKING = False  # the CLI starts without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, NoReturn

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)'")


class UsageError(Ds01Error):
    """Bad command-line usage: an unknown option, a missing or malformed argument.

    ``usage`` is the command's usage line, shown before the message to a person.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class _BuiltOnUse(dict):  # type: ignore[type-arg]
    """Subcommand parsers by name, each held as a function that makes it until it is first
    looked up (argparse picks it, or "did you mean" lists every option)."""

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        parser = super().__getitem__(name)
        if callable(parser):  # an ArgumentParser is not callable
            parser = parser()
            self[name] = parser
        return parser  # type: ignore[no-any-return]

    def values(self) -> Iterator[argparse.ArgumentParser]:  # type: ignore[override]
        return (self[name] for name in self)


class LazySubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """argparse's subcommands, with :meth:`add_lazy`: a command listed by name and summary
    whose parser is made only when a command line picks it. ``ds01 --help`` lists sixty
    commands; making their parsers would double its time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._name_parser_map = self.choices = _BuiltOnUse()

    def add_lazy(
        self,
        name: str,
        summary: str,
        configure: Callable[[argparse.ArgumentParser], None],
        **parser_options: Any,
    ) -> None:
        """Add the command ``name`` (listed with ``summary``): when picked, a parser of this
        action's parser class made with ``parser_options`` and then given to ``configure``."""
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), summary))
        prog = f"{self._prog_prefix} {name}"

        def make() -> argparse.ArgumentParser:
            parser: argparse.ArgumentParser = self._parser_class(prog=prog, **parser_options)
            configure(parser)
            return parser

        dict.__setitem__(self._name_parser_map, name, make)


def positive_number(text: str) -> float:
    """An argparse type: a number more than 0 (hours, CPU cores)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def gpu_count(text: str) -> int:
    """An argparse type: a number of whole GPUs, 0 to 64."""
    if not text.isdigit() or int(text) > 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 64, got {text!r}")
    return int(text)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, raising :class:`UsageError` (with a suggestion) instead of exiting.
    Its subcommands are :class:`LazySubParsers`. Options must be spelt in full: with
    abbreviations, Docker's ``--runtime nvidia`` would be read as ``--runtime-hours``."""

    _seen: Sequence[str] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", LazySubParsers)

    def add_commands(self, **options: Any) -> LazySubParsers:
        """``add_subparsers(**options)``, typed as the :class:`LazySubParsers` it is."""
        commands = self.add_subparsers(**options)
        assert isinstance(commands, LazySubParsers)
        return commands

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message + self._suggestion(message), self.format_usage())

    def _suggestion(self, message: str) -> str:
        """"Did you mean" for the first unknown option typed (whatever argparse complained
        of first: a required option is missing when its name was mistyped), or for an
        invalid command."""
        from ds01.model.suggest import did_you_mean

        invalid = _INVALID_CHOICE.search(message)
        if invalid:
            return did_you_mean(invalid.group(1), _choices(self))
        known = set(_option_strings(self))
        typed = self._seen[: self._seen.index("--")] if "--" in self._seen else self._seen
        for word in typed:
            option = word.split("=", 1)[0]
            if option.startswith("--") and option not in known:
                hint = did_you_mean(option, sorted(known))
                if hint:
                    return hint
        return ""


class EveryUse(argparse.Action):
    """Collects every use of an option into a list, like argparse's ``append``, for an
    option that is meant once: a repeat reaches ds01d, which decides and refuses it with
    the reason (``--mig``: one MIG instance per container), instead of argparse keeping only
    the last. Help pages do not call it repeatable."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: the command prints JSON instead of text."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _option_strings(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every option of ``parser`` and of the commands under it."""
    for action in parser._actions:
        yield from (o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _option_strings(sub)


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    return [
        str(choice)
        for action in parser._actions
        if action.choices is not None
        for choice in action.choices
    ]


__all__ = ["ArgumentParser", "EveryUse", "LazySubParsers", "UsageError", "add_json_flag"]
