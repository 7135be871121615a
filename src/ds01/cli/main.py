"""The ``ds01`` command and its noun groups (``ds01 container create …``).

Every command is a thin client of ds01d: it sends one request over the unix socket and
renders the answer. Imports stay light (no pydantic, no docker-py) so commands start fast.
The hyphenated commands (``container-create`` …) are the same click commands, see
``ds01.cli.aliases``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click

from ds01 import __version__
from ds01.cli import render
from ds01.cli.client import ApiError, Ds01Client
from ds01.errors import Ds01Error
from ds01.exitcodes import ExitCode

P = ParamSpec("P")
T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_CODES_EPILOG = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 quota or capacity, 4 not found, 5 permission."
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
user_option = click.option("--user", metavar="USER", help="Act on USER's containers (admins only).")


def handles_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Print ds01 errors as one clear line and exit with their code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            render.error(exc.message)
            sys.exit(int(exc.code))
        except Ds01Error as exc:
            render.error(exc.message)
            sys.exit(int(exc.exit_code))

    return wrapper


def client() -> Ds01Client:
    return Ds01Client()


def command(name: str, short_help: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A ds01 command: our context settings, exit codes in the epilog, errors handled."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        make = click.command(
            name, context_settings=CONTEXT, epilog=EXIT_CODES_EPILOG, short_help=short_help
        )
        cmd: click.Command = make(handles_errors(fn))
        return cmd

    return decorate


# -- containers ---------------------------------------------------------------------------


@command("create", short_help="Allocate devices and create a container.")
@click.argument("name_arg", metavar="NAME", required=False)
@click.option("--name", "name_opt", metavar="NAME", help="Container name (or give it as NAME).")
@click.option(
    "--image",
    "-i",
    required=True,
    help="Image name from `image-list`, or an allowed local reference.",
)
@click.option(
    "--gpus",
    "-g",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Number of whole GPUs.",
)
@click.option(
    "--mig", "mig", multiple=True, metavar="PROFILE", help="A MIG slice, e.g. 3g.20gb (repeatable)."
)
@click.option(
    "--cpus", type=click.FloatRange(min=0, min_open=True), help="CPU cores [default: your limit]."
)
@click.option("--memory", "-m", metavar="SIZE", help="Memory, e.g. 16G [default: your limit].")
@click.option("--shm-size", metavar="SIZE", help="/dev/shm size [default: your limit].")
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False),
    help="Host directory for /workspace [~/workspace].",
)
@click.option("--data", "-d", type=click.Path(file_okay=False), help="Host directory for /data.")
@json_option
def container_create(
    name_arg: str | None,
    name_opt: str | None,
    image: str,
    gpus: int,
    mig: tuple[str, ...],
    cpus: float | None,
    memory: str | None,
    shm_size: str | None,
    workspace: str | None,
    data: str | None,
    as_json: bool,
) -> None:
    """Create container NAME from an image, with GPUs within your quota.

    \b
    Examples:
      container-create thesis --image pytorch-jupyter --gpus 1
      container-create notebook --image pytorch-jupyter --mig 3g.20gb
    """
    if name_arg and name_opt and name_arg != name_opt:
        raise click.UsageError("Give the name once: as NAME or with --name.")
    name = name_arg or name_opt
    if not name:
        raise click.UsageError("Missing the container name (NAME or --name).")
    body = {
        "name": name,
        "image": image,
        "gpus": gpus,
        "mig": list(mig),
        "cpus": cpus,
        "memory": memory,
        "shm_size": shm_size,
        "workspace": os.path.abspath(workspace) if workspace else None,
        "data": os.path.abspath(data) if data else None,
    }
    info = client().request("POST", "/v1/containers", body=body)
    if as_json:
        render.emit_json(info)
        return
    devices = ", ".join(info["gpus"]) or "no GPU"
    render.ok(
        f"Created {info['name']} ({info['image']}) with {devices}"
        f" ({info['gpu_equivalents']:g} GPU-equivalents)."
    )
    click.echo(f"  Start it: container-start {info['name']}")


def _lifecycle(verb: str, method: str, action: str | None, past: str) -> click.Command:
    @command(verb, short_help=f"{verb.capitalize()} a container.")
    @click.argument("name")
    @user_option
    @json_option
    def run(name: str, user: str | None, as_json: bool, **extra: Any) -> None:
        query: dict[str, Any] = {"user": user, **extra}
        info = client().request(method, Ds01Client.container_path(name, action), query=query)
        if as_json:
            render.emit_json(info)
        else:
            render.ok(f"{past} {info['name']}.")

    run.help = f"{verb.capitalize()} container NAME (yours, or USER's for admins)."
    return run


container_start = _lifecycle("start", "POST", "start", "Started")
container_stop = _lifecycle("stop", "POST", "stop", "Stopped")
container_remove = _lifecycle("remove", "DELETE", None, "Removed")
container_remove.params.insert(
    1, click.Option(["--force", "-f"], is_flag=True, help="Remove even if running.")
)


@command("list", short_help="List your containers.")
@click.option("--all", "-a", "all_users", is_flag=True, help="Every user's containers (admins).")
@user_option
@json_option
def container_list(all_users: bool, user: str | None, as_json: bool) -> None:
    """List your containers with their status, image and GPU devices."""
    rows = client().request("GET", "/v1/containers", query={"all": all_users, "user": user})
    if as_json:
        render.emit_json(rows)
        return
    if not rows:
        click.echo("No containers. Create one with `container-create NAME --image IMAGE`.")
        return
    headers = ["NAME", "STATUS", "IMAGE", "GPU-EQ", "GPUS"]
    if all_users:
        headers.insert(0, "USER")
    render.table(
        headers,
        [
            ([r["user"]] if all_users else [])
            + [r["name"], r["status"], r["image"], r["gpu_equivalents"], r["gpus"]]
            for r in rows
        ],
    )


# -- GPUs, limits, images -------------------------------------------------------------------


@command("status", short_help="Every GPU device and who holds it.")
@json_option
def gpu_status(as_json: bool) -> None:
    """Show every GPU device (whole GPUs and MIG slices) and who holds it."""
    status = client().request("GET", "/v1/gpus")
    if as_json:
        render.emit_json(status["devices"])
        return
    if status["message"]:
        click.echo(status["message"])
    render.table(
        ["GPU", "KIND", "PROFILE", "GPU-EQ", "UUID", "HOLDER"],
        [
            [
                d["gpu_index"],
                d["kind"],
                d["profile"],
                d["gpu_equivalents"],
                d["uuid"],
                "reserved"
                if d["reserved"]
                else (
                    f"{d['holder']['user']}/{d['holder']['container']}" if d["holder"] else "free"
                ),
            ]
            for d in status["devices"]
        ],
    )
    for gpu in status["unusable"]:
        click.echo(f"GPU {gpu['index']} ({gpu['uuid']}): unusable, {gpu['reason']}.")
    click.echo(
        f"Allocated {status['allocated_gpu_equivalents']:g} of "
        f"{status['total_gpu_equivalents']:g} GPU-equivalents ({status['backend']} backend)."
    )


@command("limits", short_help="Your resolved limits and current usage.")
@click.option("--explain", is_flag=True, help="Show where each value came from.")
@user_option
@json_option
def check_limits(explain: bool, user: str | None, as_json: bool) -> None:
    """Show your limits (user → groups → defaults) and what you use now."""
    result = client().request("GET", "/v1/limits", query={"user": user, "explain": explain})
    if as_json:
        render.emit_json(result)
        return
    groups = ", ".join(result["groups"]) or "none"
    click.echo(f"User {result['user']} (groups: {groups})")
    if explain:
        render.table(
            ["LIMIT", "VALUE", "FROM"],
            [
                [k, render.limit_value(v["value"]), v["source"]]
                for k, v in result["explain"].items()
            ],
        )
    else:
        render.table(
            ["LIMIT", "VALUE"], [[k, render.limit_value(v)] for k, v in result["limits"].items()]
        )
    usage = result["usage"]
    gpu_limit = render.limit_value(result["limits"].get("gpu_limit"))
    holders = ", ".join(usage["gpu_containers"]) or "none"
    click.echo(
        f"In use: {usage['gpu_equivalents']:g} of {gpu_limit} GPU-equivalents "
        f"(held by: {holders}); "
        f"{usage['containers']} container(s)."
    )


@command("list", short_help="Images you can use that are present here.")
@click.option(
    "--all", "-a", "include_missing", is_flag=True, help="Also registry images not present here."
)
@json_option
def image_list(include_missing: bool, as_json: bool) -> None:
    """List images from the image registry (images.yaml) that are present on this machine."""
    images = client().request("GET", "/v1/images", query={"all": include_missing})
    if as_json:
        render.emit_json(images)
        return
    if not images:
        click.echo(
            "No registry image is present on this machine. `image-list --all` shows the registry."
        )
        return
    headers = ["NAME", "IMAGE", "FRAMEWORK", "DESCRIPTION"] + (
        ["PRESENT"] if include_missing else []
    )
    render.table(
        headers,
        [
            [i["name"], i["image"], i["framework"], i["description"]]
            + ([i["present"]] if include_missing else [])
            for i in images
        ],
    )


@command("check", short_help="Validate configuration files.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=True))
@click.option("--config-dir", envvar="DS01_CONFIG_DIR", help="Directory to check [/etc/ds01].")
def config_check(files: tuple[str, ...], config_dir: str | None) -> None:
    """Validate FILES (or every file of the config directory) without applying them."""
    from pathlib import Path

    from ds01.config.loader import load_config, load_file
    from ds01.paths import config_dir as default_config_dir

    targets = [Path(f) for f in files] or [default_config_dir(config_dir)]
    failed = False
    for target in targets:
        try:
            if target.is_dir():
                config = load_config(target)
                for kind, source in config.sources.items():
                    render.ok(f"{kind}: {source}")
            else:
                load_file(target)
                render.ok(f"{target}: valid")
        except Ds01Error as exc:
            render.error(exc.message)
            failed = True
    if failed:
        sys.exit(int(ExitCode.USAGE))


@command("whoami", short_help="Who ds01d sees you as.")
@json_option
def whoami(as_json: bool) -> None:
    """Show the user, groups and admin status ds01d derives from your connection."""
    me = client().request("GET", "/v1/whoami")
    if as_json:
        render.emit_json(me)
    else:
        role = "admin" if me["is_admin"] else "user"
        click.echo(f"{me['user']} (uid {me['uid']}, {role}; groups: {', '.join(me['groups'])})")


# -- the tree -------------------------------------------------------------------------------


def _group(name: str, help_text: str, *commands: click.Command) -> click.Group:
    group = click.Group(name, help=help_text, context_settings=CONTEXT)
    for cmd in commands:
        group.add_command(cmd)
    return group


cli = click.Group(
    "ds01",
    help="ds01: your share of this machine's GPUs, in containers.",
    context_settings=CONTEXT,
    epilog=EXIT_CODES_EPILOG,
)
cli = click.version_option(__version__, prog_name="ds01")(cli)
cli.add_command(
    _group(
        "container",
        "Create, start, stop, remove and list your containers.",
        container_create,
        container_start,
        container_stop,
        container_remove,
        container_list,
    )
)
cli.add_command(_group("gpu", "GPU devices.", gpu_status))
cli.add_command(_group("image", "Container images.", image_list))
cli.add_command(_group("config", "Configuration (admins).", config_check))
cli.add_command(check_limits)
cli.add_command(whoami)


def main() -> None:
    cli.main(prog_name="ds01")
