"""``ds01.runtime.engine_socket``'s requests and errors, without Docker: its filters are
encoded as docker-py encodes them, and ``docker_errors`` reads its errors as docker-py's."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from docker.utils import convert_filters

from ds01.errors import Conflict, DockerUnavailable, InvalidInput, NotFound
from ds01.runtime.docker_errors import docker_errors, raise_streamed_error
from ds01.runtime.engine_socket import EngineError, EngineUnreachable, target


@pytest.mark.parametrize(
    "filters",
    [
        {"label": "ds01.managed=true"},
        {"label": "ds01.managed=true", "name": "^/?thesis\\._\\.1001$"},
        {"type": "container", "event": ["die", "destroy"], "label": ["ds01.managed=true"]},
        {"dangling": True},
    ],
)
def test_filters_are_docker_pys(filters: dict[str, object]) -> None:
    query = parse_qs(urlsplit(target("/containers/json", filters, all=1)).query)
    assert query["all"] == ["1"]
    assert json.loads(query["filters"][0]) == json.loads(convert_filters(filters))


def test_a_path_without_query_is_unchanged() -> None:
    assert target("/info") == "/info"


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (404, NotFound, "x: not found (No such container: c)"),
        (409, Conflict, "x: No such container: c"),
        (400, InvalidInput, "x: No such container: c"),
        (500, DockerUnavailable, "x: Docker error: No such container: c"),
    ],
)
def test_error_answers_read_as_docker_pys(status: int, error: type, words: str) -> None:
    with pytest.raises(error) as raised, docker_errors("x"):
        raise EngineError(status, "No such container: c")
    assert raised.value.message == words


@pytest.mark.parametrize(
    ("cause", "words"),
    [(TimeoutError(), "took too long"), (ConnectionRefusedError(), "not running")],
)
def test_an_engine_that_does_not_answer_is_said_in_plain_words(
    cause: OSError, words: str
) -> None:
    with pytest.raises(DockerUnavailable, match=words), docker_errors("x"):
        raise EngineUnreachable("/var/run/docker.sock", cause)


def test_other_errors_pass_unchanged() -> None:
    with pytest.raises(KeyError), docker_errors("x"):
        raise KeyError("k")


def _streamed_answer(status: int, body: bytes) -> requests.Response:
    """An answer as docker-py's ``stream=True`` calls return it, before it is read."""
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.43/containers/c/logs"
    response.raw = urllib3.HTTPResponse(io.BytesIO(body), status=status, preload_content=False)
    return response


def test_a_streamed_error_answer_is_raised_as_ds01s_and_closed() -> None:
    answer = _streamed_answer(404, b'{"message": "No such container: c"}')
    said = r"^x: not found \(No such container: c\)$"  # Docker's message, read before the close
    with pytest.raises(NotFound, match=said), docker_errors("x"):
        raise_streamed_error(answer)
    assert answer.raw.closed


def test_a_streamed_success_is_left_to_be_read() -> None:
    answer = _streamed_answer(200, b"output")
    raise_streamed_error(answer)
    assert answer.raw.read() == b"output"
