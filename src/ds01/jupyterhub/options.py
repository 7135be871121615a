"""What a JupyterHub server asks ds01 for: pure functions, no JupyterHub and no I/O.

- ``container_name``: the ds01 container of a user's server (``jupyterhub`` for the default
  server, ``jupyterhub-<name>`` for a named one), always a valid container name;
- ``ServerChoice`` and ``choice_from_form``: what the options form returns (an image, and
  no GPU, one MIG profile or a number of whole GPUs), checked;
- ``create_body``: the ``POST /v1/containers`` body for that choice, with the hub's
  variables (only those ds01d accepts from a hub) and the server's name, which ds01d
  records on the container; ``server_conflict``: why a start may not replace the container
  of that name (one the hub did not make, or another server's);
- ``server_url``: where the hub reaches the server (its container's address on the
  user's network, at the JupyterLab port: no host port);
- ``progress_message``: a queue entry in a sentence for the spawn page.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ds01.model.hub import HUB_ENV_PREFIXES

#: The container of a user's default server; named servers add ``-<name>``.
CONTAINER_PREFIX = "jupyterhub"
_MAX_NAME = 63
_MAX_IMAGE = 255
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class ChoiceError(ValueError):
    """The form's answer is not a choice ds01 can make (the message says why, for users)."""


def container_name(server_name: str) -> str:
    """The ds01 container of the server ``server_name`` ("" for the default server)."""
    if not server_name:
        return CONTAINER_PREFIX
    safe = _UNSAFE.sub("-", server_name.lower()).strip("-") or "server"
    return f"{CONTAINER_PREFIX}-{safe}"[:_MAX_NAME]


@dataclass(frozen=True)
class ServerChoice:
    """What a server runs on: an image and its devices (at most one of ``mig``, ``gpus``)."""

    image: str
    gpus: int = 0
    mig: str | None = None

    def describe(self) -> str:
        if self.mig:
            return f"{self.image} on a {self.mig} MIG slice"
        if self.gpus:
            return f"{self.image} on {self.gpus} whole GPU{'s' if self.gpus > 1 else ''}"
        return f"{self.image} without a GPU"


def _one(form: Mapping[str, Sequence[str] | str], key: str) -> str:
    value = form.get(key, "")
    if isinstance(value, str):
        return value.strip()
    return (value[0] if value else "").strip()


def choice_from_form(form: Mapping[str, Sequence[str] | str], default_image: str) -> ServerChoice:
    """The choice in the options form's answer: ``image`` (ds01d decides whether the user
    may use it), and ``device``: ``none``, ``mig:<profile>`` or ``gpus:<n>``.

    Raises:
        ChoiceError: no image, or an unknown device or number.
    """
    image = _one(form, "image") or default_image
    if not image or len(image) > _MAX_IMAGE:
        raise ChoiceError("Choose an image.")
    device = _one(form, "device") or "none"
    kind, _, value = device.partition(":")
    if kind == "none" and not value:
        return ServerChoice(image)
    if kind == "mig" and re.fullmatch(r"[0-9]+g\.[0-9]+gb(\+[a-z]+)?", value):
        return ServerChoice(image, mig=value)
    if kind == "gpus" and value.isascii() and value.isdigit() and 0 < int(value) <= 64:
        return ServerChoice(image, gpus=int(value))
    raise ChoiceError(f"Unknown device choice {device[:80]!r}.")


def choice_from_options(options: Mapping[str, Any], default_image: str) -> ServerChoice:
    """The choice in a server's ``user_options`` (from the form, or given as such through
    the hub's REST API, so checked again): ``image``, ``gpus``, ``mig``.

    Raises:
        ChoiceError: as ``choice_from_form``, or both GPUs and a MIG profile.
    """
    gpus, mig = options.get("gpus") or 0, options.get("mig") or None
    if mig and gpus:
        raise ChoiceError("Ask for one MIG profile or whole GPUs, not both.")
    device = f"mig:{mig}" if mig else f"gpus:{gpus}" if gpus else "none"
    image = options.get("image") or default_image
    if not isinstance(image, str):
        raise ChoiceError("Choose an image.")
    return choice_from_form({"image": image, "device": device}, default_image)


def hub_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The hub's variables among ``env`` (what the single-user server needs to find the
    hub and log users in); everything else stays out of the container."""
    return {k: v for k, v in env.items() if k.startswith(HUB_ENV_PREFIXES)}


def create_body(
    server_name: str, choice: ServerChoice, env: Mapping[str, str], *, queue: bool = True
) -> dict[str, Any]:
    """The ``POST /v1/containers`` body of the server ``server_name`` ("" for the default
    server; queued when no device is free). ds01d records ``server_name`` on the container
    (``ds01.hub``, ``ds01.hub.server``), so that ``server_conflict`` knows the hub's own
    servers."""
    return {
        "name": container_name(server_name),
        "image": choice.image,
        "gpus": choice.gpus,
        "mig": [choice.mig] if choice.mig else [],
        "queue": queue,
        "hub": {"environment": hub_environment(env), "server_name": server_name},
    }


def server_conflict(info: Mapping[str, Any], server_name: str) -> str | None:
    """Why the server ``server_name`` may not replace the user's container ``info`` (ds01d's
    answer for its container name), or ``None`` when that container is this server's own:
    one no hub made (the CLI's, say) is the user's to keep, and one of another server whose
    name maps to the same container name is that server's."""
    name = container_name(server_name)
    made_by_hub_for = info.get("hub_server")
    if made_by_hub_for is None:
        return (
            f"you have a container named {name} that the hub did not make; the hub leaves it "
            f"alone. Remove it (`container-remove {name}`, or `container-retire {name} "
            f"--keep-as IMAGE` to keep what you installed) or rename it "
            f"(`docker rename {name} OTHER`), then start this server again."
        )
    if made_by_hub_for != server_name:
        return (
            f"the server name {server_name!r} and your server {made_by_hub_for or '(default)'!r}"
            f" both map to the container {name}: choose a name that differs from it in more "
            "than case or punctuation."
        )
    return None


def server_url(info: Mapping[str, Any], container_port: int) -> str | None:
    """``http://<address>:<container_port>``: the running container's JupyterLab at its
    IPv4 address on its owner's network (ds01d's ``address``); ``None`` while it has none
    (not running). Only its owner, root and hub identities may connect there from the host
    (ds01's firewall), and once it stops its address can go only to another container of
    the same user (her own bridge), never to another local user's process, as a freed
    host port could."""
    address = info.get("address")
    if info.get("status") != "running" or not isinstance(address, str):
        return None
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return None
    return None if ip.is_loopback else f"http://{ip}:{int(container_port)}"


def progress_message(entry: Mapping[str, Any]) -> str:
    """A waiting queue entry as the spawn page shows it."""
    position, length = entry.get("position"), entry.get("queue_length")
    parts = [f"Waiting for {entry.get('request') or 'a device'}"]
    if position:
        parts.append(f"position {position}" + (f" of {length}" if length else "") + " in line")
    if entry.get("estimated_start"):
        parts.append(f"estimated start {entry['estimated_start']}")
    text = ", ".join(parts) + "."
    if entry.get("reason"):
        text += f" {entry['reason']}"
    return text


__all__ = [
    "CONTAINER_PREFIX",
    "ChoiceError",
    "ServerChoice",
    "choice_from_form",
    "choice_from_options",
    "container_name",
    "create_body",
    "hub_environment",
    "progress_message",
    "server_conflict",
    "server_url",
]
