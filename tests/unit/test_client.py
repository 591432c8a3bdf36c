"""The API client: an answer cut off by a dying server is "no answer", an ApiError."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lightsout.client import ApiClient, ApiError


@pytest.fixture
def cut_off_server() -> Iterator[str]:
    """A server that sends a 202's headers promising a body, then closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            # The whole request first: closing with some of it unread would reset the
            # connection, which the client reports as no answer instead.
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                b"Content-Length: 225\r\n\r\n"
            )

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    thread.join(5)
    listener.close()


def test_an_answer_cut_off_mid_body_is_an_api_error(cut_off_server: str) -> None:
    # As a host that exits (a crash point, a kill) while writing its answer leaves it.
    with pytest.raises(ApiError, match="cut off"):
        ApiClient(cut_off_server, timeout_s=5).request("POST", "jobs/x", {})
