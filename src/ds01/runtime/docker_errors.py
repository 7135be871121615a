"""Docker errors as ds01 errors: the one translation every Docker call goes through.

404 → ``NotFound``, 409 → ``Conflict``, 400 → ``InvalidInput``, anything else (including an
engine that does not answer) → ``DockerUnavailable``. An engine that does not answer is said
in plain words, never with the exception docker-py raised (users read these messages).
``docker_errors`` wraps the block of each call: the one way ds01 translates them, for
docker-py's calls and the standard-library reads of ``ds01.runtime.engine_socket`` alike.

docker-py is not imported here: its exceptions are looked up only once it is loaded (a
call that did not go through it cannot have raised one), so ds01d's start, which reads
Docker through ``engine_socket``, does not load it. ``raise_streamed_error`` imports it
when called, which only docker-py's streamed calls do.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ds01.errors import Conflict, DockerUnavailable, Ds01Error, InvalidInput, NotFound
from ds01.runtime.engine_socket import EngineError, EngineUnreachable

#: The engine's socket: the only one ds01 talks to.
DOCKER_SOCKET = "/var/run/docker.sock"
_ASK_AN_ADMIN = "An admin can check it with `ds01 admin doctor`."


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Translate Docker's errors raised inside the block (docker-py's, ``engine_socket``'s)
    into ds01 errors; anything else passes unchanged."""
    try:
        yield
    except Exception as exc:
        translated = _translated(what, exc)
        if translated is None:
            raise
        raise translated from exc


def raise_streamed_error(response: Any) -> None:
    """Raise the error answer of a docker-py call made with ``stream=True`` (which does not
    check it) as docker-py's own error, with Docker's message, closing ``response``; nothing
    for a success. Called inside ``docker_errors``, so that the error reaches the caller as
    ds01's."""
    import requests.exceptions

    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        try:
            response.content  # noqa: B018 - Docker's message, read while the answer is open
        finally:
            response.close()
        import docker.errors

        docker.errors.create_api_error_from_http_exception(exc)


def _translated(what: str, exc: Exception) -> Ds01Error | None:
    """The ds01 error for Docker's ``exc``; ``None`` when it is not one of Docker's."""
    if isinstance(exc, EngineError):
        return _by_status(what, exc.status, exc.explanation, str(exc))
    if isinstance(exc, EngineUnreachable):
        return DockerUnavailable(f"{what}: {not_answering(exc)}")
    errors = sys.modules.get("docker.errors")  # loaded: docker-py may have raised it
    if errors is None:
        return None
    if isinstance(exc, errors.NotFound):
        return _by_status(what, 404, exc.explanation, str(exc))
    if isinstance(exc, errors.APIError):
        return _by_status(what, exc.status_code, exc.explanation, str(exc))
    requests_exceptions = sys.modules["requests.exceptions"]  # docker-py loads it
    if isinstance(exc, (requests_exceptions.RequestException, errors.DockerException)):
        return DockerUnavailable(f"{what}: {not_answering(exc)}")
    return None


def _by_status(what: str, status: int | None, explanation: str | None, text: str) -> Ds01Error:
    """The ds01 error for Docker's error answer ``status``."""
    if status == 404:
        return NotFound(f"{what}: not found ({explanation})")
    if status == 409:
        return Conflict(f"{what}: {explanation}")
    if status == 400:  # Docker refused a value ds01 let through
        return InvalidInput(f"{what}: {explanation}")
    return DockerUnavailable(f"{what}: Docker error: {explanation or text}")


def not_answering(exc: BaseException) -> str:
    """What to tell people when the engine did not answer (``exc``: what docker-py or
    ``engine_socket`` raised): plain words, never the exception's text."""
    requests_exceptions = sys.modules.get("requests.exceptions")
    timed_out = (isinstance(exc, EngineUnreachable) and exc.timed_out) or (
        requests_exceptions is not None and isinstance(exc, requests_exceptions.ReadTimeout)
    )
    if timed_out:
        return (
            f"Docker on {DOCKER_SOCKET} took too long to answer; it may still finish. "
            + _ASK_AN_ADMIN
        )
    return f"Docker is not running or not answering on {DOCKER_SOCKET}. " + _ASK_AN_ADMIN
