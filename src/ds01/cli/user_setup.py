"""``user-setup``: from "I have an account" to a JupyterLab on a GPU, in one command.

This module holds the arguments only (the ``ds01`` parser is built at every start, so it
imports nothing but ``argparse``); ``ds01.cli.user_setup_flow`` does the work.
"""

from __future__ import annotations

import argparse

DEFAULT_CONTAINER = "notebook"
DEFAULT_ALIAS = "ds01"
DEFAULT_LOCAL_PORT = 8888
DEFAULT_TIMEOUT_SECONDS = 120.0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name",
        default=DEFAULT_CONTAINER,
        metavar="NAME",
        help=f"the starter container's name [{DEFAULT_CONTAINER}]",
    )
    p.add_argument(
        "--image",
        metavar="NAME",
        help="image to start (`image-list`) [the starter]",
    )
    device = p.add_mutually_exclusive_group()
    device.add_argument("--gpus", type=int, metavar="N", help="N whole GPUs instead of the choice")
    device.add_argument("--mig", metavar="PROFILE", help="a MIG slice instead of the choice")
    device.add_argument("--no-gpu", action="store_true", help="no GPU for the starter")
    p.add_argument("--workspace", metavar="DIR", help="your workspace [~/workspace]")
    p.add_argument(
        "--host", metavar="HOST", help="this machine's name as your laptop reaches it [its FQDN]"
    )
    p.add_argument(
        "--alias",
        default=DEFAULT_ALIAS,
        metavar="ALIAS",
        help=f"the SSH host alias on your laptop [{DEFAULT_ALIAS}]",
    )
    p.add_argument(
        "--local-port",
        type=int,
        default=DEFAULT_LOCAL_PORT,
        metavar="PORT",
        help=f"the laptop port JupyterLab is tunnelled to [{DEFAULT_LOCAL_PORT}]",
    )
    p.add_argument(
        "--add-ssh-key", metavar="KEY", help="authorise a public key: its line, or a .pub file"
    )
    p.add_argument("--no-container", action="store_true", help="set up files only")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for JupyterLab [120]",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print what was done as JSON")


def run(args: argparse.Namespace) -> None:
    from ds01.cli import user_setup_flow

    user_setup_flow.run(args)


__all__ = ["DEFAULT_ALIAS", "DEFAULT_CONTAINER", "DEFAULT_LOCAL_PORT", "configure", "run"]
