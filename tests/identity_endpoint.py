"""A managed-identity token endpoint on 127.0.0.1, the App Service kind (2019-08-01).

azure-identity's ManagedIdentityCredential (and DefaultAzureCredential) ask it for tokens
when IDENTITY_ENDPOINT and IDENTITY_HEADER name it, as App Service and Azure Functions set
them. Each request gets a new token: a JWT (unsigned in spirit: HS256 with a throwaway key)
with the issuer, audience and expiry a service checks. `on_issue` lets a test make the
token acceptable where it is used (e.g. as a PostgreSQL role's password).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt

TENANT = "00000000-0000-0000-0000-000000000001"
ISSUER = f"https://sts.windows.net/{TENANT}/"


@dataclass(frozen=True)
class Issued:
    resource: str
    client_id: str | None
    token: str
    expires_on: int


class IdentityEndpoint:
    """Serves tokens of `lifetime_s` seconds; `refusing = True` makes it answer 400."""

    def __init__(
        self, lifetime_s: int = 3600, on_issue: Callable[[Issued], None] | None = None
    ) -> None:
        self.lifetime_s, self.on_issue = lifetime_s, on_issue
        self.header = secrets.token_hex(16)
        self.issued: list[Issued] = []
        self.refusing = False
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def env(self) -> dict[str, str]:
        """The settings App Service gives an app with a managed identity."""
        port = self._server.server_address[1]
        return {
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{port}/msi/token",
            "IDENTITY_HEADER": self.header,
        }

    def __enter__(self) -> IdentityEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self, resource: str, client_id: str | None) -> Issued:
        """Make a token for `resource`, record it and hand it to `on_issue`."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": resource,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime_s,
            "tid": TENANT,
            "appid": client_id or "system-assigned",
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self._key, algorithm="HS256")
        issued = Issued(resource, client_id, token, now + self.lifetime_s)
        with self._lock:  # one at a time, so on_issue sees tokens in the order they are handed out
            if self.on_issue is not None:
                self.on_issue(issued)
            self.issued.append(issued)
        return issued


def _handler(endpoint: IdentityEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if self.headers.get("X-IDENTITY-HEADER") != endpoint.header:
                return self._answer(401, {"message": "X-IDENTITY-HEADER is wrong"})
            if endpoint.refusing or "resource" not in query:
                return self._answer(400, {"statusCode": 400, "message": "no identity here"})
            issued = endpoint.issue(query["resource"], query.get("client_id"))
            self._answer(
                200,
                {
                    "access_token": issued.token,
                    "expires_on": str(issued.expires_on),
                    "resource": issued.resource,
                    "token_type": "Bearer",
                    "client_id": issued.client_id or "system-assigned",
                },
            )

        def _answer(self, status: int, body: dict[str, str | int]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: a test's output is its own

    return Handler
