"""``Command``: one entry of the CLI's command table (``ds01.cli.main.COMMANDS``).

In a module of its own so that modules holding commands (``ds01.cli.images``) and
``ds01.cli.main``, which puts them all in one table, can both import it. Standard library
only: the CLI imports it at start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


class Command:
    """One CLI command.

    Args:
        path: where it sits under ``ds01`` (``("container", "create")``).
        alias: its hyphenated name (``"container-create"``), or ``None``.
        summary: one line for lists of commands.
        description: the ``--help`` text (syntax and examples).
        configure: adds the command's arguments to its parser.
        run: does the work; returns nothing, raises ds01 errors.
    """

    def __init__(
        self,
        path: tuple[str, ...],
        alias: str | None,
        summary: str,
        description: str,
        configure: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace], None],
    ) -> None:
        self.path = path
        self.alias = alias
        self.summary = summary
        self.description = description
        self.configure = configure
        self.run = run


__all__ = ["Command"]
