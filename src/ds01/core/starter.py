"""``user-setup``'s decisions and texts, from what ds01d reports. Pure.

- :func:`starter_device`: which one device a user's starter container asks for, within the
  user's quota and policy, from ``check-limits`` and ``gpu-status`` answers;
- :func:`ssh_config_block`, :func:`tunnel_command`, :func:`first_steps`: what the user copies
  to their laptop and reads first;
- :func:`public_key_problem`, :func:`merged_settings`: checks of a pasted public key and a
  merge of VS Code settings that never overrides the user's own values.

The inputs are the API's JSON (``dict``), so the CLI can call these without pydantic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

#: Public key types OpenSSH accepts in authorized_keys (no DSA: OpenSSH dropped it).
PUBLIC_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)

#: Settings for VS Code's server on this machine (``~/.vscode-server/data/Machine``): keep
#: its file watcher off data and checkpoints, which are large and change often on a shared
#: server.
VSCODE_MACHINE_SETTINGS: dict[str, Any] = {
    "files.watcherExclude": {
        "**/data/**": True,
        "**/models/checkpoints/**": True,
        "**/outputs/**": True,
        "**/.ipynb_checkpoints/**": True,
    },
    "search.exclude": {"**/data/**": True, "**/models/checkpoints/**": True},
}


@dataclass(frozen=True)
class StarterDevice:
    """The device a starter container asks for: ``gpus`` whole GPUs or a ``mig`` profile;
    neither when ``reason`` says why it gets none."""

    gpus: int = 0
    mig: str | None = None
    gpu_equivalents: float = 0.0
    reason: str = ""

    @property
    def description(self) -> str:
        if self.mig:
            return f"a MIG slice {self.mig} ({self.gpu_equivalents:g} GPU-eq)"
        if self.gpus:
            return "a whole GPU"
        return "no GPU"


def starter_device(limits: dict[str, Any], gpu_status: dict[str, Any]) -> StarterDevice:
    """The smallest free device the user may have now, within quota; else none and why.

    ``limits``: the ``/v1/limits`` answer (``limits`` with ``gpu_limit``,
    ``max_gpus_per_container``, ``allow_full_gpu``, ``allow_mig``; ``usage`` with
    ``gpu_equivalents``). ``gpu_status``: the ``/v1/gpus`` answer (``devices``).
    The smallest device, because a starter notebook rarely needs more and the rest of the
    machine stays free for others; a MIG slice is therefore chosen over a whole GPU.
    """
    quota = limits.get("limits") or {}
    used = Fraction(str((limits.get("usage") or {}).get("gpu_equivalents") or 0))
    room: Fraction | None = None
    for key in ("gpu_limit", "max_gpus_per_container"):
        value = quota.get(key)
        if value is not None:
            left = Fraction(str(value)) - (used if key == "gpu_limit" else 0)
            room = left if room is None else min(room, left)
    allowed_kinds = {
        kind
        for kind, key in (("gpu", "allow_full_gpu"), ("mig", "allow_mig"))
        if quota.get(key, True) is not False
    }
    devices = gpu_status.get("devices") or []
    if not devices:
        return StarterDevice(reason="this machine has no GPU devices")
    if not allowed_kinds:
        return StarterDevice(reason="your quota allows no GPU devices")
    mine = [d for d in devices if d.get("kind") in allowed_kinds and not d.get("reserved")]
    fitting = [
        d for d in mine if room is None or Fraction(str(d.get("gpu_equivalents", 1))) <= room
    ]
    free = [d for d in fitting if d.get("holder") is None]
    if not free:
        reason = (
            "every device you may have is in use right now"
            if fitting
            else "your GPU quota is used up by your other containers"
        )
        return StarterDevice(reason=reason)
    best = min(free, key=lambda d: (float(d.get("gpu_equivalents", 1)), d.get("kind") != "mig"))
    if best.get("kind") == "mig" and best.get("profile"):
        return StarterDevice(
            mig=str(best["profile"]), gpu_equivalents=float(best.get("gpu_equivalents", 0))
        )
    return StarterDevice(gpus=1, gpu_equivalents=1.0)


def public_key_problem(line: str) -> str | None:
    """Why ``line`` is not one OpenSSH public key (``TYPE BASE64 [comment]``), or ``None``.

    A private key pasted by mistake is refused with that said plainly."""
    text = line.strip()
    if "PRIVATE KEY" in text:
        return (
            "that is a PRIVATE key: never copy it anywhere. Give the .pub file's line "
            "(e.g. ~/.ssh/id_ed25519.pub on your laptop)."
        )
    parts = text.split()
    if len(parts) < 2 or parts[0] not in PUBLIC_KEY_TYPES:
        return (
            "expected one line like 'ssh-ed25519 AAAA… you@laptop' "
            f"(types: {', '.join(sorted(PUBLIC_KEY_TYPES))})"
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "the key's second field is not base64"
    # The blob starts with the key type again, length-prefixed (RFC 4253 §6.6).
    size = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + size].decode("ascii", "replace") != parts[0]:
        return f"the key data does not belong to a {parts[0]} key"
    return None


def merged_settings(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """``current`` with the keys of ``wanted`` it lacks (nested objects merged the same way).

    The user's own values always win: re-running user-setup never undoes their choices."""
    merged = dict(current)
    for key, value in wanted.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merged_settings(merged[key], value)
    return merged


def ssh_config_block(
    alias: str, host: str, user: str, local_port: int, host_port: int | None
) -> str:
    """The ``~/.ssh/config`` block for the user's laptop: the host, and the JupyterLab tunnel."""
    lines = [
        f"Host {alias}",
        f"    HostName {host}",
        f"    User {user}",
        "    IdentityFile ~/.ssh/id_ed25519",
        "    ServerAliveInterval 60",
    ]
    if host_port is not None:
        lines.append(f"    LocalForward {local_port} 127.0.0.1:{host_port}")
    return "\n".join(lines) + "\n"


def tunnel_command(host: str, user: str, local_port: int, host_port: int) -> str:
    """The one-off SSH command (on the laptop) that brings JupyterLab to ``localhost``."""
    return f"ssh -N -L {local_port}:127.0.0.1:{host_port} {user}@{host}"


@dataclass(frozen=True)
class Guide:
    """What the first-steps guide says; see :func:`first_steps`."""

    user: str
    host: str
    alias: str
    workspace: str
    container: str
    device: str
    jupyter_url: str | None
    host_port: int | None
    local_port: int
    ssh_keys: int
    files: tuple[str, ...]
    image: str | None = None  # the starter's image as the user names it (a registry name)


#: The docker context ``user-setup`` writes: ``docker context use ds01`` is then enough.
DOCKER_CONTEXT = "ds01"


def docker_context_meta(host: str, name: str = DOCKER_CONTEXT) -> tuple[str, str]:
    """The docker CLI's context ``name`` for the daemon socket ``host`` (``unix://…``): the
    directory under ``~/.docker/contexts/meta/`` (the SHA-256 of the name, as the CLI
    names it) and its ``meta.json``."""
    meta = {
        "Name": name,
        "Metadata": {"Description": "ds01's Docker API: your containers, on ds01's rules"},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
    }
    return hashlib.sha256(name.encode()).hexdigest(), json.dumps(meta, indent=2) + "\n"


def first_steps(guide: Guide) -> str:
    """The first-steps guide, as plain text (Markdown-friendly)."""
    out = [
        "Your ds01 set-up is ready.",
        "",
        f"  Workspace   {guide.workspace}  (/workspace in your containers; kept when they go)",
        f"  Container   {guide.container}, with {guide.device}",
    ]
    if guide.jupyter_url:
        out.append(f"  JupyterLab  {guide.jupyter_url}")
        out.append("              (on this machine only; the token is your password)")
    out += ["", "From your laptop:"]
    if guide.ssh_keys == 0:
        out += [
            "  0. No SSH key is authorised for you here yet. On your laptop (never on the",
            "     server): `ssh-keygen -t ed25519`, then",
            f"     `ssh-copy-id {guide.user}@{guide.host}` (or re-run user-setup with",
            "     --add-ssh-key 'ssh-ed25519 AAAA…' giving the .pub file's line).",
        ]
    out += [
        f"  1. Add this block to ~/.ssh/config (also in {guide.files[0]}):",
        "",
        *(
            "       " + line
            for line in ssh_config_block(
                guide.alias, guide.host, guide.user, guide.local_port, guide.host_port
            ).splitlines()
        ),
        "",
    ]
    if guide.host_port is not None and guide.jupyter_url:
        local_url = guide.jupyter_url.replace(
            f"127.0.0.1:{guide.host_port}", f"localhost:{guide.local_port}", 1
        )
        out += [
            f"  2. `ssh {guide.alias}` keeps the tunnel open (or, without the block:",
            f"     `{tunnel_command(guide.host, guide.user, guide.local_port, guide.host_port)}`),",
            f"     then open {local_url}",
            f"  3. VS Code: Remote-SSH → connect to '{guide.alias}'; or use the JupyterLab URL",
            "     as an existing Jupyter server for notebooks.",
        ]
    else:
        out.append(
            f"  2. `ssh {guide.alias}`, then `container-open {guide.container}` for a shell."
        )
    out += [
        "",
        "Quick reference:",
        "  container-list                 your containers, their GPUs and JupyterLab URLs",
        f"  container-open {guide.container:<15} a terminal in it, as you",
        f"  container-stop {guide.container:<15} stop it (its GPU goes back after a while)",
        f"  container-deploy NAME --image {guide.image or 'IMAGE'} --gpus 1"
        "   another container, all in one",
        "  project-init NAME / project-launch DIR         a project with its own image",
        "  gpu-status, check-limits       the machine's devices; your quota and usage",
        "",
        "Help: every command has --help, --info, --concepts and --guided.",
        "Idle containers are stopped after a while: save your work in /workspace.",
    ]
    if len(guide.files) > 1:
        out.append(f"This guide is saved in {guide.files[-1]}; re-running user-setup is safe.")
    return "\n".join(out) + "\n"


__all__ = [
    "PUBLIC_KEY_TYPES",
    "VSCODE_MACHINE_SETTINGS",
    "Guide",
    "StarterDevice",
    "first_steps",
    "merged_settings",
    "public_key_problem",
    "ssh_config_block",
    "starter_device",
    "tunnel_command",
]
