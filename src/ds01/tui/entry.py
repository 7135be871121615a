"""The console script ``ds01-dashboard``: its ``--help`` printed from the kept pages
(``ds01.cli.entry``), as every ds01 command's, before ``ds01.tui.main`` (argparse, the
command's arguments) loads. Standard library only."""

from __future__ import annotations


def main() -> None:
    """Entry point of ``ds01-dashboard``."""
    from ds01.cli.entry import printed_kept_help

    if not printed_kept_help("ds01-dashboard"):
        from ds01.tui.main import main as run

        run()
