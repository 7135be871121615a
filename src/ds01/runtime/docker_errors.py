"""Docker errors as ds01 errors: the one translation every Docker call goes through.

404 → ``NotFound``, 409 → ``Conflict``, 400 → ``InvalidInput``, anything else (including an
engine that does not answer) → ``DockerUnavailable``. An engine that does not answer is said
in plain words, never with the exception docker-py raised (users read these messages).
``docker_errors`` wraps the block of each call: the one way ds01 translates them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from ds01.errors import Conflict, DockerUnavailable, InvalidInput, NotFound

#: The engine's socket: the only one ds01 talks to.
DOCKER_SOCKET = "/var/run/docker.sock"
_ASK_AN_ADMIN = "An admin can check it with `ds01 admin doctor`."


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Translate docker-py exceptions raised inside the block into ds01 errors."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: not found ({exc.explanation})") from exc
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise Conflict(f"{what}: {exc.explanation}") from exc
        if exc.status_code == 400:  # Docker refused a value ds01 let through
            raise InvalidInput(f"{what}: {exc.explanation}") from exc
        raise DockerUnavailable(f"{what}: Docker error: {exc.explanation or exc}") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise DockerUnavailable(f"{what}: {not_answering(exc)}") from exc


def not_answering(exc: BaseException) -> str:
    """What to tell people when the engine did not answer (``exc``: what docker-py raised):
    plain words, never the exception's text."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return (
            f"Docker on {DOCKER_SOCKET} took too long to answer; it may still finish. "
            + _ASK_AN_ADMIN
        )
    return f"Docker is not running or not answering on {DOCKER_SOCKET}. " + _ASK_AN_ADMIN
