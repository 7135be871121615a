"""The hyphenated commands (``container-create`` …): the same click commands as ``ds01 …``."""

from __future__ import annotations

import click

from ds01.cli import main as m


def _run(command: click.Command, prog_name: str) -> None:
    command.main(prog_name=prog_name)


def container_create() -> None:
    _run(m.container_create, "container-create")


def container_start() -> None:
    _run(m.container_start, "container-start")


def container_stop() -> None:
    _run(m.container_stop, "container-stop")


def container_remove() -> None:
    _run(m.container_remove, "container-remove")


def container_list() -> None:
    _run(m.container_list, "container-list")


def gpu_status() -> None:
    _run(m.gpu_status, "gpu-status")


def check_limits() -> None:
    _run(m.check_limits, "check-limits")


def image_list() -> None:
    _run(m.image_list, "image-list")
