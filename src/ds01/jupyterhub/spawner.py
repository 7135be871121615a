"""``Ds01Spawner``: JupyterHub's servers as ds01 containers, on the user's quotas and GPUs.

The hub runs as a hub identity (``hub:`` in resource-limits.yaml) and calls ds01d on its
socket on behalf of the user (``Ds01Client(on_behalf_of=user)``): ds01d applies that user's
quotas, queue place and rules, and logs both names. Nothing here decides who gets what.

Lifecycle:

- the server's container is the user's container of its name (``container_name``) that
  ds01d marked as made by a hub for this very server (``ds01.hub``, ``ds01.hub.server``);
  no method touches or reports any other;
- ``start``: removes the server's old container (the hub gives each start a new API token;
  ``/workspace`` is the user's home directory's ``workspace``, kept); a same-named container
  of the user's own, or of another server whose name maps to the same container name, is
  left alone and the start refused, saying so (``server_conflict``). Then creates the
  container (queued when no device is free: ``progress`` streams the queue position and
  estimated start, and the container starts by itself when its turn comes), starts it,
  waits until JupyterLab answers (looking every 0.1 s: the hub's own look backs off to
  5 s) and returns ``http://<address>:<container_port>``, its JupyterLab at the
  container's own address on the user's network (``server_url``). No host port is
  published: ds01's firewall lets only the user, root and hub identities connect there
  from the host, and when the container stops, nobody else can take the address over
  (only the user's own containers get addresses on her network), so the hub's proxy never
  sends the user's pages to another local user's process, however long the hub takes to
  notice the stop. When her last container is removed, ds01d keeps her network (and so its
  subnet and addresses) at least the ``hub:`` section's ``address_keep_seconds`` (60 s by
  default, over the hub's poll) before removing it, so another user's new network cannot
  get the address the proxy may still send her pages to until the hub's next poll;
- ``stop``: stops the container (kept, like the workspace); a waiting queue request is
  withdrawn, so a cancel in the hub leaves nothing in line;
- ``poll``: ``None`` while the container runs, else 0; ds01's idle and runtime stops
  therefore show as a stopped server;
- ``get_state``/``load_state``: the container's name and a waiting request's id, so a
  restarted hub finds its servers again (ds01d keeps the containers and the queue).

Blocking socket calls run in a worker thread (``asyncio.to_thread``); the hub's event loop
never waits on ds01d.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Float, Integer, Unicode

from ds01.cli.client import ApiError, Ds01Client
from ds01.jupyterhub import form
from ds01.jupyterhub.options import (
    ChoiceError,
    ServerChoice,
    choice_from_form,
    choice_from_options,
    container_name,
    create_body,
    progress_message,
    server_conflict,
    server_url,
)

#: Seconds one long-poll of a waiting queue request may take.
_QUEUE_WAIT_SECONDS = 5
#: Seconds between two looks whether a started server answers. The hub's own look, after
#: ``start`` returns, backs off to 5 s between tries (``jupyterhub.utils.exponential_backoff``):
#: JupyterLab up 2 s after its container started was found a second or more later.
_ANSWER_POLL_SECONDS = 0.1
#: Looks between two checks that the container still runs.
_LOOKS_PER_STATUS_CHECK = 20


def refusal(message: str) -> web.HTTPError:
    """An error whose message the hub shows the user as it is, on the form or the spawn
    page (any other exception becomes "Unhandled error starting server")."""
    error = web.HTTPError(400, log_message=f"ds01: {message}".replace("%", "%%"))
    error.jupyterhub_message = f"ds01: {message}"  # type: ignore[attr-defined]
    return error


class Ds01Spawner(Spawner):  # type: ignore[misc]  # JupyterHub ships no type hints
    """Spawns single-user servers as ds01 containers (see the module docstring)."""

    socket_path = Unicode(
        "",
        config=True,
        help="ds01d's socket (default: $DS01_SOCKET or /run/ds01/ds01.sock).",
    )
    image = Unicode(
        "",
        config=True,
        help="The image a server runs when the form names none (default: the first of "
        "ds01's registry with JupyterLab).",
    )
    container_port = Integer(
        8888,
        config=True,
        help="The port the image's JupyterLab listens on (its ds01.jupyter.port label).",
    )
    api_timeout = Float(60.0, config=True, help="Seconds a call to ds01d may take.")
    # Not empty, so that the hub shows the form; ``get_options_form`` makes its content.
    options_form = Unicode("ds01", config=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request_id: str | None = None  # a waiting queue request of this server
        self._queue_entry: dict[str, Any] | None = None
        # The single-user server listens on every address inside its container; the hub
        # reaches it at the container's address on the user's network (``start``).
        self.ip = "0.0.0.0"  # noqa: S104 - inside the container, behind ds01's firewall
        self.port = self.container_port

    # -- ds01d ----------------------------------------------------------------------------------

    @property
    def container(self) -> str:
        return container_name(self._server_name)

    def client(self) -> Ds01Client:
        return Ds01Client(self.socket_path or None, self.api_timeout, self.user.name)

    async def _call(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.client().call, method, endpoint, **kwargs)

    async def _named(self) -> dict[str, Any] | None:
        """The user's container of the server's container name as ds01d reports it, whoever
        made it, or ``None``."""
        try:
            _, info = await self._call("GET", "/v1/containers")
        except ApiError:
            return None
        for entry in info or ():
            if entry.get("name") == self.container:
                return dict(entry)
        return None

    async def _info(self) -> dict[str, Any] | None:
        """The server's container as ds01d reports it: the one of its name that a hub made
        for this server (``server_conflict``), or ``None``."""
        info = await self._named()
        return None if info is None or server_conflict(info, self._server_name) else info

    @property
    def _server_name(self) -> str:
        return self.name or ""

    # -- the options form -----------------------------------------------------------------------

    async def _images(self) -> list[str]:
        _, listed = await self._call("GET", "/v1/images")
        return form.jupyter_images(listed)

    async def get_options_form(self) -> str:
        """ds01's form: the images, the device choices the user's limits allow, usage and
        what is free now (``ds01.jupyterhub.form``)."""
        _, gpus = await self._call("GET", "/v1/gpus")
        _, limits = await self._call("GET", "/v1/limits")
        return form.render(await self._images(), self.image, gpus, limits)

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        try:
            choice = choice_from_form(formdata, self.image)
        except ChoiceError as exc:
            raise ValueError(str(exc)) from exc
        return {"image": choice.image, "gpus": choice.gpus, "mig": choice.mig}

    async def _choice(self) -> ServerChoice:
        default = self.image
        if not default:
            images = await self._images()
            if not images:
                raise refusal("the image registry has no image present here.")
            default = images[0]
        try:
            return choice_from_options(self.user_options or {}, default)
        except ChoiceError as exc:
            raise refusal(str(exc)) from exc

    # -- the Spawner contract -------------------------------------------------------------------

    async def start(self) -> str:
        choice = await self._choice()
        await self._remove_old()
        body = create_body(self._server_name, choice, self.get_env())
        try:
            status, answer = await self._call("POST", "/v1/containers", body=body)
        except ApiError as exc:
            raise refusal(exc.message) from exc
        if status == 202:  # queued: it starts by itself when its turn comes
            self.request_id = str(answer["id"])
            self._queue_entry = dict(answer)
            await self._wait_in_line()
        else:
            await self._call("POST", Ds01Client.container_path(self.container, "start"))
        url = await self._address()
        await self._wait_until_answers(url)
        return url

    async def _remove_old(self) -> None:
        """Remove this server's old container; refused when the container of its name is
        not the hub's for this server (the user's own, or another server's)."""
        info = await self._named()
        if info is None:
            return
        conflict = server_conflict(info, self._server_name)
        if conflict is not None:
            raise refusal(conflict)
        if info.get("status") == "running":
            await self._call("POST", Ds01Client.container_path(self.container, "stop"))
        await self._call("DELETE", Ds01Client.container_path(self.container))

    async def _wait_in_line(self) -> None:
        """Follow the queue request until its container started (or it failed)."""
        assert self.request_id is not None
        path = f"/v1/queue/{self.request_id}"
        while True:
            try:
                _, entry = await self._call("GET", path, query={"wait": _QUEUE_WAIT_SECONDS})
            except ApiError as exc:
                if exc.error_kind != "throttled":
                    raise refusal(exc.message) from exc
                # The user's (or the hub's) waiting requests are at their cap: try again.
                await asyncio.sleep(_QUEUE_WAIT_SECONDS)
                continue
            self._queue_entry = dict(entry)
            state = entry.get("state")
            if state == "started":
                self.request_id = None
                return
            if state in ("cancelled", "failed"):
                self.request_id = None
                raise refusal(str(entry.get("message") or state))

    async def _address(self) -> str:
        for _ in range(50):
            info = await self._info()
            url = server_url(info or {}, self.container_port)
            if url is not None:
                return url
            await asyncio.sleep(0.2)
        raise refusal(f"{self.container} has no address on your network: is it running?")

    async def _wait_until_answers(self, url: str) -> None:
        """Return once the single-user server at ``url`` answers its API (any status below
        500, as the hub's own check takes it), or once its container no longer runs (the
        hub's check then fails as before); refused after ``http_timeout`` seconds, as the
        hub would give up. Looks every ``_ANSWER_POLL_SECONDS``, so that the hub's first
        look after ``start`` finds the server up."""
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        base_url = getattr(self.server, "base_url", None) or "/"
        check = f"{url}{base_url.rstrip('/')}/api"
        # A client of its own: the hub's shared one has 10 connections for everything it
        # asks (its proxy included), and a user's image may accept and never answer.
        client = AsyncHTTPClient(force_instance=True)
        try:
            deadline = asyncio.get_running_loop().time() + self.http_timeout
            looks = 0
            while asyncio.get_running_loop().time() < deadline:
                try:
                    await client.fetch(check, follow_redirects=False, request_timeout=5)
                    return
                except HTTPClientError as exc:
                    if exc.code < 500:  # 599: no connection yet
                        return
                except OSError:  # refused while JupyterLab starts
                    pass
                looks += 1
                if looks % _LOOKS_PER_STATUS_CHECK == 0:
                    info = await self._info()
                    if info is None or info.get("status") != "running":
                        return
                await asyncio.sleep(_ANSWER_POLL_SECONDS)
        finally:
            client.close()
        raise refusal(f"JupyterLab in {self.container} did not answer in {self.http_timeout} s.")

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """The queue position and estimated start while the server waits for a device."""
        shown = None
        while self.pending == "spawn":
            entry = self._queue_entry
            if entry is not None and entry.get("state") == "waiting":
                message = progress_message(entry)
                if message != shown:
                    shown = message
                    yield {"progress": 50, "message": message}
            await asyncio.sleep(0.5)

    async def stop(self, now: bool = False) -> None:
        if self.request_id is not None:
            request, self.request_id = self.request_id, None
            try:
                await self._call("DELETE", f"/v1/queue/{request}")
            except ApiError as exc:
                self.log.info("ds01: queue request %s: %s", request, exc.message)
        info = await self._info()
        if info is not None and info.get("status") == "running":
            await self._call("POST", Ds01Client.container_path(self.container, "stop"))

    async def poll(self) -> int | None:
        if self.request_id is not None:
            return None  # waiting in line: still starting
        info = await self._info()
        return None if info is not None and info.get("status") == "running" else 0

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        state["container"] = self.container
        if self.request_id:
            state["request_id"] = self.request_id
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.request_id = state.get("request_id") or None

    def clear_state(self) -> None:
        super().clear_state()
        self.request_id = None
        self._queue_entry = None


__all__ = ["Ds01Spawner"]
