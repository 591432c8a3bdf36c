"""The pool and the migrations through PgBouncer in transaction mode (no session state)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from controllers import tracing
from lightsout.pgbouncer import PgBouncer
from repositories.db import SchemaPool, behind_transaction_pooler, open_pool
from repositories.migrations import discover, migrate, status
from repositories.tracecontext import current_traceparent
from schemas.settings import DatabaseSettings, load

VERSIONS = [m.version for m in discover()]
LATEST = VERSIONS[-1]
PREPARED_ELSEWHERE = (
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.DuplicatePreparedStatement,
)


def settings(
    monkeypatch: pytest.MonkeyPatch, url: str, schema: str, pooler: str
) -> DatabaseSettings:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("LIGHTSOUT_SCHEMA", schema)
    monkeypatch.setenv("LIGHTSOUT_DB_POOLER", pooler)
    monkeypatch.setenv("LIGHTSOUT_POOL_MAX_SIZE", "4")
    return load(DatabaseSettings)


@pytest.fixture
def schema() -> str:
    return f"custom_{secrets.token_hex(4)}"


@pytest.fixture
def pooled_url(pgbouncer: PgBouncer, empty_database_url: str) -> str:
    return pgbouncer.url(empty_database_url)


def look(pool: SchemaPool) -> tuple[int, str, int]:
    """(server pid, search_path, newest migration applied) seen by one transaction of the pool."""
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path,"
            " (SELECT max(version) FROM schema_migrations) AS applied"
        ).fetchone()
    assert row is not None
    return int(str(row["pid"])), str(row["path"]), int(str(row["applied"]))


def test_migrations_run_through_the_pooler(pooled_url: str, schema: str) -> None:
    assert migrate(pooled_url, schema) == VERSIONS
    assert status(pooled_url, schema) == (VERSIONS, [])
    assert migrate(pooled_url, schema, target=0) == []


def test_every_transaction_of_the_pool_finds_the_schema(
    monkeypatch: pytest.MonkeyPatch, pooled_url: str, schema: str
) -> None:
    migrate(pooled_url, schema)
    pooled = settings(monkeypatch, pooled_url, schema, "transaction")
    with open_pool(pooled) as pool, ThreadPoolExecutor(4) as threads:
        seen = list(threads.map(lambda _: look(pool), range(60)))

    assert {(path, applied) for _, path, applied in seen} == {(schema, LATEST)}
    # Transactions really moved between server connections: session state could not follow.
    assert len({pid for pid, _, _ in seen}) > 1


def trip(pool: SchemaPool) -> tuple[str | None, dict[str, object]]:
    """(the caller's traceparent, what one `one_trip` statement saw) in a span of its own."""
    with tracing.span("a trip"):
        rows = pool.one_trip(
            "SELECT current_setting('search_path') AS path, current_setting('application_name')"
            " AS name, (SELECT max(version) FROM schema_migrations) AS applied",
            (),
        )
        return current_traceparent(), rows[0]


def test_each_one_trip_finds_the_schema_and_names_its_trace_behind_the_pooler(
    monkeypatch: pytest.MonkeyPatch, pooled_url: str, schema: str
) -> None:
    tracing.configure()
    migrate(pooled_url, schema)
    pooled = settings(monkeypatch, pooled_url, schema, "transaction")
    with open_pool(pooled) as pool, ThreadPoolExecutor(4) as threads:
        seen = list(threads.map(lambda _: trip(pool), range(40)))

    assert {(row["path"], row["applied"]) for _, row in seen} == {(schema, LATEST)}
    assert all(parent is not None and row["name"] == parent for parent, row in seen)


def test_one_trip_leaves_no_setting_on_its_connection(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    tracing.configure()
    direct = settings(monkeypatch, database_url, "lightsout", "none")
    # One connection: the next block gets the one the trip used.
    with open_pool(direct.model_copy(update={"pool_min_size": 1, "pool_max_size": 1})) as pool:
        parent, row = trip(pool)
        assert row["path"] == "lightsout" and row["name"] == parent
        with ConnectionPool.connection(pool) as conn:
            after = conn.execute(
                "SELECT current_setting('search_path') AS path,"
                " current_setting('application_name') AS name"
            ).fetchone()
    assert after == {"path": '"$user", public', "name": ""}


def test_prepared_statements_are_off_behind_the_pooler(
    monkeypatch: pytest.MonkeyPatch, pooled_url: str, schema: str
) -> None:
    migrate(pooled_url, schema)
    with open_pool(settings(monkeypatch, pooled_url, schema, "transaction")) as pool:
        assert {look(pool)[2] for _ in range(20)} == {LATEST}

    # The same pool told it is direct prepares after 5 executions, on one server connection
    # of PgBouncer's; a later transaction lands on another one, which lacks the statement,
    # or on one that has it already under the same name from another client connection.
    direct = settings(monkeypatch, pooled_url, schema, "none")
    with open_pool(direct) as pool, pytest.raises(PREPARED_ELSEWHERE):
        for _ in range(20):
            look(pool)


def test_a_commit_inside_a_pool_block_is_refused(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    direct = settings(monkeypatch, database_url, "lightsout", "none")
    with (
        open_pool(direct) as pool,
        pytest.raises(psycopg.ProgrammingError),
        pool.connection() as conn,
    ):
        conn.commit()  # what followed would run outside the schema's transaction


@pytest.mark.parametrize(
    ("url", "pooler", "expected"),
    [
        ("postgresql://app@db.postgres.database.azure.com:6432/app", "auto", True),
        ("postgresql://app@db.postgres.database.azure.com:5432/app", "auto", False),
        ("postgresql://app@db.postgres.database.azure.com/app", "auto", False),
        ("postgresql://app@127.0.0.1:40000/app", "transaction", True),
        ("postgresql://app@127.0.0.1:6432/app", "none", False),
    ],
)
def test_the_pooler_is_detected_by_port_or_named(
    monkeypatch: pytest.MonkeyPatch, url: str, pooler: str, expected: bool
) -> None:
    assert behind_transaction_pooler(settings(monkeypatch, url, "lightsout", pooler)) is expected
