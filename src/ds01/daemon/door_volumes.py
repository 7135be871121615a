"""The Docker API door's networks and volumes: a user's own, under their own names.

Every network name a caller uses means their own network (``ds01-u<uid>``); their named
volumes are listed, inspected, made and removed under their names (Docker's is
``NAME._.<uid>``, labelled theirs, at most ``MAX_USER_VOLUMES`` each).

State: none beyond the exchange's. Locks: ``_own_volume`` takes the server's
``volume_lock`` while it counts the caller's volumes and makes one. Calls: dockerd through
the engine proxy, the audit log (``volume.create``, ``volume.remove``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any, NoReturn
from urllib.parse import quote

from ds01.core import docker_api as decide
from ds01.core.docker_create import is_network_name, is_object_name
from ds01.daemon.door_exchange import DoorExchange, checked, json_body, log, user_name
from ds01.daemon.networks import network_name
from ds01.errors import Ds01Error, NotFound, QuotaExceeded
from ds01.model import labels as L
from ds01.runtime.volume_root import give_volume_root


class VolumeNetworkRequests(DoorExchange):
    """The door's network and volume requests (module docstring)."""

    def _network(self, request: decide.DockerRequest, kind: str, ref: str, body: bytes) -> NoReturn:
        """Every network name the caller uses means their own network (``ds01-u<uid>``, on
        which ds01 puts all their containers, isolated from other users'): a create makes
        nothing, an inspection shows their network under that name, a removal, connect or
        disconnect changes nothing (a connect's container must be theirs)."""
        assert self.caller is not None
        real = network_name(self.caller.uid)
        status, info = self.engine.json("GET", f"/networks/{real}")
        exists = status == 200 and isinstance(info, dict)
        net_id = str(info["Id"]) if exists else hashlib.sha256(real.encode()).hexdigest()
        subnet = list((info.get("IPAM") or {}).get("Config") or []) if exists else []
        if kind == "networks":
            shown = [decide.network_view(real, net_id, subnet)] if exists else []
            self._send(200, json.dumps(shown).encode())
        if kind == "network_create":
            checked(decide.check_network_create, json_body(body))
            self._send(201, json.dumps({"Id": net_id, "Warning": ""}).encode())
        if not is_network_name(ref):
            raise NotFound(f"network {ref} not found")
        if kind == "network_connect":
            fields = json_body(body)
            container = fields.get("Container") if isinstance(fields, dict) else None
            self._own_container(str(container or "-"))
            self._send_empty(200)
        if request.method == "DELETE":
            self._send_empty(204)
        self._send(200, json.dumps(decide.network_view(ref, net_id, subnet)).encode())

    def _volume(self, request: decide.DockerRequest, kind: str, ref: str, body: bytes) -> None:
        """The caller's named volumes: listed, inspected and created under their names
        (Docker's is ``NAME._.<uid>``, labelled theirs, at most ``MAX_USER_VOLUMES``);
        returns only for a removal of one of theirs, which dockerd then does."""
        if kind == "volumes":
            shown = [
                decide.volume_view(v, user_name(str(v.get("Name", ""))))
                for v in self._own_volumes()
            ]
            self._send(200, json.dumps({"Volumes": shown, "Warnings": []}).encode())
        if kind == "volume_create":
            name, labels = checked(decide.check_volume_create, json_body(body))
            name = name or secrets.token_hex(32)  # Docker's own name for an anonymous one
            volume = self._own_volume(name, create=labels)
            self._send(201, json.dumps(decide.volume_view(volume, name)).encode())
        volume = self._own_volume(ref)
        if request.method != "DELETE":
            self._send(200, json.dumps(decide.volume_view(volume, ref)).encode())

    def _volume_name(self, name: str) -> str:
        assert self.caller is not None
        return L.container_name(name, self.caller.uid)

    def _own_volumes(self) -> list[dict[str, Any]]:
        assert self.caller is not None
        uid = self.caller.uid
        filters = json.dumps({"label": decide.owner_labels(uid)})
        listed = self.engine.json("GET", f"/volumes?filters={quote(filters)}")[1]
        volumes = listed.get("Volumes") if isinstance(listed, dict) else None
        return [
            v for v in volumes or [] if isinstance(v, dict) and decide.owns(v.get("Labels"), uid)
        ]

    def _own_volume(
        self, name: str, create: dict[str, str] | None = None, made: list[str] | None = None
    ) -> dict[str, Any]:
        """dockerd's inspection of the caller's volume ``name``; made first (labelled
        theirs, its root given to them) when ``create`` (the client's labels) is given and
        it is missing, its Docker name then added to ``made``; otherwise Docker's "no such
        volume"."""
        assert self.caller is not None
        user = self.caller.user
        if not is_object_name(name):
            raise NotFound(decide.no_such_volume(name))
        docker_name = self._volume_name(name)
        status, info = self.engine.json("GET", f"/volumes/{quote(docker_name)}")
        if status == 200 and isinstance(info, dict) and decide.owns(info.get("Labels"), user.uid):
            return info
        if create is None or status == 200:  # someone else's under that name: not touched
            raise NotFound(decide.no_such_volume(name))
        labels = {**create, L.MANAGED: "true", L.UID: str(user.uid), L.USER: user.name}
        with self.volume_lock:
            if len(self._own_volumes()) >= decide.MAX_USER_VOLUMES:
                raise QuotaExceeded(
                    f"You have {decide.MAX_USER_VOLUMES} named volumes, the most one user "
                    "may: remove one (docker volume rm NAME) first."
                )
            status, made_info = self.engine.json(
                "POST",
                "/volumes/create",
                {"Name": docker_name, "Driver": "local", "Labels": labels},
            )
        if status != 201 or not isinstance(made_info, dict) or not decide.owns(
            made_info.get("Labels"), user.uid
        ):
            raise NotFound(decide.no_such_volume(name))
        volume: dict[str, Any] = made_info
        if made is not None:
            made.append(docker_name)
        give_volume_root(str(volume.get("Mountpoint", "")), user.uid, user.gid)
        self.service.events.emit(
            "volume.create", user=user.name, resource=f"volume/{name}", details={"via": "docker"}
        )
        return volume

    def _remove_volumes(self, docker_names: list[str]) -> None:
        """Remove the volumes a refused or failed create made (only those: a volume that
        existed before stays, and one another container took meanwhile is in use, which
        dockerd refuses to remove)."""
        assert self.caller is not None
        for docker_name in docker_names:
            try:
                status, _ = self.engine.json("DELETE", f"/volumes/{quote(docker_name)}")
            except Ds01Error as exc:
                status = 0
                log.warning("volume %s of a refused create stays: %s", docker_name, exc.message)
            if status == 204:
                self.service.events.emit(
                    "volume.remove",
                    user=self.caller.name,
                    resource=f"volume/{user_name(docker_name)}",
                    details={"via": "docker", "reason": "the create that made it failed"},
                )
