"""A container made through the Docker API door that ds01 re-creates on other GPUs (from a
commit of its file system) keeps what the commit does not hold: its terminal settings,
working directory, the network aliases its owner's other containers reach it by, and its
named volumes (by their Docker names), never its own name, its id or a bind."""

from __future__ import annotations

from typing import Any

from ds01.core.docker_create import RunOptions
from ds01.daemon.reacquire import kept_run_options
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord

CONTAINER_ID = "0123456789ab" + "c" * 52


def record() -> ContainerRecord:
    labels = {L.MANAGED: "true", L.UID: "1001", L.USER: "alice", L.NAME: "web"}
    return ContainerRecord.from_summary(
        {"Id": CONTAINER_ID, "Names": ["/web._.1001"], "Labels": labels, "State": "exited"}
    )


def inspected(**networks: list[str]) -> dict[str, Any]:
    """``docker inspect`` of a compose service ``web`` made through the door."""
    return {
        "Id": CONTAINER_ID,
        "Config": {"Tty": True, "OpenStdin": True, "WorkingDir": "/srv"},
        "NetworkSettings": {
            "Networks": {name: {"Aliases": aliases} for name, aliases in networks.items()}
        },
        "Mounts": [
            {"Type": "bind", "Source": "/var/lib/ds01/mounts/web._.1001/workspace",
             "Destination": "/workspace"},
            {"Type": "volume", "Name": "pgdata._.1001", "Destination": "/var/lib/postgresql"},
            {"Type": "volume", "Name": "cache._.1001", "Destination": "/cache"},
        ],
    }  # fmt: skip


def test_a_recreated_door_container_keeps_its_aliases_and_named_volumes() -> None:
    # Docker lists the container's short id among its aliases, and compose the service name.
    attrs = inspected(**{"ds01-u1001": ["web", "api", "backend", CONTAINER_ID[:12]]})
    assert kept_run_options(record(), attrs) == RunOptions(
        tty=True,
        stdin_open=True,
        working_dir="/srv",
        aliases=("api", "backend"),
        volumes=(("pgdata._.1001", "/var/lib/postgresql"), ("cache._.1001", "/cache")),
    )


def test_aliases_are_kept_once_and_none_is_none() -> None:
    attrs = inspected(a=["api", "db"], b=["db", "api"])
    assert kept_run_options(record(), attrs).aliases == ("api", "db")
    bare = {"Id": CONTAINER_ID, "Config": {}, "NetworkSettings": {"Networks": {"n": None}}}
    assert kept_run_options(record(), bare) == RunOptions()
