"""The four help tiers of every command, as argparse options: ``-h/--help``, ``--info``,
``--concepts`` and ``--guided``.

Like ``--help``, each tier acts as soon as argparse meets it, before required arguments
are checked (``container-create --info`` needs no NAME), then exits. The texts are in
``ds01.cli.help_texts``; this module only wires the options and is imported at start-up,
so it is standard library only and imports the rest when a tier is asked for.
"""

from __future__ import annotations

import argparse
import sys

from ds01.cli.entry import terminal_columns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

TIERS_EPILOG = "More: --info (all options, examples), --concepts (why), --guided (step by step)."


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter with room for ``--memory SIZE, -m SIZE`` before the help text."""

    def __init__(self, prog: str) -> None:
        # argparse's own default width, found without shutil.
        super().__init__(prog, max_help_position=30, width=terminal_columns() - 2)


class RawDescriptionFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's, with its default width found without shutil (``ds01``'s own page)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)


class GroupFormatter(argparse.HelpFormatter):
    """argparse's default, with its default width found without shutil (``ds01 container``)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)


class _Tier(argparse.Action):
    """An option that shows one tier and exits, like argparse's own ``--help``."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help=help or argparse.SUPPRESS,
        )


class _Help(_Tier):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        from ds01.cli.help_pages import brief_help

        sys.stdout.write(brief_help(parser))
        parser.exit()


class _Info(_Tier):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        from ds01.cli.help_pages import info_page, show

        show(info_page(parser))
        parser.exit()


class _Concepts(_Tier):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        from ds01.cli.help_pages import concepts_page, show

        show(concepts_page(parser))
        parser.exit()


class _Guided(_Tier):
    """Ask the command's questions, then run it exactly as if typed with the answers."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        from ds01.cli.guided import interview

        argv = interview(parser)
        if argv is not None:
            args = parser.parse_args(argv)
            args.command.run(args)
        parser.exit()


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` (made with ``add_help=False``) the four tiers; call it before adding
    the command's own arguments, so that ``-h`` comes first in the list of options."""
    parser.add_argument("-h", "--help", action=_Help, help="show this help and exit")
    parser.add_argument("--info", action=_Info)
    parser.add_argument("--concepts", action=_Concepts)
    parser.add_argument("--guided", action=_Guided)
    parser.epilog = f"{TIERS_EPILOG}\n{parser.epilog}" if parser.epilog else TIERS_EPILOG


#: The options :func:`add_flags` adds, which are not the command's own.
TIER_OPTIONS = frozenset({"-h", "--help", "--info", "--concepts", "--guided"})
