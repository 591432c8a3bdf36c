"""Bearer JWTs: signature, issuer, audience and lifetime checked by PyJWT; scopes from claims.

The algorithms come from the configuration, never from the token: keys of the JWKS
(what Entra ID and other OIDC providers publish) verify RS256/ES256 only, the development
secret HS256 only, so a token cannot pick a weaker algorithm or `alg: none`.
"""

from __future__ import annotations

import jwt

from schemas.auth import Identity, Scope
from schemas.settings import Settings

JWKS_ALGORITHMS = ["RS256", "ES256"]
SECRET_ALGORITHMS = ["HS256"]
JWKS_CACHE_S = 300.0
# An unknown kid refetches the JWKS (keys rotate), at most this often: random kids in
# forged tokens must not turn every request into a call to the identity provider.
JWKS_REFRESH_COOLDOWN_S = 10.0
LEEWAY_S = 30


class InvalidToken(Exception):
    """The bearer token does not prove an identity; the message says why."""


class TokenVerifier:
    """Verify bearer tokens against the configured JWKS URL and/or HS256 secret."""

    def __init__(
        self, settings: Settings, refresh_cooldown_s: float = JWKS_REFRESH_COOLDOWN_S
    ) -> None:
        self.issuer, self.audience = settings.jwt_issuer, settings.jwt_audience
        self.secret = settings.jwt_secret
        url = settings.jwt_jwks_url
        self.jwks = (
            jwt.PyJWKClient(
                url, lifespan=JWKS_CACHE_S, timeout=10, cooldown_duration=refresh_cooldown_s
            )
            if url
            else None
        )

    @property
    def configured(self) -> bool:
        return self.jwks is not None or self.secret is not None

    def identify(self, token: str) -> Identity:
        """Return the identity a valid token proves, or raise InvalidToken."""
        try:
            claims = self._decode(token)
        except (jwt.PyJWTError, ValueError) as exc:
            raise InvalidToken(f"invalid bearer token: {exc}") from None
        name = claims.get("oid") or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise InvalidToken("invalid bearer token: it has neither an oid nor a sub claim")
        return Identity(name=name, kind="jwt", scopes=scopes_of(claims))

    def _decode(self, token: str) -> dict[str, object]:
        header = jwt.get_unverified_header(token)
        options = {"require": ["exp", "iss", "aud"]}
        # The header only chooses which configured key to try; each key has its own fixed list.
        if header.get("alg") in SECRET_ALGORITHMS and self.secret is not None:
            key: object = self.secret
            algorithms = SECRET_ALGORITHMS
        elif self.jwks is not None:
            key = self.jwks.get_signing_key_from_jwt(token).key
            algorithms = JWKS_ALGORITHMS
        else:
            alg = header.get("alg")
            raise InvalidToken(f"invalid bearer token: algorithm {alg!r} is not accepted")
        claims: dict[str, object] = jwt.decode(
            token,
            key,  # type: ignore[arg-type]  # PyJWK keys are the cryptography key objects
            algorithms=algorithms,
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY_S,
            options=options,  # type: ignore[arg-type]
        )
        return claims


def scopes_of(claims: dict[str, object]) -> frozenset[Scope]:
    """The API scopes named by `scp` (space-separated, delegated) and `roles` (app roles)."""
    scp = claims.get("scp")
    roles = claims.get("roles")
    names = (scp.split() if isinstance(scp, str) else []) + (
        [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
    )
    known = {s.value for s in Scope}
    return frozenset(Scope(n) for n in names if n in known)
