"""The spawner returns a server's address once JupyterLab answers there (a real HTTP server on
127.0.0.1), not when its container merely started; it stops waiting when the container no
longer runs, and is refused after the hub's ``http_timeout``."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tornado import web

from ds01.jupyterhub.spawner import Ds01Spawner
from support import free_port


class Starting(http.server.BaseHTTPRequestHandler):
    """Answers 503 (the proxy's "not up yet") to the first ``busy`` requests, then 200;
    records each path asked."""

    busy = 3
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(503 if len(self.paths) <= self.busy else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def lab() -> Iterator[str]:
    Starting.paths = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Starting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Server:
    base_url = "/user/alice/"


def spawner(status: str = "running", http_timeout: int = 30) -> Ds01Spawner:
    """A spawner whose container ds01d reports as ``status``."""
    made = Ds01Spawner(http_timeout=http_timeout)
    made.server = Server()

    async def info() -> dict[str, Any]:
        return {"status": status}

    made._info = info  # type: ignore[method-assign]
    return made


def test_the_address_is_returned_once_jupyterlab_answers(lab: str) -> None:
    asyncio.run(spawner()._wait_until_answers(lab))
    assert Starting.paths == ["/user/alice/api"] * 4


def test_the_wait_ends_when_the_container_stopped() -> None:
    asyncio.run(spawner("exited")._wait_until_answers(f"http://127.0.0.1:{free_port()}"))


def test_a_server_that_never_answers_is_refused_after_the_http_timeout() -> None:
    with pytest.raises(web.HTTPError, match="did not answer in 1 s"):
        asyncio.run(spawner(http_timeout=1)._wait_until_answers(f"http://127.0.0.1:{free_port()}"))
