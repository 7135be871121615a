"""``project-init`` (scaffold a project on the user's own account, no daemon involved) and
``project-launch`` (build its image through ds01d if needed, then deploy it).

What is written comes from ``ds01.core.scaffold`` (pure); this module checks the target,
writes the files and runs ``git init``. The ``ds01`` parser is built at every start and
calls :func:`configure`, so this module imports only the standard library at module level;
:func:`run` imports the rest.
"""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from ds01.cli.client import Ds01Client

#: The keys of ``ds01.core.scaffold.PROJECT_TYPES`` and ``ds01.core.dockerfile.FRAMEWORKS``,
#: spelled out so that building the parser imports neither (a unit test keeps them equal).
PROJECT_TYPE_NAMES = ("ml", "cv", "nlp", "rl", "audio", "ts", "llm", "custom")
FRAMEWORK_NAMES = ("pytorch", "tensorflow", "python")


def _gpus(text: str) -> int:
    if not text.isdigit() or int(text) > 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 64, got {text!r}")
    return int(text)


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``project-init``."""
    p.add_argument("name", metavar="NAME", help="project name, e.g. thesis")
    p.add_argument(
        "--type",
        "-t",
        dest="project_type",
        choices=PROJECT_TYPE_NAMES,
        default="ml",
        metavar="TYPE",
        help=f"{', '.join(PROJECT_TYPE_NAMES)} [ml]",
    )
    p.add_argument(
        "--framework",
        choices=FRAMEWORK_NAMES,
        default="pytorch",
        metavar="FRAMEWORK",
        help=f"{', '.join(FRAMEWORK_NAMES)} [pytorch]",
    )
    p.add_argument(
        "--image",
        metavar="NAME",
        help="base image (`image-list --catalog`) [a registry one]",
    )
    p.add_argument(
        "--gpus", type=_gpus, default=1, help="GPUs its containers ask for by default [1]"
    )
    p.add_argument("--dir", metavar="DIR", help="where to create it [./NAME]")
    p.add_argument("--description", default="", metavar="TEXT", help="one line about it")
    p.add_argument("--no-git", action="store_true", help="do not run `git init`")
    p.add_argument("--force", action="store_true", help="overwrite files that exist already")


def run(args: argparse.Namespace) -> None:
    import os
    import pwd
    from pathlib import Path

    from ds01.cli import render, validators
    from ds01.core.image_build import build_target
    from ds01.core.scaffold import PROJECT_TYPES, ProjectSpec, choose_base, plan_project
    from ds01.errors import Conflict, Ds01Error, InvalidInput

    try:
        name = validators.project_name(args.name)
        description = args.description.strip()
        if "\n" in description:
            raise ValueError("The description must be one line.")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    try:
        registry, registry_note = _registry()
    except Ds01Error:
        if not args.image:
            raise
        registry, registry_note = [], "."
    try:
        base = choose_base(registry, args.framework, args.image)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    uid = os.getuid()
    spec = ProjectSpec(
        name=name,
        project_type=args.project_type,
        framework=args.framework,
        image=build_target(pwd.getpwuid(uid).pw_name, uid, name).reference,
        base=base,
        gpus=args.gpus,
        description=description,
    )
    scaffold = plan_project(spec)
    target = Path(os.path.expanduser(args.dir or name))
    if target.exists() and not target.is_dir():
        raise Conflict(f"{target} exists and is not a directory: pick another with --dir.")
    existing = sorted(f for f in scaffold.files if (target / f).exists())
    if existing and not args.force:
        raise Conflict(
            f"{target} already has {', '.join(existing)}: nothing written. Pick another "
            "directory with --dir, or overwrite them with --force."
        )
    for directory in scaffold.directories:
        (target / directory).mkdir(parents=True, exist_ok=True)
    for path, text in scaffold.files.items():
        (target / path).write_text(text, encoding="utf-8")
    render.ok(
        f"Created project {name} in {target} ({PROJECT_TYPES[spec.project_type].title}, "
        f"{spec.framework}): {len(scaffold.files)} files, {len(scaffold.directories)} "
        "directories."
    )
    if args.no_git:
        render.echo("  git: skipped (--no-git).")
    else:
        render.echo(f"  git: {_git_init(target)}")
    render.echo(f"  Image: {spec.image}, built from {target / 'Dockerfile'}.")
    render.echo(f"  Base: {base.shown}{registry_note}")
    if base.present is False and base.name:
        render.echo(
            f"  {base.name} is not on this machine yet: `image-pull {base.name}` (or ask an "
            "admin) before `project-launch`."
        )
    render.echo(f"  Next: read {target / 'README.md'}; `project-init --concepts` explains it all.")


def _registry() -> tuple[list[dict[str, Any]], str]:
    """This site's image registry, and a note on where it came from: ds01d's (which knows
    what is on the machine), else ``images.yaml`` of the config directory (or the embedded
    default), read here when ds01d does not answer."""
    from pathlib import Path

    from ds01.cli.client import Ds01Client
    from ds01.config.loader import load_config
    from ds01.errors import DaemonUnavailable, Ds01Error
    from ds01.paths import config_dir

    try:
        return list(Ds01Client().request("GET", "/v1/images", query={"catalog": True})), "."
    except DaemonUnavailable:
        pass
    directory = Path(config_dir())
    try:
        images = load_config(directory).images
    except Ds01Error as exc:
        raise Ds01Error(
            "project-init picks its base image from this site's image registry, and neither "
            f"ds01d answers nor can {directory} be read ({exc.message}). Give the base with "
            "--image IMAGE."
        ) from None
    registry = [
        {"name": e.name, "image": e.image, "framework": e.framework,
         "description": e.description, "starter": e.name == images.starter}
        for e in images.entries
    ]  # fmt: skip
    return registry, f" (from {directory}; ds01d does not answer, so not checked as present)."


def _git_init(target: Path) -> str:
    """Run ``git init`` in ``target`` if git is installed; say what happened."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        return "not installed here, so no repository was made (`git init` later)."
    if (target / ".git").exists():
        return "already a repository; left as it is."
    result = subprocess.run(
        [git, "init", "--quiet", str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"`git init` failed ({result.stderr.strip() or result.returncode}); run it later."
    return "initialised an empty repository (nothing committed yet)."


# -- project-launch --------------------------------------------------------------------------


def configure_launch(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``project-launch``."""
    from ds01.cli.parsing import EveryUse  # loaded with the parser already: costs nothing

    p.add_argument("dir", metavar="DIR", nargs="?", default=".", help="the project [.]")
    p.add_argument("--name", metavar="NAME", help="container name [the project's]")
    gpus = p.add_mutually_exclusive_group()
    gpus.add_argument("--gpus", type=_gpus, help="whole GPUs [the project's gpus]")
    gpus.add_argument(
        "--mig",
        action=EveryUse,
        default=[],
        metavar="PROFILE",
        help="a MIG slice instead, e.g. 1g.10gb (one per container)",
    )
    p.add_argument("--rebuild", action="store_true", help="build the image even if it exists")
    p.add_argument("--background", "-b", action="store_true", help="do not open a terminal")
    p.add_argument(
        "--no-wait", action="store_true", help="fail (exit 3) instead of queueing for GPUs"
    )
    p.add_argument("--json", action="store_true", help="print the container as JSON")


def run_launch(args: argparse.Namespace) -> None:
    """Build the project's image if needed, then deploy it with the project at /workspace."""
    import os
    import pwd
    from pathlib import Path

    from ds01.cli import images, main, render
    from ds01.cli.client import Ds01Client
    from ds01.errors import Ds01Error

    project = Path(os.path.abspath(os.path.expanduser(args.dir)))
    settings = read_project_settings(project)
    reference = settings["image"]
    me = pwd.getpwuid(os.getuid()).pw_name
    repository, _, tag = reference.rpartition(":")
    namespace, _, image_name = repository.partition("/")
    if namespace != me or not image_name or not tag:
        raise _invalid(
            f"[tool.ds01] image = {reference!r} in {project / 'pyproject.toml'} is not an "
            f"image of yours: it must read '{me}/NAME:TAG' (ds01 tags your builds there)."
        )
    client = Ds01Client()
    own = {i["name"] for i in client.request("GET", "/v1/images") if i.get("own")}
    if args.rebuild or reference not in own:
        if not (project / "Dockerfile").is_file():
            raise _invalid(f"No Dockerfile in {project}: nothing to build {reference} from.")
        body = {"name": image_name, "context": str(project), "dockerfile": "Dockerfile",
                "tag": tag, "pull": False, "no_cache": False}  # fmt: skip
        job = client.request("POST", "/v1/images/builds", body=body)
        if not args.json:
            render.echo(f"Building {job['image']} from {project} (build {job['id']}).")
        job = images.follow(client, job, quiet=args.json, verbose=False)
        if job["state"] != "succeeded":
            raise Ds01Error(job["message"] or f"The build {job['state']}.")
        if not args.json:
            render.ok(job["message"])
    elif not args.json:
        render.echo(f"Image {reference} is built already (--rebuild builds it again).")
    name = args.name or project.name
    existing = next((c for c in client.request("GET", "/v1/containers") if c["name"] == name), None)
    if existing is not None:
        _relaunch(client, existing, reference, args)
        return
    argv = [name, "--image", reference, "--workspace", str(project)]
    if args.mig:  # each one: container-deploy's request refuses a second with the reason
        argv += [word for profile in args.mig for word in ("--mig", profile)]
    else:
        argv += ["--gpus", str(args.gpus if args.gpus is not None else settings["gpus"])]
    argv += [flag for flag, on in (("--background", args.background), ("--no-wait",
             args.no_wait), ("--json", args.json)) if on]  # fmt: skip
    deploy = next(c for c in main.COMMANDS if c.alias == "container-deploy")
    deploy.run(main.command_parser("project-launch", deploy).parse_args(argv))


def _relaunch(
    client: Ds01Client, container: dict[str, Any], reference: str, args: argparse.Namespace
) -> None:
    """The project's container exists: start it if needed, then open it (or just say so)."""
    from ds01.cli import render, terminal
    from ds01.cli.jupyter import show_jupyter

    name = container["name"]
    if container["image"] != reference and not args.json:
        render.echo(
            f"Container {name} exists, from {container['image']}; it is used as it is "
            f"(`container-retire {name}` first for one from {reference})."
        )
    if args.background or args.json:
        if container["status"] != "running":
            container = client.request("POST", client.container_path(name, "start"))
        if render.emitted_json(args.json, container):
            return
        render.ok(f"{name} is running.")
        if container.get("jupyter_url"):
            show_jupyter(name, container["jupyter_url"])
        render.echo(f"  Open a terminal in it: container-open {name}")
        return
    raise SystemExit(terminal.run(name, [], None))


def read_project_settings(project: Path) -> dict[str, Any]:
    """``[tool.ds01]`` of ``project/pyproject.toml``: ``image`` (str) and ``gpus`` (int)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    path = project / "pyproject.toml"
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise _invalid(
            f"{project} is not a ds01 project: no pyproject.toml (`project-init NAME` makes one)."
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise _invalid(f"Cannot read {path}: {exc}") from None
    section = document.get("tool", {}).get("ds01")
    if not isinstance(section, dict):
        raise _invalid(f"{path} has no [tool.ds01] section (`project-init` writes one).")
    image, gpus = section.get("image"), section.get("gpus", 0)
    if not isinstance(image, str) or not image:
        raise _invalid(f"[tool.ds01] in {path} needs image = 'USER/NAME:TAG'.")
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 0 <= gpus <= 64:
        raise _invalid(f"[tool.ds01] gpus in {path} must be a whole number from 0 to 64.")
    return {"image": image, "gpus": gpus}


def _invalid(message: str) -> Exception:
    from ds01.errors import InvalidInput

    return InvalidInput(message)
