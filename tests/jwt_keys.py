"""Signing keys and tokens for the authentication tests, and a JWKS served on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from schemas.records import Json

ISSUER = "https://issuer.test/lightsout"
AUDIENCE = "api://lightsout-tests"
SECRET = "dev-secret-for-the-tests-only-0123456789"


class SigningKey:
    """A private key with its kid; `jwk` is the public half as a JWKS entry."""

    def __init__(self, kid: str, alg: str = "RS256") -> None:
        self.kid, self.alg = kid, alg
        if alg == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk: Json = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, alg=alg, use="sig")

    def token(self, **claims: Any) -> str:
        return jwt.encode(
            standard_claims(claims), self.private, algorithm=self.alg, headers={"kid": self.kid}
        )


def standard_claims(claims: Json) -> Json:
    """Valid issuer, audience and lifetime, overridden or removed (value None) by `claims`."""
    now = int(time.time())
    base: Json = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 600}
    base.update(claims)
    return {k: v for k, v in base.items() if v is not None}


def hs256_token(secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode(standard_claims(claims), secret, algorithm="HS256")


def unsigned_token(**claims: Any) -> str:
    """A token with `alg: none` (no signature at all)."""
    return jwt.encode(standard_claims(claims), None, algorithm="none")  # type: ignore[arg-type]


class JwksServer:
    """A JWKS document on 127.0.0.1 whose keys a test can change while it runs."""

    def __init__(self) -> None:
        self.keys: list[Json] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"

    def publish(self, *keys: SigningKey) -> None:
        self.keys = [k.jwk for k in keys]


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
