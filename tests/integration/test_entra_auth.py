"""PostgreSQL by Microsoft Entra token: LIGHTSOUT_DB_AUTH=entra, against a real password check.

The cluster checks passwords over TCP (scram-sha-256) for every role but its superuser,
and the test role's password is always the token the local identity endpoint issued last,
valid until that token's expiry: a connection logs in only with a current token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from lightsout.devidentity import Issued, TokenEndpoint
from lightsout.devservices import ClusterPostgres
from repositories.db import open_pool
from repositories.entra import SCOPE
from schemas.exceptions import DatabaseUnavailable
from schemas.settings import DatabaseSettings, load

ROLE = "entra_app"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
LIFETIME_S = 3
HBA = """\
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


@pytest.fixture
def password_cluster(private_postgres: ClusterPostgres) -> ClusterPostgres:
    """The private cluster, with passwords checked for every role but the superuser."""
    (private_postgres.data_dir / "pg_hba.conf").write_text(HBA)
    with psycopg.connect(private_postgres.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
    return private_postgres


def role_url(cluster: ClusterPostgres, password: str | None = None) -> str:
    secret = f":{password}" if password else ""
    return f"postgresql://{ROLE}{secret}@127.0.0.1:{cluster.port}/postgres"


@pytest.fixture
def endpoint(password_cluster: ClusterPostgres) -> Iterator[TokenEndpoint]:
    def accept(issued: Issued) -> None:
        until = datetime.fromtimestamp(issued.expires_on, UTC).isoformat()
        statement = sql.SQL("ALTER ROLE {} PASSWORD {} VALID UNTIL {}").format(
            sql.Identifier(ROLE), sql.Literal(issued.token), sql.Literal(until)
        )
        with psycopg.connect(password_cluster.dsn, autocommit=True) as conn:
            conn.execute(statement)

    served = TokenEndpoint(lifetime_s=LIFETIME_S, on_issue=accept).start()
    yield served
    served.stop()


@pytest.fixture
def entra_settings(
    monkeypatch: pytest.MonkeyPatch, password_cluster: ClusterPostgres, endpoint: TokenEndpoint
) -> DatabaseSettings:
    for name, value in endpoint.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", role_url(password_cluster))  # no password in it
    monkeypatch.setenv("LIGHTSOUT_DB_AUTH", "entra")
    monkeypatch.setenv("LIGHTSOUT_DB_CLIENT_ID", CLIENT_ID)
    # One connection, so that no two connect at once (each new token replaces the last).
    monkeypatch.setenv("LIGHTSOUT_POOL_MIN_SIZE", "1")
    monkeypatch.setenv("LIGHTSOUT_POOL_MAX_SIZE", "1")
    return load(DatabaseSettings)


def who(conn: psycopg.Connection[dict[str, object]]) -> object:
    row = conn.execute("SELECT current_user AS name").fetchone()
    return row["name"] if row else None


def test_the_password_is_checked(password_cluster: ClusterPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(role_url(password_cluster, "not-a-token")).close()


def test_connections_log_in_with_a_token_and_get_a_new_one_after_it_expires(
    entra_settings: DatabaseSettings, endpoint: TokenEndpoint, password_cluster: ClusterPostgres
) -> None:
    with open_pool(entra_settings) as pool:
        with pool.connection() as conn:
            assert who(conn) == ROLE
            first = conn.info.password
        assert first == endpoint.issued[-1].token
        assert {(i.resource, i.client_id) for i in endpoint.issued} == {
            (SCOPE.removesuffix("/.default"), CLIENT_ID)
        }

        time.sleep(max(0.0, endpoint.issued[-1].expires_on - time.time()) + 1)
        # The server would not let the old token in again...
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(role_url(password_cluster, first)).close()
        # ...and the pool does not hand out the connection it made with it.
        with pool.connection() as conn:
            assert who(conn) == ROLE
            second = conn.info.password

    assert second != first
    assert second == endpoint.issued[-1].token


def test_start_up_names_the_credential_when_no_token_comes(
    entra_settings: DatabaseSettings, endpoint: TokenEndpoint
) -> None:
    endpoint.refusing = True
    with pytest.raises(DatabaseUnavailable, match="ManagedIdentityCredential"):
        open_pool(entra_settings)


def test_without_a_client_id_the_default_credential_chain_finds_the_identity(
    monkeypatch: pytest.MonkeyPatch, entra_settings: DatabaseSettings, endpoint: TokenEndpoint
) -> None:
    monkeypatch.delenv("LIGHTSOUT_DB_CLIENT_ID")
    with open_pool(load(DatabaseSettings)) as pool, pool.connection() as conn:
        assert who(conn) == ROLE
    assert {i.client_id for i in endpoint.issued} == {None}
