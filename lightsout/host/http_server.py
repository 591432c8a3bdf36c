"""Serve HTTP-triggered functions on a stdlib ThreadingHTTPServer."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from lightsout.host.discovery import HttpFunction
from lightsout.host.invoke import Invoker
from lightsout.host.routing import MethodNotAllowed, Router

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
STATUS_PATH = "/admin/host/status"
KEEP_ALIVE_SECONDS = 15  # an idle keep-alive connection is closed after this


class FunctionHttpServer(ThreadingHTTPServer):
    """One server per host; running requests are counted so a stop can wait for them."""

    daemon_threads = True
    # The default backlog of 5 drops the SYNs of a burst of clients: each dropped one
    # costs the client a 1 s retransmit (the p99 of 16 clients connecting at once).
    request_queue_size = 128

    def __init__(self, port: int, router: Router[HttpFunction], invoker: Invoker) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.router, self.invoker = router, invoker
        self.active = 0
        self.idle = threading.Condition()
        self.stopping = False

    @contextlib.contextmanager
    def request_running(self) -> Iterator[None]:
        with self.idle:
            self.active += 1
        try:
            yield
        finally:
            with self.idle:
                self.active -= 1
                self.idle.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke outside a request (a client went away): not our failure."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled; False if `timeout` passed first."""
        with self.idle:
            return self.idle.wait_for(lambda: self.active == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_SECONDS
    # Headers and body leave in separate writes: with Nagle's algorithm on, the body waits
    # for the client's delayed ACK of the headers (~40 ms per answer on a kept-alive
    # connection). TCP_NODELAY sends each write at once.
    disable_nagle_algorithm = True
    server: FunctionHttpServer

    def do_any(self) -> None:
        if self.server.stopping:
            self.close_connection = True
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "host is stopping"})
            return
        with self.server.request_running():
            try:
                self._dispatch()
            except Exception:  # the server must outlive any request
                log.exception("HTTP %s %s failed in the host", self.command, self.path)
                self.close_connection = True
                with contextlib.suppress(OSError):  # the client may be gone
                    self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "host error"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any

    def _dispatch(self) -> None:
        # Read the body whatever the answer, so a kept-alive connection stays in step.
        body = self._read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        if url.path.rstrip("/") == STATUS_PATH:
            self._send_json(HTTPStatus.OK, {"state": "Running"})
            return
        found = self.server.router.match(self.command, url.path)
        if found is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": url.path})
            return
        if isinstance(found, MethodNotAllowed):
            allow = ", ".join(sorted(found.allowed))
            self._send_json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"method {self.command} not allowed", "allow": allow},
                {"Allow": allow},
            )
            return
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host', self.server.server_address[0])}{self.path}",
            headers={k: ", ".join(self.headers.get_all(k, [])) for k in self.headers},
            params=dict(parse_qsl(url.query, keep_blank_values=True)),
            route_params=found.params,
            body=body,
        )
        self._invoke(found.target, request)

    def _invoke(self, function: HttpFunction, request: func.HttpRequest) -> None:
        try:
            result = self.server.invoker.call(function, request)
        except Exception as exc:
            detail = {
                "error": "function failed",
                "function": function.name,
                "exception": f"{type(exc).__name__}: {exc}",
            }
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, detail)
            return
        self._send_result(function, result)

    def _send_result(self, function: HttpFunction, result: object) -> None:
        if isinstance(result, str | bytes):
            result = func.HttpResponse(result)
        if result is None:
            self._send(HTTPStatus.NO_CONTENT, [], b"")
        elif isinstance(result, func.HttpResponse):
            self._send(result.status_code, _response_headers(result), result.get_body())
        else:
            log.error(
                "function '%s' returned %s, not an HttpResponse",
                function.name,
                type(result).__name__,
            )
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "function returned no HttpResponse", "function": function.name},
            )

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            total += size
            if total > MAX_BODY_BYTES:
                self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
                self.close_connection = True
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        extra = list((headers or {}).items())
        body = json.dumps(payload).encode()
        self._send(status, [("Content-Type", "application/json"), *extra], body)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def _response_headers(response: func.HttpResponse) -> list[tuple[str, str]]:
    """The response headers, with Content-Type from mimetype/charset unless set."""
    headers: list[tuple[str, str]] = list(response.headers.items())
    if not any(name.lower() == "content-type" for name, _ in headers):
        mimetype: str = response.mimetype
        content_type = (
            f"{mimetype}; charset={response.charset}" if mimetype.startswith("text/") else mimetype
        )
        headers.append(("Content-Type", content_type))
    return headers
