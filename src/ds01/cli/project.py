"""``project-init``: scaffold a project on the user's own account, no daemon involved.

What is written comes from ``ds01.core.scaffold`` (pure); this module checks the target,
writes the files and runs ``git init``. The ``ds01`` parser is built at every start and
calls :func:`configure`, so this module imports only the standard library at module level;
:func:`run` imports the rest.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

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
    from ds01.core.scaffold import PROJECT_TYPES, ProjectSpec, plan_project
    from ds01.errors import Conflict, InvalidInput

    try:
        name = validators.project_name(args.name)
        description = args.description.strip()
        if "\n" in description:
            raise ValueError("The description must be one line.")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    uid = os.getuid()
    spec = ProjectSpec(
        name=name,
        project_type=args.project_type,
        framework=args.framework,
        image=build_target(pwd.getpwuid(uid).pw_name, uid, name).reference,
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
    render.echo(f"  Next: read {target / 'README.md'}; `project-init --concepts` explains it all.")


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
