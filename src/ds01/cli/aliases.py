"""Entry points of the hyphenated commands: the same commands as ``ds01 <noun> <verb>``."""

from __future__ import annotations

from ds01.cli.entry import run_alias


def container_create() -> None:
    run_alias("container-create")


def container_start() -> None:
    run_alias("container-start")


def container_stop() -> None:
    run_alias("container-stop")


def container_remove() -> None:
    run_alias("container-remove")


def container_list() -> None:
    run_alias("container-list")


def container_logs() -> None:
    run_alias("container-logs")


def container_stats() -> None:
    run_alias("container-stats")


def gpu_status() -> None:
    run_alias("gpu-status")


def check_limits() -> None:
    run_alias("check-limits")


def image_list() -> None:
    run_alias("image-list")


def image_create() -> None:
    run_alias("image-create")


def image_build() -> None:
    run_alias("image-build")


def image_pull() -> None:
    run_alias("image-pull")


def image_remove() -> None:
    run_alias("image-remove")


def container_open() -> None:
    run_alias("container-open")


def container_attach() -> None:
    run_alias("container-open")


def container_deploy() -> None:
    run_alias("container-deploy")


def project_init() -> None:
    run_alias("project-init")


def container_retire() -> None:
    run_alias("container-retire")


def project_launch() -> None:
    run_alias("project-launch")


def user_setup() -> None:
    run_alias("user-setup")
