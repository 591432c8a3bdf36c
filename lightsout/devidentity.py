"""A storage account without keys, for tests: Azurite taking OAuth over HTTPS, and a token endpoint.

Azurite's `--oauth basic` checks a bearer token's issuer, audience and lifetime but not
its signature, so the endpoint here issues unsigned, well-formed JWTs. It answers in the
App Service managed-identity form that azure-identity's ManagedIdentityCredential uses
when IDENTITY_ENDPOINT and IDENTITY_HEADER are set.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from lightsout.devservices import (
    AzuriteService,
    azurite_connection_string,
    free_port,
    spawn_azurite,
)

TENANT = "00000000-0000-0000-0000-00000000a2e1"
ISSUER = f"https://sts.windows.net/{TENANT}/"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and localhost; return (cert, key) paths."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        # Its own CA, so the file can serve as the CA bundle that trusts it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class OAuthAzurite:
    """Azurite's queue service over HTTPS, taking bearer tokens (and, unused here, its key)."""

    service: AzuriteService
    cert: Path

    @property
    def queue_service_uri(self) -> str:
        return f"https://127.0.0.1:{self.service.port}/devstoreaccount1"

    def stop(self) -> None:
        self.service.stop()


def start_oauth_azurite(run_dir: Path) -> OAuthAzurite:
    """Start Azurite with `--oauth basic` over HTTPS, with a certificate made for it."""
    port = free_port()
    location = run_dir / f"azurite-oauth-{port}"
    cert, key = make_certificate(location)
    extra = ["--oauth", "basic", "--cert", str(cert), "--key", str(key)]
    context = ssl.create_default_context(cafile=str(cert))
    proc = spawn_azurite(port, location, extra, context)
    connection = azurite_connection_string(port).replace("http://", "https://")
    return OAuthAzurite(AzuriteService(connection, proc, port, location), cert)


def unsigned_jwt(audience: str, lifetime_s: int, issuer: str = ISSUER) -> tuple[str, int]:
    """Return an unsigned JWT (alg "none") for `audience`, and when it expires (epoch s)."""
    now = int(time.time())
    expires = now + lifetime_s
    claims = {
        "aud": audience,
        "iss": issuer,
        "iat": now,
        "nbf": now - 60,
        "exp": expires,
        "jti": secrets.token_hex(8),  # two tokens of one second still differ
    }
    header = {"alg": "none", "typ": "JWT"}
    parts = [_b64url(json.dumps(part).encode()) for part in (header, claims)]
    return ".".join(parts) + ".", expires


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Issued:
    """One token the endpoint handed out."""

    resource: str
    client_id: str | None
    token: str
    expires_on: int


@dataclass
class TokenEndpoint:
    """A managed-identity token endpoint on 127.0.0.1 (App Service form, api-version 2019-08-01).

    `refusing` makes it answer 400 as a misconfigured identity does; `requests` holds the
    query of every token request, e.g. the client_id of a user-assigned identity, and
    `issued` every token handed out. `on_issue` sees each token before the caller does, so
    a test can make it valid where it is used (e.g. as a PostgreSQL role's password).
    """

    lifetime_s: int = 3600
    refusing: bool = False
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    requests: list[dict[str, str]] = field(default_factory=list)
    issued: list[Issued] = field(default_factory=list)
    on_issue: Callable[[Issued], None] | None = None

    def __post_init__(self) -> None:
        self._issuing = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/msi/token"

    def environ(self) -> dict[str, str]:
        """The variables App Service sets, which point ManagedIdentityCredential here."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def start(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, headers: dict[str, str], query: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Return (status, JSON body) for one token request."""
        if headers.get("x-identity-header") != self.secret:
            return 401, {"statusCode": "401", "message": "X-IDENTITY-HEADER is missing or wrong"}
        self.requests.append(query)
        if self.refusing:
            return 400, {"statusCode": "400", "message": "this identity is not assigned here"}
        resource = query.get("resource", "")
        with self._issuing:  # one at a time: on_issue sees tokens in the order handed out
            token, expires_on = unsigned_jwt(resource, self.lifetime_s)
            issued = Issued(resource, query.get("client_id"), token, expires_on)
            if self.on_issue is not None:
                self.on_issue(issued)
            self.issued.append(issued)
        body = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
        }
        if "client_id" in query:
            body["client_id"] = query["client_id"]
        return 200, body


def _handler_for(endpoint: TokenEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = endpoint.answer(headers, dict(parse_qsl(urlsplit(self.path).query)))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the tests read `requests`, not a log

    return Handler
