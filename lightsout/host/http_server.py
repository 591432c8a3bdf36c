"""Serve HTTP-triggered functions on a stdlib ThreadingHTTPServer."""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from lightsout.host.discovery import HttpFunction
from lightsout.host.errors import HostConfigError
from lightsout.host.invoke import Invoker
from lightsout.host.routing import MethodNotAllowed, Router

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
BODY_LIMIT_SETTING = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"  # the Functions host's override
# Headers that App Service authentication sets: no such front end runs before the local
# host, so a client that sends them is claiming an identity it was never given.
EASY_AUTH_PREFIX = "x-ms-client-principal"
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
STATUS_PATH = "/admin/host/status"
KEEP_ALIVE_SECONDS = 15  # an idle keep-alive connection is closed after this
# After refusing a body unread: how much more of it is read and dropped, and for how long.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 2.0
ANSWER_BUFFER_BYTES = 64 * 1024


class FunctionHttpServer(ThreadingHTTPServer):
    """One server per host; running requests are counted so a stop can wait for them."""

    daemon_threads = True
    # The default backlog of 5 drops the SYNs of a burst of clients: each dropped one
    # costs the client a 1 s retransmit (the p99 of 16 clients connecting at once).
    request_queue_size = 128

    def __init__(
        self,
        port: int,
        router: Router[HttpFunction],
        invoker: Invoker,
        *,
        share_port: bool = False,
    ) -> None:
        # Worker processes of one host listen on one port (lightsout/host/processes.py).
        self.allow_reuse_port = share_port
        super().__init__(("127.0.0.1", port), _Handler)
        self.router, self.invoker = router, invoker
        self.max_body_bytes = body_limit(os.environ)
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
    # An answer's status line, headers and body are buffered and leave in one write when
    # the request is done (handle_one_request flushes): one system call, and one release
    # of the GIL, instead of one for the head and one for the body. A body larger than the
    # buffer is written through.
    wbufsize = ANSWER_BUFFER_BYTES
    # What is written goes at once: with Nagle's algorithm on, a write that follows another
    # waits for the client's delayed ACK (~40 ms on a kept-alive connection).
    disable_nagle_algorithm = True
    server: FunctionHttpServer

    def handle_expect_100(self) -> bool:
        """Send the interim 100 Continue now: the client waits for it before its body."""
        self.send_response_only(HTTPStatus.CONTINUE)
        self.end_headers()
        self.wfile.flush()
        return True

    def do_any(self) -> None:
        if self.server.stopping:
            self.close_connection = True
            self._send_error(HTTPStatus.SERVICE_UNAVAILABLE, "host_stopping", "host is stopping")
            return
        with self.server.request_running():
            try:
                self._dispatch()
            except Exception:  # the server must outlive any request
                log.exception("HTTP %s %s failed in the host", self.command, self.path)
                self.close_connection = True
                with contextlib.suppress(OSError):  # the client may be gone
                    self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "host_error", "host error")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, QUERY, ...) reaches the router too: a 405 with the error
        # body and Allow, where the standard library would answer 501 in HTML.
        if name.startswith("do_"):
            return self.do_any
        raise AttributeError(name)

    def _dispatch(self) -> None:
        # Read the body whatever the answer, so a kept-alive connection stays in step.
        body = self._read_body()
        if body is None:
            return
        # RFC 9110 5.5: a field value with a NUL is invalid; rejected here, it never reaches
        # a function (which would pass it on to PostgreSQL, where text cannot hold one).
        nul = next((name for name, value in self.headers.items() if "\x00" in value), None)
        if nul is not None:
            message = f"header {nul!r} contains a NUL character"
            self._send_error(HTTPStatus.BAD_REQUEST, "bad_request", message)
            return
        url = urlsplit(self.path)
        if url.path.rstrip("/") == STATUS_PATH:
            self._send_json(HTTPStatus.OK, {"state": "Running"})
            return
        found = self.server.router.match(self.command, url.path)
        if found is None:
            self._send_error(HTTPStatus.NOT_FOUND, "not_found", f"no function serves {url.path}")
            return
        if isinstance(found, MethodNotAllowed):
            allow = ", ".join(sorted(found.allowed))
            message = f"method {self.command} not allowed on {url.path}; allowed: {allow}"
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", message, allow)
            return
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host', self.server.server_address[0])}{self.path}",
            headers=_request_headers(self.headers.items()),
            params=dict(parse_qsl(url.query, keep_blank_values=True)),
            route_params=found.params,
            body=body,
        )
        self._invoke(found.target, request)

    def _invoke(self, function: HttpFunction, request: func.HttpRequest) -> None:
        try:
            result = self.server.invoker.call(function, request)
        except Exception:
            # The exception text may hold secrets or data: the log has it, under an id.
            error_id = secrets.token_hex(8)
            log.exception("function '%s' failed (error id %s)", function.name, error_id)
            detail = {
                "error": "function_failed",
                "message": f"function '{function.name}' failed; error id {error_id} in the log",
                "fields": [],
                "function": function.name,
                "error_id": error_id,
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
            message = f"function '{function.name}' returned no HttpResponse"
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "host_error", message)

    def _read_body(self) -> bytes | None:
        """The body, or None when an error was answered (the connection then closes)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not _DIGITS.fullmatch(raw):
            self._refuse_body(HTTPStatus.BAD_REQUEST, f"malformed Content-Length {raw!r}")
            return None
        length = int(raw)
        if length > self.server.max_body_bytes:
            self._too_large(f"Content-Length {length}")
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip() or b"0"
            if not _HEX.fullmatch(line):
                self._refuse_body(HTTPStatus.BAD_REQUEST, f"malformed chunk size {line!r}")
                return None
            size = int(line, 16)
            if size == 0:
                break
            total += size
            # Checked before the chunk is read: a stream is refused as soon as it passes.
            if total > self.server.max_body_bytes:
                self._too_large(f"the chunked body's {total} bytes so far")
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _too_large(self, what: str) -> None:
        limit = self.server.max_body_bytes
        message = f"{what} is over the limit of {limit} bytes ({BODY_LIMIT_SETTING})"
        self._refuse_body(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, message)

    def _refuse_body(self, status: HTTPStatus, message: str) -> None:
        """Answer without reading the body; the unread rest makes the connection unusable."""
        error = (
            "payload_too_large" if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE else "bad_request"
        )
        self.close_connection = True
        self._send_error(status, error, message)
        self._linger()

    def _linger(self) -> None:
        """Drop what the client still sends for a moment, so that it reads the answer.

        Closing a socket with unread data resets the connection: a client still writing its
        body then gets a broken pipe instead of the 413 (a lingering close, as web servers do).
        """
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            dropped = 0
            while dropped < LINGER_BYTES and (chunk := self.rfile.read1(65536)):
                dropped += len(chunk)

    def _send_error(self, status: int, error: str, message: str, allow: str | None = None) -> None:
        """Answer with the documented error body: error, message, fields."""
        payload = {"error": error, "message": message, "fields": []}
        self._send_json(status, payload, {"Allow": allow} if allow else None)

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
        if log.isEnabledFor(logging.DEBUG):  # each answer calls it: no formatting for nothing
            log.debug("%s - %s", self.address_string(), format % args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return _http_date() if timestamp is None else super().date_time_string(timestamp)


class _HttpDate:
    """The Date header's value, made once a second rather than once an answer."""

    def __init__(self) -> None:
        self._made = (0, "")

    def __call__(self) -> str:
        second, made = int(time.time()), self._made
        if made[0] != second:
            made = self._made = (second, email.utils.formatdate(second, usegmt=True))
        return made[1]


_http_date = _HttpDate()


def _request_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The headers as the function sees them: one entry a name, repeated values joined.

    Without App Service authentication's headers, which only that front end may set.
    """
    headers: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if not key.startswith(EASY_AUTH_PREFIX):
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def body_limit(environ: Mapping[str, str]) -> int:
    """The request body limit in bytes: the app setting when it is given, else 100 MB."""
    raw = environ.get(BODY_LIMIT_SETTING, "").strip()
    if not raw:
        return MAX_BODY_BYTES
    if not _DIGITS.fullmatch(raw) or int(raw) == 0:
        raise HostConfigError(
            f"{BODY_LIMIT_SETTING} must be a positive number of bytes, not {raw!r}"
        )
    return int(raw)


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
