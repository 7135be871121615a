"""The image commands: ``image-list``, ``image-create``, ``image-build``, ``image-pull`` and
``image-remove`` (also as ``ds01 image <verb>``).

``image-create`` writes a commented four-phase Dockerfile on the user's own account, with
no daemon; the others are clients of ds01d. A build or a pull is a job in ds01d: the command
follows its output with long polls (``GET /v1/images/builds/{id}?wait=&since=``) and exits
with its outcome (0 succeeded, 1 failed or cancelled). Ctrl-C cancels a build; a pull goes
on in ds01d.

Imported at every start of the CLI (the command table), so standard library only at module
level; ``ds01.core`` is imported by the commands that need it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from ds01.cli import render
from ds01.cli.client import ApiError, Ds01Client
from ds01.cli.command import Command
from ds01.cli.parsing import add_json_flag
from ds01.cli.project import FRAMEWORK_NAMES
from ds01.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Seconds one long poll of a build or pull may block in the daemon.
POLL_SECONDS = 30
#: Seconds between two looks at a pull's progress on a terminal (ds01d answers a long
#: poll when output lines come, not when the progress of a layer changes).
PROGRESS_POLL_SECONDS = 1
#: Where ``image-create`` writes and ``image-build`` looks by default, below the home.
IMAGES_DIR = "images"
# Docker's bookkeeping lines of a build, shown with --verbose only.
_QUIET_BUILD_LINE = re.compile(r"^( ---> |Removing intermediate container |Successfully built )")
_STEP_LINE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def _size(value: int | None) -> str:
    """``1984241`` → ``1.9 MiB``: sizes for people, three significant digits at most."""
    if value is None:
        return "-"
    size, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    text = f"{size:.0f}" if size >= 100 or unit == "B" else f"{size:.1f}".removesuffix(".0")
    return f"{text} {unit}"


# -- image-list ------------------------------------------------------------------------------


def _configure_list(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--all", "-a", dest="include_missing", action="store_true", help="also images not here"
    )
    which.add_argument(
        "--catalog",
        action="store_true",
        help="the whole registry, AIME imports included, present or not",
    )
    add_json_flag(p)


def _run_list(args: argparse.Namespace) -> None:
    query = {"all": args.include_missing, "catalog": args.catalog}
    images = Ds01Client().request("GET", "/v1/images", query=query)
    if render.emitted_json(args.json, images):
        return
    registry = [i for i in images if not i.get("own")]
    own = [i for i in images if i.get("own")]
    if args.catalog:
        _catalog_table(registry)
        return
    if registry:
        headers = ["NAME", "IMAGE", "FRAMEWORK", "DESCRIPTION"]
        if args.include_missing:
            headers.append("PRESENT")
        render.table(
            headers,
            [
                [i["name"], i["image"], i["framework"], _description(i)]
                + ([i["present"]] if args.include_missing else [])
                for i in registry
            ],
        )
    else:
        render.echo("No registry image is present here. `image-list --all` shows the registry.")
    if own:
        render.echo("")
        render.echo("Your own images (image-build; only you can use them):")
        render.table(
            ["IMAGE", "ID", "SIZE", "BUILT"],
            [
                [
                    i["image"],
                    (i.get("id") or "").removeprefix("sha256:")[:12],
                    _size(i.get("size_bytes")),
                    (i.get("created_at") or "").replace("T", " ")[:16],
                ]
                for i in own
            ],
        )


def _description(image: dict[str, Any]) -> str:
    starter = " [user-setup starts it]" if image.get("starter") else ""
    return f"{image['description']}{starter}"


def _catalog_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        render.echo("The image registry is empty: an admin fills it in images.yaml.")
        return
    render.table(
        ["NAME", "FRAMEWORK", "VERSION", "ARCH", "HERE", "FROM", "IMAGE"],
        [
            [
                r["name"],
                r["framework"],
                r.get("version"),
                ";".join(r.get("architectures") or ()) or None,
                r["present"],
                (r.get("source") or "").split(":", 1)[0] or None,
                r["image"],
            ]
            for r in rows
        ],
    )
    here = sum(1 for r in rows if r["present"])
    render.echo(
        f"{len(rows)} registry images, {here} present here. `image-pull NAME` fetches one; "
        "FROM aime: imported from AIME's ml_images.repo."
    )


# -- image-create ----------------------------------------------------------------------------


def _configure_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="image name, e.g. thesis")
    p.add_argument(
        "--framework",
        "-f",
        choices=FRAMEWORK_NAMES,
        default="pytorch",
        metavar="FRAMEWORK",
        help=f"phase 1: {', '.join(FRAMEWORK_NAMES)} [pytorch]",
    )
    p.add_argument("--base", metavar="IMAGE", help="phase 1's FROM [the framework's image]")
    p.add_argument(
        "--jupyter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="phase 2: JupyterLab [yes]",
    )
    p.add_argument(
        "--data-science",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="phase 3: numpy, pandas, scikit-learn, … [yes]",
    )
    p.add_argument(
        "--packages",
        "-p",
        nargs="+",
        action="extend",
        default=[],
        metavar="PKG",
        help="phase 4: pip packages (e.g. transformers==4.44.2)",
    )
    p.add_argument(
        "--apt", nargs="+", action="extend", default=[], metavar="PKG", help="phase 4: apt packages"
    )
    p.add_argument(
        "--dir", "-d", metavar="DIR", help="where to write the Dockerfile [~/images/NAME]"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing Dockerfile")


def _words(values: list[str]) -> tuple[str, ...]:
    """``["a,b", "c"]`` → ``("a", "b", "c")``: packages may be given with commas too."""
    return tuple(word for value in values for word in re.split(r"[,\s]+", value) if word)


def _run_create(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ds01.core.dockerfile import DockerfileSpec, render_dockerfile
    from ds01.core.image_build import image_name

    name = image_name(args.name)
    spec = DockerfileSpec(
        name=name,
        framework=args.framework,
        base_image=args.base,
        jupyter=args.jupyter,
        data_science=args.data_science,
        packages=_words(args.packages),
        system_packages=_words(args.apt),
    )
    try:
        text = render_dockerfile(spec)
    except ValueError as exc:
        raise InvalidInput(f"Cannot write that Dockerfile: {exc}.") from None
    directory = Path(args.dir).expanduser() if args.dir else Path.home() / IMAGES_DIR / name
    target = directory / "Dockerfile"
    if target.exists() and not args.force:
        raise InvalidInput(
            f"{target} exists already. Edit it, or write a new one over it with --force."
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"Cannot write {target}: {exc.strerror or exc}.") from None
    phases = ["framework"]
    phases += ["Jupyter"] if args.jupyter else []
    phases += ["data science"] if args.data_science else []
    phases.append(f"{len(spec.packages) + len(spec.system_packages)} use-case packages")
    if name != args.name:
        render.echo(f"Image names are lower case letters, digits, '-', '_', '.': using {name!r}.")
    render.ok(f"Wrote {target} ({', '.join(phases)}).")
    render.echo("  Read it and edit it, then build it:")
    build = f"image-build {name}" + (f" --context {directory}" if args.dir else "")
    render.echo(f"  {build}")


# -- following a job -------------------------------------------------------------------------


def _job_path(kind: str, job_id: str) -> str:
    return f"/v1/images/{kind}s/{job_id}"


def _show_line(line: str, *, verbose: bool) -> None:
    step = _STEP_LINE.match(line)
    if step:
        render.echo(render.style(f"[{step[1]}/{step[2]}] {step[3]}", "bold"))
    elif verbose or not _QUIET_BUILD_LINE.match(line):
        render.echo(f"  {line}")


def follow(
    client: Ds01Client, job: dict[str, Any], *, quiet: bool, verbose: bool
) -> dict[str, Any]:
    """Print the job's output as it comes (unless ``quiet``); return it once it ended.

    A pull's progress (the layer being downloaded, how far) is shown on one line that each
    update overwrites, on a terminal only."""
    path = _job_path(job["kind"], job["id"])
    live = not quiet and job["kind"] == "pull" and sys.stdout.isatty()
    wait = PROGRESS_POLL_SECONDS if live else POLL_SECONDS
    since, shown = 0, None
    while True:
        job = client.request("GET", path, query={"wait": wait, "since": since})
        if not quiet:
            if job["lines"] and shown:
                render.progress("")
                shown = None
            for line in job["lines"]:
                _show_line(line, verbose=verbose)
        since = job["next"]
        if job["state"] != "running":
            if shown:
                render.progress("")
            return job
        if live and job.get("progress") and job["progress"] != shown:
            shown = job["progress"]
            render.progress(shown)


def _finish(client: Ds01Client, job: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        render.emit_json(client.request("GET", _job_path(job["kind"], job["id"])))
    elif job["state"] == "succeeded":
        render.ok(job["message"])
    else:
        render.error(job["message"] or f"The {job['kind']} {job['state']}.")
    if job["state"] != "succeeded":
        raise SystemExit(1)


def _limits_text(limits: dict[str, Any]) -> str:
    cpus = limits.get("cpus")
    memory = limits.get("memory_bytes")
    pids, network = limits.get("pids"), limits.get("network")
    parts = [
        f"{render.number(cpus)} CPUs" if cpus else "all CPUs",
        f"{_size(memory)} memory" if memory else "no memory limit",
        f"at most {pids} processes" if pids else "no process limit",
        "no GPU",
    ]
    if network:
        parts.append("no network" if network == "none" else f"your own network {network}")
    return ", ".join(parts)


# -- image-build -----------------------------------------------------------------------------


def _configure_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="image name: tagged <you>/NAME:TAG")
    p.add_argument(
        "--context", "-c", metavar="DIR", help="build directory you own [~/images/NAME or .]"
    )
    p.add_argument(
        "--file", "-f", default="Dockerfile", metavar="FILE", help="Dockerfile in it [Dockerfile]"
    )
    p.add_argument("--tag", "-t", default="latest", help="tag [latest]")
    p.add_argument("--pull", action="store_true", help="pull a newer base image first")
    p.add_argument("--no-cache", action="store_true", help="run every step again")
    p.add_argument("--verbose", "-v", action="store_true", help="show Docker's bookkeeping too")
    add_json_flag(p)


def _default_context(name: str) -> str:
    home = os.path.expanduser("~")
    for candidate in {name, name.lower()}:
        path = os.path.join(home, IMAGES_DIR, candidate)
        if os.path.isdir(path):
            return path
    return os.getcwd()


def _run_build(args: argparse.Namespace) -> None:
    context = os.path.abspath(os.path.expanduser(args.context)) if args.context else None
    context = context or _default_context(args.name)
    mine = os.path.isdir(context) and os.stat(context).st_uid == os.getuid()
    if mine and not os.path.exists(os.path.join(context, args.file)):
        # Checked here, as you, before ds01d packs the whole directory (ds01d decides
        # about directories that are not yours).
        raise InvalidInput(
            f"No {args.file} in {context}. Write one (`image-create {args.name}` makes a "
            "commented one in ~/images/NAME), or give --context DIR or --file FILE."
        )
    body = {
        "name": args.name,
        "context": context,
        "dockerfile": args.file,
        "tag": args.tag,
        "pull": args.pull,
        "no_cache": args.no_cache,
    }
    client = Ds01Client()
    job = client.request("POST", "/v1/images/builds", body=body)
    if not args.json:
        render.echo(
            f"Building {job['image']} from {body['context']} as build {job['id']}; each step "
            f"runs with your limits ({_limits_text(job['limits'])})."
        )
    try:
        job = follow(client, job, quiet=args.json, verbose=args.verbose)
    except KeyboardInterrupt:
        try:
            client.request("DELETE", _job_path("build", job["id"]))
            render.echo(f"\nCancelled build {job['id']}; nothing was tagged.", err=True)
        except ApiError as exc:
            render.echo(f"\n{exc.message}", err=True)
        raise
    _finish(client, job, as_json=args.json)


# -- image-pull ------------------------------------------------------------------------------


def _configure_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="registry name or allowed reference")
    add_json_flag(p)


def _run_pull(args: argparse.Namespace) -> None:
    client = Ds01Client()
    job = client.request("POST", "/v1/images/pulls", body={"image": args.image})
    if not args.json:
        render.echo(f"Pulling {job['image']} as pull {job['id']}…")
    try:
        job = follow(client, job, quiet=args.json, verbose=True)
    except KeyboardInterrupt:
        render.echo(
            f"\nThe pull goes on in ds01d; `image-list` shows {job['image']} once it is here.",
            err=True,
        )
        raise
    _finish(client, job, as_json=args.json)


# -- image-remove ----------------------------------------------------------------------------


def _configure_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="your image (e.g. alice/thesis:latest)")
    p.add_argument("--force", action="store_true", help="admins: also a registry image")
    add_json_flag(p)


def _run_remove(args: argparse.Namespace) -> None:
    query = {"ref": args.image, "force": args.force}
    removed = Ds01Client().request("DELETE", "/v1/images", query=query)
    if args.json:
        render.emit_json(removed)
    else:
        render.ok(removed["message"])


IMAGE_COMMANDS: tuple[Command, ...] = (
    Command(
        ("image", "list"),
        "image-list",
        "Images you can use: the registry's present here, and your own.",
        "List the images of the registry (images.yaml) present on this machine, then your own\n"
        "images (image-build). --all adds registry images not here; --catalog shows the whole\n"
        "registry, AIME imports included.",
        _configure_list,
        _run_list,
    ),
    Command(
        ("image", "create"),
        "image-create",
        "Write a commented four-phase Dockerfile to build your own image from.",
        "Write ~/images/NAME/Dockerfile (or --dir DIR) in four phases: framework, JupyterLab,\n"
        "data science, your --packages. On your account, no daemon. Then: image-build NAME.\n\n"
        "examples:\n"
        "  image-create thesis --packages transformers datasets\n"
        "  image-create tabular --framework python --no-jupyter",
        _configure_create,
        _run_create,
    ),
    Command(
        ("image", "build"),
        "image-build",
        "Build your own image through ds01d, with your limits.",
        "Build image NAME from a directory you own (--context, default ~/images/NAME or .)\n"
        "and tag it <you>/NAME:TAG, usable by you only. Steps run with your CPU and memory\n"
        "limits, no GPU; the output is shown as it comes. Ctrl-C cancels.\n\n"
        "examples:\n"
        "  image-build thesis\n"
        "  image-build thesis --context ~/projects/thesis --tag v2",
        _configure_build,
        _run_build,
    ),
    Command(
        ("image", "pull"),
        "image-pull",
        "Fetch a registry image onto this machine.",
        "Pull IMAGE, a registry name (`image-list --catalog`) or a reference images.yaml\n"
        "allows, showing progress. Anything else is refused (exit 5).",
        _configure_pull,
        _run_pull,
    ),
    Command(
        ("image", "remove"),
        "image-remove",
        "Remove one of your images.",
        "Remove IMAGE, one of your own images (admins: any image; a registry image only with\n"
        "--force). An image a container uses is kept: remove the container first.",
        _configure_remove,
        _run_remove,
    ),
)

__all__ = ["IMAGE_COMMANDS"]
