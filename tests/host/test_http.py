"""HTTP functions served by a running host: routes, methods, bodies, failures."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from lightsout.host import Host
from tests.host.conftest import SampleApp


def call(
    host: Host,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call_json(host: Host, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = call(host, method, path, **kwargs)
    return status, json.loads(body)


def test_route_params_query_and_headers(start_host: Callable[..., Host]) -> None:
    host = start_host()
    status, body = call_json(
        host, "GET", "/api/items/42?colour=red&empty=", headers={"X-Sample": "yes"}
    )
    assert status == 200
    assert body["item_id"] == "42"
    assert body["params"] == {"colour": "red", "empty": ""}
    assert body["url"] == f"http://127.0.0.1:{host.port}/api/items/42?colour=red&empty="
    assert body["header"] == "yes"


def test_literal_route_beats_parameter(start_host: Callable[..., Host]) -> None:
    assert call_json(start_host(), "GET", "/api/items/special") == (200, {"special": True})


def test_post_body_and_status(start_host: Callable[..., Host]) -> None:
    status, headers, body = call(
        start_host(),
        "POST",
        "/api/items",
        body=b'{"a": [1, 2]}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 201
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"received": {"a": [1, 2]}}


def test_constraints_optional_and_catch_all(start_host: Callable[..., Host]) -> None:
    host = start_host()
    assert call_json(host, "GET", "/api/numbers/7") == (200, {"n": "7"})
    assert call_json(host, "GET", "/api/numbers/7/seven") == (200, {"n": "7", "label": "seven"})
    assert call(host, "GET", "/api/numbers/seven")[0] == 404
    status, headers, body = call(host, "GET", "/api/files/a/b.txt")
    assert (status, body, headers["X-Kind"]) == (200, b"a/b.txt", "file")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_not_found_and_method_not_allowed(start_host: Callable[..., Host]) -> None:
    host = start_host()
    status, body = call_json(host, "GET", "/api/nowhere")
    assert (status, body["error"], body["fields"]) == (404, "not_found", [])
    assert "/api/nowhere" in body["message"]
    status, headers, raw = call(host, "DELETE", "/api/items/42")
    assert status == 405
    assert headers["Allow"] == "GET"
    refused = json.loads(raw)
    assert (refused["error"], refused["fields"]) == ("method_not_allowed", [])
    assert "DELETE" in refused["message"]
    assert call(host, "GET", "/items/42")[0] == 404  # outside the /api prefix


def test_a_failing_function_answers_500_and_the_server_lives_on(
    start_host: Callable[..., Host],
) -> None:
    host = start_host()
    status, body = call_json(host, "GET", "/api/boom")
    assert status == 500
    assert body["function"] == "boom"
    assert "boom on purpose" not in json.dumps(body)  # the log has it, under the error id
    assert body["error_id"] in body["message"]
    assert call(host, "GET", "/api/items/1")[0] == 200


def test_async_function_and_context(start_host: Callable[..., Host]) -> None:
    host = start_host()
    assert call(host, "GET", "/api/async/hello")[2] == b"HELLO"
    status, body = call_json(host, "GET", "/api/context")
    assert status == 200 and body["function"] == "with_context"
    assert len(body["invocation_id"]) == 36


def test_keep_alive_connection_serves_several_requests(start_host: Callable[..., Host]) -> None:
    host = start_host()
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    for i in range(3):
        conn.request("GET", f"/api/items/{i}")
        response = conn.getresponse()
        assert json.loads(response.read())["item_id"] == str(i)
    conn.close()


class _CountingSocket(socket.socket):
    """The server's end of a connection, counting the writes the handler makes."""

    writes: list[bytes]

    def send(self, data: Any, flags: int = 0) -> int:
        self.writes.append(bytes(data))
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.writes.append(bytes(data))
        super().sendall(data, flags)


def read_answer(reader: Any) -> tuple[int, bytes]:
    """Read one answer from a connection's reader: its status and its body."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def test_each_answer_leaves_in_one_write(start_host: Callable[..., Host]) -> None:
    # Head and body in one write: one system call per answer, and no body waiting behind
    # its head (the ~40 ms stall of kept-alive clients when they went in two).
    host = start_host()
    assert host.server is not None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, address = listener.accept()
    server_end = _CountingSocket(fileno=accepted.detach())
    server_end.writes = []
    handler = threading.Thread(target=host.server.finish_request, args=(server_end, address))
    handler.start()
    with client, client.makefile("rb") as reader:
        client.sendall(b"GET /api/items/7 HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        answers = [read_answer(reader), read_answer(reader)]
    handler.join(10)
    server_end.close()

    assert [status for status, _ in answers] == [200, 200]
    assert json.loads(answers[0][1])["item_id"] == "7"
    assert len(server_end.writes) == 2
    assert all(
        w.startswith(b"HTTP/1.1 200 ") and w.endswith(body)
        for w, (_, body) in zip(server_end.writes, answers, strict=True)
    )


def test_a_client_expecting_100_continue_gets_it_before_it_sends_the_body(
    start_host: Callable[..., Host],
) -> None:
    host = start_host()
    body = b'{"a": [1, 2]}'
    head = (
        "POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", host.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head.encode())
        interim = reader.readline(), reader.readline()  # times out if it was held back
        sock.sendall(body)
        status, answer = read_answer(reader)

    assert interim == (b"HTTP/1.1 100 Continue\r\n", b"\r\n")
    assert (status, json.loads(answer)) == (201, {"received": {"a": [1, 2]}})


def test_requests_run_in_parallel(start_host: Callable[..., Host]) -> None:
    host = start_host()
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(call(host, "GET", "/api/slow?seconds=0.5")[0])
        )
        for _ in range(4)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 4
    assert time.monotonic() - started < 1.5  # one after another would take 2 s


def test_route_prefix_from_host_json(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    sample_app.host_json(
        extensions={"http": {"routePrefix": "v1"}, "queues": {"maxPollingInterval": "00:00:01"}}
    )
    host = start_host()
    assert call(host, "GET", "/v1/items/special")[0] == 200
    assert call(host, "GET", "/api/items/special")[0] == 404


def test_host_status(start_host: Callable[..., Host]) -> None:
    assert call_json(start_host(), "GET", "/admin/host/status") == (200, {"state": "Running"})
