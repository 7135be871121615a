"""The door's requests to dockerd as bytes (``ds01.runtime.engine_proxy``): what of a
client's head goes on, and how an answer to a hijack is read."""

from __future__ import annotations

import http.client
import io

from ds01.runtime.engine_proxy import _answer_head, _status_of, request_bytes


def _headers(raw: bytes) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(raw + b"\r\n"))


def _lines(data: bytes) -> list[bytes]:
    head, _, _ = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")


def test_the_clients_framing_and_connection_headers_never_go_on() -> None:
    client = _headers(
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
        b"Upgrade: tcp\r\nHost: evil\r\nX-Registry-Auth: abc\r\n"
    )
    sent = request_bytes("POST", "/containers/create", client, b"{}")
    assert _lines(sent) == [
        b"POST /containers/create HTTP/1.1",
        b"Host: docker",
        b"X-Registry-Auth: abc",
        b"Content-Length: 2",
        b"Connection: close",
    ]
    assert sent.endswith(b"\r\n\r\n{}")


def test_a_folded_value_goes_on_as_one_line_and_no_line_break_reaches_dockerd() -> None:
    client = _headers(b"X-Folded: a\r\n\tTransfer-Encoding: chunked\r\nX-Fine: b\r\n")
    sent = request_bytes("GET", "/_ping", client, b"")
    assert _lines(sent)[2:4] == [b"X-Folded: a Transfer-Encoding: chunked", b"X-Fine: b"]
    bare = _headers(b"X-Cr: c\rTransfer-Encoding: chunked\r\n")
    assert b"chunked" not in request_bytes("GET", "/_ping", bare, b"")


def test_a_form_body_is_never_announced_to_dockerd() -> None:
    # Go's ParseForm reads such a body's fields before the query the door checked.
    form = _headers(b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n")
    assert b"Content-Type" not in request_bytes("POST", "/containers/x/kill", form, b"signal=9")
    json_type = _headers(b"Content-Type: application/json\r\n")
    assert b"Content-Type: application/json" in request_bytes("POST", "/x", json_type, b"{}")


def test_a_hijack_asks_for_the_connection() -> None:
    sent = request_bytes("POST", "/exec/x/start", _headers(b""), b"{}", upgrade=True)
    assert _lines(sent)[-2:] == [b"Connection: Upgrade", b"Upgrade: tcp"]


class _Engine:
    """dockerd's side of a socket, for ``_answer_head``: its answer in pieces."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)

    def recv(self, size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


def test_an_answer_head_is_read_apart_from_the_stream_after_it() -> None:
    engine = _Engine(b"HTTP/1.1 101 UPGRADED\r\nUpgrade: tcp\r\n", b"\r\n\x01\x00\x00\x00")
    head, early = _answer_head(engine)  # type: ignore[arg-type]
    assert head == b"HTTP/1.1 101 UPGRADED\r\nUpgrade: tcp\r\n\r\n"
    assert early == b"\x01\x00\x00\x00"
    assert _status_of(head) == 101
    cut, _ = _answer_head(_Engine(b"HTTP/1.1 101 UPGRADED\r\n"))  # type: ignore[arg-type]
    assert not cut.endswith(b"\r\n\r\n")  # passed on as nothing


def test_the_status_of_an_answer_head() -> None:
    assert _status_of(b"HTTP/1.1 409 Conflict\r\n\r\n") == 409
    assert _status_of(b"HTTP/1.1 200 OK\r\n\r\n") == 200
    assert _status_of(b"garbage 101\r\n\r\n") is None
    assert _status_of(b"") is None
