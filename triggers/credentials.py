"""Which identity a request's credential proves: an API key, a bearer JWT or Easy Auth.

A request that presents a credential is judged by that credential alone: a wrong key is
a 401 even if another credential would have passed, so a typo is never silently "someone
else". Keys are compared in constant time against every configured key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping

from schemas.auth import Identity, Scope
from schemas.settings import Settings
from triggers.tokens import InvalidToken, TokenVerifier

KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
EASY_AUTH_HEADER = "x-ms-client-principal"
ACTOR_HEADER = "x-lightsout-actor"
MAX_NOTE_CHARS = 200


class Unauthenticated(Exception):
    """No credential, or one that proves nothing; the message says which."""


class Authenticator:
    """Everything a request may prove itself with, made once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth == "on"
        self.keys = [
            (entry.key.encode(), Identity(name=name, kind="api_key", scopes=entry.scopes))
            for name, entry in settings.api_keys.items()
        ]
        self.tokens = TokenVerifier(settings)
        self.trust_easy_auth = settings.trust_easy_auth

    def identify(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Identity:
        """Return who sent a request with these (lower-case) headers, or raise Unauthenticated."""
        who = self._credential(headers, params)
        note = (headers.get(ACTOR_HEADER) or "").strip()[:MAX_NOTE_CHARS]
        if not note and who.on_behalf_of is None:
            return who  # frozen: the key's own identity serves every request with that key
        return who.model_copy(update={"on_behalf_of": note or None})

    def _credential(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Identity:
        if not self.enabled:
            return Identity(name="anonymous", kind="auth_off", scopes=frozenset(Scope))
        key = headers.get(KEY_HEADER) or params.get(KEY_PARAM)
        if key:
            return self._key_identity(key)
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
            if not self.tokens.configured:
                raise Unauthenticated("bearer tokens are not accepted: no JWT keys are configured")
            try:
                return self.tokens.identify(token.strip())
            except InvalidToken as exc:
                raise Unauthenticated(str(exc)) from None
        if self.trust_easy_auth and headers.get(EASY_AUTH_HEADER):
            return easy_auth_identity(headers)
        raise Unauthenticated(
            f"no credential: send an API key in the {KEY_HEADER} header (or the ?{KEY_PARAM}= "
            "query parameter) or an 'Authorization: Bearer' token"
        )

    def _key_identity(self, key: str) -> Identity:
        if not self.keys:
            raise Unauthenticated("API keys are not accepted: LIGHTSOUT_API_KEYS holds none")
        given = key.encode()
        found = None
        for secret, identity in self.keys:
            # Compare with every key, so the time taken does not say which one came close.
            if hmac.compare_digest(given, secret):
                found = identity
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return found


def easy_auth_identity(headers: Mapping[str, str]) -> Identity:
    """The identity App Service authentication put in X-MS-CLIENT-PRINCIPAL; roles are scopes."""
    try:
        principal = json.loads(base64.b64decode(headers[EASY_AUTH_HEADER], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated(f"the {EASY_AUTH_HEADER} header is not base64 JSON: {exc}") from None
    if not isinstance(principal, dict):
        raise Unauthenticated(f"the {EASY_AUTH_HEADER} header is not a JSON object")
    claims = [c for c in principal.get("claims") or [] if isinstance(c, dict)]
    role_type = principal.get("role_typ") or "roles"
    name_type = principal.get("name_typ") or "name"
    roles = {str(c.get("val")) for c in claims if c.get("typ") in (role_type, "roles")}
    names = [str(c.get("val")) for c in claims if c.get("typ") == name_type and c.get("val")]
    name = headers.get(f"{EASY_AUTH_HEADER}-name") or (names[0] if names else "")
    if not name:
        raise Unauthenticated(f"the {EASY_AUTH_HEADER} header names no user")
    known = {s.value for s in Scope}
    return Identity(
        name=name, kind="easy_auth", scopes=frozenset(Scope(r) for r in roles if r in known)
    )
