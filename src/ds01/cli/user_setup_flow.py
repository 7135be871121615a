"""``user-setup``'s work (``ds01.cli.user_setup`` holds its arguments and imports this).

Runs as the user, on the user's own files, and asks ds01d for everything else:

1. the workspace (``~/workspace`` or ``--workspace``), created if missing;
2. SSH: counts the keys in ``~/.ssh/authorized_keys``, tightens modes sshd would refuse,
   adds a public key given with ``--add-ssh-key`` (never generates a private key here);
3. files for the laptop in ``~/.ds01/``: an ``~/.ssh/config`` block, VS Code settings; and
   VS Code's server settings on this machine, merged (the user's values always win);
4. a starter container from the registry's ``starter`` image (JupyterLab) or ``--image``,
   with the smallest device the user may have now (``ds01.core.starter.starter_device``),
   started, and waited for until JupyterLab answers with its token. A starter image that is
   not on the machine yet is fetched first, as ``image-pull`` does (with its progress); when
   there is no starter, or it cannot be fetched, the error says what the admin and the user
   can do;
5. a docker context named ``ds01`` (``~/.docker/contexts``) for ds01's Docker API socket,
   so that ``docker context use ds01`` is enough (the current context is left alone);
6. the first-steps guide, printed and saved in ``~/.ds01/first-steps.txt``.

Safe to re-run: an existing container is reused (started if stopped), existing keys and
settings are kept. ``--json`` prints what was done instead of the guide.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import socket
import sys
from pathlib import Path

from ds01.cli import render
from ds01.cli.client import ApiError, Ds01Client
from ds01.cli.jupyter import wait_for_jupyter
from ds01.core import starter
from ds01.errors import Ds01Error, InvalidInput
from ds01.exitcodes import ExitCode
from ds01.paths import docker_socket_path, socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SETUP_DIR = ".ds01"  # under the home directory
SSH_CONFIG_FILE = "ssh-config"
VSCODE_LAPTOP_FILE = "vscode-settings.json"
GUIDE_FILE = "first-steps.txt"
VSCODE_MACHINE_SETTINGS = Path(".vscode-server/data/Machine/settings.json")
#: Where the docker CLI keeps its contexts' metadata, under the home directory.
DOCKER_CONTEXTS_DIR = Path(".docker/contexts/meta")


def run(args: argparse.Namespace) -> None:
    if not 0 < args.local_port < 65536:
        raise InvalidInput("--local-port must be from 1 to 65535.")
    me = pwd.getpwuid(os.getuid())
    home = Path(me.pw_dir)
    host = args.host or socket.getfqdn()
    say = _silent if args.json else render.echo
    workspace = Path(os.path.abspath(os.path.expanduser(args.workspace or "~/workspace")))
    client = Ds01Client()

    plan = _container_plan(client, args) if not args.no_container else None
    if plan and not _confirmed(plan, args, workspace):
        render.echo("Nothing changed.")
        return

    created_workspace = not workspace.exists()
    workspace.mkdir(parents=True, exist_ok=True)
    say(f"Workspace: {workspace}{' (created)' if created_workspace else ''}")
    ssh = _ssh(home, args.add_ssh_key)
    for note in ssh["notes"]:
        say(f"SSH: {note}")

    info: dict[str, Any] | None = None
    device = starter.StarterDevice(reason="--no-container")
    if plan is not None:
        info, device = _starter_container(client, plan, workspace, say)
        if info.get("jupyter_url"):
            say("Waiting for JupyterLab to answer…")
            _wait_for_jupyter(info["jupyter_url"], args.timeout)
    url = info.get("jupyter_url") if info else None
    host_port = _host_port(url)

    setup_dir = home / SETUP_DIR
    files = _write_laptop_files(setup_dir, args, host, me.pw_name, host_port)
    vscode = _merge_vscode_settings(home / VSCODE_MACHINE_SETTINGS)
    if vscode:
        say(f"VS Code: {vscode}")
    context = _docker_context(home)
    if context is not None:
        files.append(context)
        say(f"docker: context {starter.DOCKER_CONTEXT!r} written (`docker context use ds01`)")
    guide = starter.first_steps(
        starter.Guide(
            user=me.pw_name,
            host=host,
            alias=args.alias,
            workspace=str(workspace),
            container=info["name"] if info else args.name,
            device=device.description,
            jupyter_url=url,
            host_port=host_port,
            local_port=args.local_port,
            ssh_keys=ssh["keys"],
            files=(str(files[0]), str(setup_dir / GUIDE_FILE)),
            image=info["image"] if info else None,
        )
    )
    files.append(_write(setup_dir / GUIDE_FILE, guide))
    if args.json:
        render.emit_json(
            {
                "user": me.pw_name,
                "workspace": str(workspace),
                "container": info,
                "device": {"gpus": device.gpus, "mig": device.mig, "reason": device.reason},
                "jupyter_url": url,
                "tunnel": starter.tunnel_command(host, me.pw_name, args.local_port, host_port)
                if host_port
                else None,
                "ssh": {"authorized_keys": ssh["keys"], "notes": ssh["notes"]},
                "files": [str(f) for f in files],
            }
        )
        return
    render.echo()
    render.echo(guide.rstrip("\n"))


def _confirmed(plan: _Plan, args: argparse.Namespace, workspace: Path) -> bool:
    """Whether the user agrees to the plan; asked only at a terminal without ``--yes``."""
    if args.yes or args.json or not sys.stdin.isatty():
        return True
    render.echo(f"user-setup will: use {workspace} as your workspace; {plan.summary}.")
    return input("Go ahead? [Y/n] ").strip().lower() in ("", "y", "yes")


def _write_laptop_files(
    setup_dir: Path, args: argparse.Namespace, host: str, user: str, host_port: int | None
) -> list[Path]:
    """Write the SSH config block and the VS Code settings for the user's laptop."""
    setup_dir.mkdir(mode=0o700, exist_ok=True)
    block = starter.ssh_config_block(args.alias, host, user, args.local_port, host_port)
    laptop_settings = _laptop_settings(args.alias, args.local_port, host_port)
    return [
        _write(setup_dir / SSH_CONFIG_FILE, block),
        _write(setup_dir / VSCODE_LAPTOP_FILE, laptop_settings),
    ]


def _silent(text: str) -> None:
    """``say`` under ``--json``: nothing but the JSON is printed."""


# -- the starter container ------------------------------------------------------------------


class _Plan:
    """What user-setup will do about the starter container; ``fetch``: the registry entry
    (``/v1/images`` item) to pull first, because its image is not on the machine."""

    def __init__(
        self,
        name: str,
        existing: dict[str, Any] | None,
        image: str,
        device: starter.StarterDevice,
        fetch: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.existing, self.image, self.device = name, existing, image, device
        self.fetch = fetch

    @property
    def summary(self) -> str:
        if self.existing is not None:
            state = "reuse" if self.existing["status"] == "running" else "start"
            return f"{state} your container {self.name!r}"
        fetch = f"fetch {self.fetch['image']} (not here yet), then " if self.fetch else ""
        return (
            f"{fetch}create and start {self.name!r} from {self.image!r} with "
            f"{self.device.description}"
        )


def _container_plan(client: Ds01Client, args: argparse.Namespace) -> _Plan:
    mine = client.request("GET", "/v1/containers")
    existing = next((c for c in mine if c["name"] == args.name), None)
    if existing is not None:
        return _Plan(args.name, existing, existing["image"], starter.StarterDevice())
    entry = None if args.image else _starter_entry(client)
    image = args.image or str(entry["name"] if entry else "")
    fetch = entry if entry is not None and not entry["present"] else None
    if args.no_gpu:
        device = starter.StarterDevice(reason="--no-gpu")
    elif args.gpus is not None:
        device = starter.StarterDevice(gpus=args.gpus, gpu_equivalents=float(args.gpus))
    elif args.mig:
        device = starter.StarterDevice(mig=args.mig)
    else:
        device = starter.starter_device(
            client.request("GET", "/v1/limits"), client.request("GET", "/v1/gpus")
        )
    return _Plan(args.name, None, image, device, fetch)


def _starter_entry(client: Ds01Client) -> dict[str, Any]:
    """The registry's starter entry (present or not); ``StarterUnavailable`` if none."""
    images = client.request("GET", "/v1/images", query={"all": True})
    chosen: dict[str, Any] | None = next((i for i in images if i.get("starter")), None)
    if chosen is None:
        raise StarterUnavailable(
            "This machine has no starter image for user-setup: its image registry "
            "(images.yaml) names none with `starter:`.",
            images,
        )
    return chosen


class StarterUnavailable(Ds01Error):
    """No starter container can be made: says why, what an admin does about it and what
    the user can do now (exit 1: the machine's set-up, not the user's request)."""

    def __init__(self, why: str, images: list[dict[str, Any]]) -> None:
        here = [str(i["name"]) for i in images if i.get("present") and not i.get("own")]
        choice = f" ({', '.join(here[:6])}{', …' if len(here) > 6 else ''})" if here else ""
        super().__init__(
            f"{why}\n"
            "  An admin: sets `starter: NAME` in images.yaml to a registry image that serves "
            "JupyterLab, and makes sure it is on this machine (`docker pull IMAGE` or "
            "`ds01 image-pull NAME`; `ds01 admin doctor` lists what is missing).\n"
            f"  You, now: `user-setup --image NAME` with an image of `image-list`{choice}, or "
            "`user-setup --no-container` for the files only."
        )


def _fetch(client: Ds01Client, entry: dict[str, Any], quiet: bool, say: Any) -> None:
    """Pull the starter ``entry`` through ds01d, as ``image-pull`` does (with its progress
    unless ``quiet``); ``StarterUnavailable`` if it cannot be fetched."""
    from ds01.cli import images

    name, reference = entry["name"], entry["image"]
    say(f"Image: the starter {name} ({reference}) is not on this machine yet; fetching it…")
    try:
        job = client.request("POST", "/v1/images/pulls", body={"image": name})
        job = images.follow(client, job, quiet=quiet, verbose=True)
    except ApiError as exc:
        problem = exc.message
    else:
        if job["state"] == "succeeded":
            say(f"Image: fetched {reference}.")
            return
        problem = job["message"] or f"the pull {job['state']}"
    raise StarterUnavailable(
        f"The starter image {name} ({reference}) is not on this machine, and fetching it "
        f"failed: {problem}",
        client.request("GET", "/v1/images", query={"all": True}),
    )


def _starter_container(
    client: Ds01Client, plan: _Plan, workspace: Path, say: Any
) -> tuple[dict[str, Any], starter.StarterDevice]:
    if plan.existing is not None:
        info = plan.existing
        if info["status"] != "running":
            info = client.request("POST", Ds01Client.container_path(plan.name, "start"))
            say(f"Container: started {plan.name}")
        else:
            say(f"Container: {plan.name} is running")
        return info, _device_of(info)
    if plan.fetch is not None:
        _fetch(client, plan.fetch, quiet=say is _silent, say=say)
    device = plan.device
    if device.reason:
        say(f"GPU: none for the starter ({device.reason}).")
    body = {
        "name": plan.name,
        "image": plan.image,
        "gpus": device.gpus,
        "mig": [device.mig] if device.mig else [],
        "workspace": str(workspace),
        "interface": "deploy",
        "queue": False,
    }
    try:
        info = client.request("POST", "/v1/containers", body=body)
    except ApiError as exc:
        if exc.code != ExitCode.QUOTA or not (device.gpus or device.mig):
            raise
        # Taken between the look and the create: a notebook without a GPU now beats waiting.
        say(f"GPU: {exc.message} Starting without a GPU; `container-retire` it and re-run later.")
        device = starter.StarterDevice(reason="the device was taken a moment ago")
        info = client.request("POST", "/v1/containers", body={**body, "gpus": 0, "mig": []})
    info = client.request("POST", Ds01Client.container_path(plan.name, "start"))
    say(f"Container: created and started {plan.name} ({plan.image}) with {device.description}")
    return info, device


def _device_of(info: dict[str, Any]) -> starter.StarterDevice:
    if not info.get("gpus"):
        return starter.StarterDevice(reason="it has none")
    count = len(info["gpus"])
    return starter.StarterDevice(gpus=count, gpu_equivalents=float(info["gpu_equivalents"]))


def _wait_for_jupyter(url: str, timeout: float) -> None:
    problem = wait_for_jupyter(url, timeout)
    if problem is not None:
        raise Ds01Error(
            f"JupyterLab did not answer within {timeout:g} s ({problem}). `container-open "
            "NAME` and look at what runs; re-run user-setup when it is up."
        )


def _host_port(url: str | None) -> int | None:
    if not url:
        return None
    address = url.split("//", 1)[1].split("/", 1)[0]
    return int(address.rsplit(":", 1)[1])


# -- SSH and files --------------------------------------------------------------------------


def _ssh(home: Path, add_key: str | None) -> dict[str, Any]:
    """Count authorised keys, tighten modes sshd would refuse, add ``add_key`` if given."""
    notes: list[str] = []
    ssh_dir = home / ".ssh"
    authorized = ssh_dir / "authorized_keys"
    if add_key:
        line = _public_key_line(add_key)
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        present = authorized.read_text().splitlines() if authorized.exists() else []
        if any(_key_body(k) == _key_body(line) for k in present):
            notes.append("that key is authorised already")
        else:
            with open(authorized, "a", encoding="utf-8") as out:
                if present and not authorized.read_text().endswith("\n"):
                    out.write("\n")
                out.write(line + "\n")
            notes.append(f"added your key to {authorized}")
    # sshd (StrictModes) ignores keys in group- or world-writable places.
    for path, mode in ((ssh_dir, 0o700), (authorized, 0o600)):
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(mode)
            notes.append(f"{path} was open to others; now mode {mode:o}")
    keys = 0
    if authorized.exists():
        keys = sum(
            1
            for k in authorized.read_text(errors="replace").splitlines()
            if k.strip() and not k.lstrip().startswith("#")
        )
    notes.append(f"{keys} key(s) authorised for you" if keys else "no key authorised yet")
    return {"keys": keys, "notes": notes}


def _public_key_line(text: str) -> str:
    candidate = Path(os.path.expanduser(text))
    if not text.lstrip().startswith(tuple(starter.PUBLIC_KEY_TYPES)) and candidate.is_file():
        text = candidate.read_text(errors="replace").strip()
    problem = starter.public_key_problem(text)
    if problem:
        raise InvalidInput(f"--add-ssh-key: {problem}")
    return " ".join(text.split())


def _key_body(line: str) -> str:
    parts = line.split()
    return parts[1] if len(parts) > 1 else line


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _docker_context(home: Path) -> Path | None:
    """Write the docker context ``ds01`` for ds01's Docker API socket (none when it is
    off); return its file."""
    door = docker_socket_path(None, socket_path())
    if door is None:
        return None
    digest, meta = starter.docker_context_meta(f"unix://{door}")
    directory = home / DOCKER_CONTEXTS_DIR / digest
    directory.mkdir(parents=True, exist_ok=True)
    return _write(directory / "meta.json", meta)


def _laptop_settings(alias: str, local_port: int, host_port: int | None) -> str:
    settings: dict[str, Any] = {"remote.SSH.remotePlatform": {alias: "linux"}}
    if host_port is not None:
        settings["remote.SSH.defaultForwardedPorts"] = [
            {"name": "JupyterLab", "localPort": local_port, "remotePort": host_port}
        ]
    return json.dumps(settings, indent=2) + "\n"


def _merge_vscode_settings(path: Path) -> str:
    """Merge ds01's VS Code server settings into ``path``; say what happened."""
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return f"left {path} alone (not plain JSON; it may have comments)"
    if not isinstance(current, dict):
        return f"left {path} alone (not a JSON object)"
    merged = starter.merged_settings(current, starter.VSCODE_MACHINE_SETTINGS)
    if merged == current:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps(merged, indent=2) + "\n")
    return f"settings for the server side written to {path}"


__all__ = ["run"]
