"""What the host refuses before a function runs: bodies too large or mis-framed, forged headers."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from lightsout.host import Host
from tests.host.test_http import call_json, read_answer


def exchange(host: Host, head: str, body: bytes = b"", *, read_first: bool = False) -> Any:
    """Send raw bytes; return (status, JSON body). `read_first` answers before the body."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n")
        if not read_first:
            sock.sendall(body)
        with sock.makefile("rb") as reader:
            status, answer = read_answer(reader)
    return status, json.loads(answer)


def post(length: str, extra: str = "") -> str:
    return f"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}"


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "+5", "5, 5"])
def test_a_malformed_content_length_is_400(start_host: Callable[..., Host], length: str) -> None:
    status, body = exchange(start_host(), post(length), b"{}")

    assert (status, body["error"], body["fields"]) == (400, "bad_request", [])
    assert "Content-Length" in body["message"]


def test_a_body_over_the_limit_is_refused_from_its_content_length_before_it_is_sent(
    start_host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "100")
    host = start_host()

    status, body = exchange(host, post("101"), read_first=True)  # the body never comes

    assert (status, body["error"]) == (413, "payload_too_large")
    assert "101" in body["message"] and "100 bytes" in body["message"]
    assert exchange(host, post("13"), b'{"a": [1, 2]}')[0] == 201


def test_a_chunked_body_is_refused_once_it_streams_past_the_limit(
    start_host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "100")
    host = start_host()
    head = "POST /api/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    chunk = b"3c\r\n" + b" " * 60 + b"\r\n"

    status, body = exchange(host, head, chunk + chunk + chunk + b"0\r\n\r\n")
    malformed = exchange(host, head, b"zz\r\n{}\r\n0\r\n\r\n")
    fits = exchange(host, head, b"d\r\n" + b'{"a": [1, 2]}' + b"\r\n0\r\n\r\n")

    assert (status, body["error"]) == (413, "payload_too_large")
    assert "120 bytes so far" in body["message"]
    assert (malformed[0], malformed[1]["error"]) == (400, "bad_request")
    assert fits == (201, {"received": {"a": [1, 2]}})


def test_a_bad_body_limit_setting_stops_the_host(
    start_host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "lots")

    with pytest.raises(Exception, match="FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"):
        start_host()


def test_client_sent_easy_auth_headers_never_reach_the_function(
    start_host: Callable[..., Host],
) -> None:
    forged = {
        "X-MS-CLIENT-PRINCIPAL": "eyJjbGFpbXMiOltdfQ==",
        "X-MS-CLIENT-PRINCIPAL-NAME": "admin",
        "x-ms-client-principal-id": "1",
        "X-Sample": "kept",
    }

    status, body = call_json(start_host(), "GET", "/api/items/1", headers=forged)

    assert status == 200
    assert body["header"] == "kept"
    assert not [h for h in body["headers"] if h.startswith("x-ms-client-principal")]


def test_a_header_value_with_a_nul_character_is_400_naming_the_header(
    start_host: Callable[..., Host],
) -> None:
    # Passed on, it reached PostgreSQL (the X-Lightsout-Actor note), which refused it: a 500.
    head = "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Note: a\x00b\r\n"

    status, body = exchange(start_host(), head, b"{}")

    assert (status, body["error"]) == (400, "bad_request")
    assert body["message"] == "header 'X-Note' contains a NUL character"


def test_a_repeated_header_reaches_the_function_once_with_its_values_joined(
    start_host: Callable[..., Host],
) -> None:
    head = "GET /api/items/1 HTTP/1.1\r\nHost: x\r\nX-Sample: a\r\nx-sample: b\r\n"

    status, body = exchange(start_host(), head)

    assert (status, body["header"]) == (200, "a, b")
    assert body["headers"].count("x-sample") == 1


def test_a_function_disabled_by_its_app_setting_is_not_served(
    start_host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobs.get_item.Disabled", "true")

    host = start_host()

    assert call_json(host, "GET", "/api/items/1")[0] == 404
    assert call_json(host, "GET", "/api/items/special")[0] == 200


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "BREW"])
def test_any_other_method_is_a_405_with_the_error_body(
    start_host: Callable[..., Host], method: str
) -> None:
    status, body = exchange(start_host(), f"{method} /api/items/1 HTTP/1.1\r\nHost: x\r\n")

    assert (status, body["error"], body["fields"]) == (405, "method_not_allowed", [])
    assert method in body["message"]
