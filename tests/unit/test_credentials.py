"""Which identity a credential proves: API keys, bearer JWTs (HS256 and a JWKS), Easy Auth."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.auth import Scope
from schemas.exceptions import ConfigurationError
from schemas.settings import Settings, load_settings
from tests.jwt_keys import (
    AUDIENCE,
    ISSUER,
    SECRET,
    JwksServer,
    SigningKey,
    hs256_token,
    jwks_server,
    unsigned_token,
)
from triggers.credentials import Authenticator, Unauthenticated

READER_KEY = "reader-" + "r" * 30
ADMIN_KEY = "admin-" + "a" * 30
KEYS = {
    "reader": {"key": READER_KEY, "scopes": ["jobs:read"]},
    "ops": {"key": ADMIN_KEY, "scopes": ["jobs:read", "jobs:admin"]},
}


def settings(**values: Any) -> Settings:
    base = {"DATABASE_URL": "postgresql://nowhere/db", "AzureWebJobsStorage": "unused"}
    return Settings(**{**base, **values})


def auth(**values: Any) -> Authenticator:
    return Authenticator(settings(**values))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def refused(authenticator: Authenticator, headers: dict[str, str], params: Any = None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        authenticator.identify(headers, params or {})
    return str(caught.value)


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as server:
        yield server


def test_a_key_in_the_header_or_the_code_parameter_proves_its_name_and_scopes() -> None:
    keys = auth(LIGHTSOUT_API_KEYS=KEYS)

    by_header = keys.identify({"x-functions-key": READER_KEY}, {})
    by_query = keys.identify({}, {"code": ADMIN_KEY})

    assert (by_header.actor, by_header.scopes) == ("api-key:reader", frozenset({Scope.READ}))
    assert (by_query.actor, by_query.scopes) == (
        "api-key:ops",
        frozenset({Scope.READ, Scope.ADMIN}),
    )


def test_a_wrong_key_or_no_credential_is_refused_and_a_wrong_key_does_not_fall_through() -> None:
    keys = auth(
        LIGHTSOUT_API_KEYS=KEYS,
        LIGHTSOUT_JWT_SECRET=SECRET,
        LIGHTSOUT_JWT_ISSUER=ISSUER,
        LIGHTSOUT_JWT_AUDIENCE=AUDIENCE,
    )

    assert refused(keys, {"x-functions-key": READER_KEY + "x"}) == "the API key is not valid"
    assert refused(keys, {"x-functions-key": "short"}) == "the API key is not valid"
    assert "no credential" in refused(keys, {})
    # A valid token next to a wrong key: the key is judged, and refused.
    assert refused(keys, {"x-functions-key": "nope", **bearer(hs256_token())}) == (
        "the API key is not valid"
    )


def test_the_actor_header_is_a_note_next_to_the_identity_never_the_identity() -> None:
    keys = auth(LIGHTSOUT_API_KEYS=KEYS)

    who = keys.identify({"x-functions-key": READER_KEY, "x-lightsout-actor": "alice"}, {})

    assert who.actor == "api-key:reader (for alice)"
    assert "no credential" in refused(keys, {"x-lightsout-actor": "api-key:ops"})


def test_a_short_key_stops_start_up_naming_it_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = {"ci": {"key": "tooshort-secret", "scopes": ["jobs:read"]}}
    monkeypatch.setenv("DATABASE_URL", "postgresql://nowhere/db")
    monkeypatch.setenv("AzureWebJobsStorage", "unused")
    monkeypatch.setenv("LIGHTSOUT_API_KEYS", json.dumps(short))

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert "'ci'" in str(caught.value) and "24" in str(caught.value)
    assert "tooshort-secret" not in str(caught.value)


def hs256(**values: Any) -> Authenticator:
    return auth(
        LIGHTSOUT_JWT_SECRET=SECRET,
        LIGHTSOUT_JWT_ISSUER=ISSUER,
        LIGHTSOUT_JWT_AUDIENCE=AUDIENCE,
        **values,
    )


def test_an_hs256_token_proves_its_sub_with_scopes_from_scp_and_roles() -> None:
    tokens = hs256()

    delegated = tokens.identify(bearer(hs256_token(scp="jobs:read jobs:submit other")), {})
    app = tokens.identify(bearer(hs256_token(sub=None, oid="app-7", roles=["jobs:admin"])), {})

    assert (delegated.actor, delegated.scopes) == (
        "jwt:user-1",
        frozenset({Scope.READ, Scope.SUBMIT}),
    )
    assert (app.actor, app.scopes) == ("jwt:app-7", frozenset({Scope.ADMIN}))


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (hs256_token(exp=int(time.time()) - 3600), "expired"),
        (hs256_token(nbf=int(time.time()) + 3600), "not yet valid"),
        (hs256_token(aud="api://someone-else"), "audience"),
        (hs256_token(iss="https://evil.test"), "issuer"),
        (hs256_token(secret="another-secret-of-the-same-length-0123"), "signature"),
        (hs256_token(exp=None), "exp"),
        (unsigned_token(), "not accepted"),
        ("not.a.token", "invalid bearer token"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-aud",
        "wrong-iss",
        "bad-signature",
        "no-exp",
        "alg-none",
        "garbage",
    ],
)
def test_a_bad_token_is_refused_saying_why(token: str, why: str) -> None:
    assert why in refused(hs256(), bearer(token)).lower()


def test_a_bearer_token_is_refused_when_no_jwt_keys_are_configured() -> None:
    keys = auth(LIGHTSOUT_API_KEYS=KEYS)

    assert "no JWT keys" in refused(keys, bearer(hs256_token()))
    assert "Bearer <token>" in refused(keys, {"authorization": "Basic dXNlcjpwYXNz"})


def jwks_auth(server: JwksServer, **values: Any) -> Authenticator:
    return auth(
        LIGHTSOUT_JWT_JWKS_URL=server.url,
        LIGHTSOUT_JWT_ISSUER=ISSUER,
        LIGHTSOUT_JWT_AUDIENCE=AUDIENCE,
        **values,
    )


def test_rs256_and_es256_tokens_verify_against_the_jwks(jwks: JwksServer) -> None:
    rsa, ec = SigningKey("rsa-1"), SigningKey("ec-1", "ES256")
    jwks.publish(rsa, ec)
    tokens = jwks_auth(jwks)

    assert tokens.identify(bearer(rsa.token(scp="jobs:read")), {}).scopes == {Scope.READ}
    assert tokens.identify(bearer(ec.token(roles=["jobs:submit"])), {}).scopes == {Scope.SUBMIT}
    assert jwks.fetches == 1  # the keys are cached


def test_a_token_signed_by_a_key_not_in_the_jwks_is_refused(jwks: JwksServer) -> None:
    published, stranger = SigningKey("k1"), SigningKey("k1")  # same kid, other key
    jwks.publish(published)

    assert "signature" in refused(jwks_auth(jwks), bearer(stranger.token())).lower()


def test_an_hs256_token_is_refused_where_only_the_jwks_is_configured(jwks: JwksServer) -> None:
    # The classic confusion: HS256 "signed" with the RSA public key as the secret.
    rsa = SigningKey("rsa-1")
    jwks.publish(rsa)

    assert "invalid bearer token" in refused(jwks_auth(jwks), bearer(hs256_token()))


def test_an_unknown_kid_refetches_the_jwks_so_rotated_keys_work(jwks: JwksServer) -> None:
    old, new = SigningKey("old"), SigningKey("new")
    jwks.publish(old)
    authenticator = jwks_auth(jwks)
    authenticator.tokens = type(authenticator.tokens)(
        settings(
            LIGHTSOUT_JWT_JWKS_URL=jwks.url,
            LIGHTSOUT_JWT_ISSUER=ISSUER,
            LIGHTSOUT_JWT_AUDIENCE=AUDIENCE,
        ),
        refresh_cooldown_s=0.2,
    )
    assert authenticator.identify(bearer(old.token()), {}).name == "user-1"

    jwks.publish(old, new)
    time.sleep(0.3)  # past the refresh cooldown

    assert authenticator.identify(bearer(new.token(sub="rotated")), {}).name == "rotated"
    assert jwks.fetches == 2


def principal(name: str, roles: list[str]) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": name}]
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_easy_auth_is_honoured_only_when_trusted() -> None:
    header = {"x-ms-client-principal": principal("alice@example.com", ["jobs:read", "x"])}

    who = auth(LIGHTSOUT_TRUST_EASY_AUTH="true").identify(header, {})

    assert (who.actor, who.scopes) == ("easy-auth:alice@example.com", frozenset({Scope.READ}))
    assert "no credential" in refused(auth(LIGHTSOUT_API_KEYS=KEYS), header)
    garbled = {"x-ms-client-principal": "%%%"}
    assert "base64" in refused(auth(LIGHTSOUT_TRUST_EASY_AUTH="true"), garbled)


def test_auth_off_lets_anyone_in_with_every_scope() -> None:
    who = auth(LIGHTSOUT_AUTH="off").identify({}, {})

    assert (who.actor, who.scopes) == ("auth-off:anonymous", frozenset(Scope))
