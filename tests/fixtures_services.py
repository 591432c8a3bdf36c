"""Real PostgreSQL and Azurite for the session; a fresh database, queues and settings per test.

A fixture that cannot get its service errors with the reason; it never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from lightsout.devidentity import OAuthAzurite, TokenEndpoint, start_oauth_azurite
from lightsout.devservices import (
    AzuriteService,
    ClusterPostgres,
    PostgresService,
    ensure_azurite,
    ensure_postgres,
    start_azurite,
    start_cluster,
)
from lightsout.pgbouncer import PgBouncer, start_pgbouncer

RUN_DIR = Path(__file__).resolve().parents[1] / ".run"
# The suite runs with authentication on: every test's settings hold this key, all scopes.
TEST_KEY = "test-key-" + secrets.token_urlsafe(24)
TEST_KEY_NAME = "tests"
TEST_API_KEYS = json.dumps(
    {TEST_KEY_NAME: {"key": TEST_KEY, "scopes": ["jobs:read", "jobs:submit", "jobs:admin"]}}
)
SCHEMA = "lightsout"
SERVICE_FIXTURES = frozenset(
    {
        "pg_service",
        "azurite_service",
        "private_postgres",
        "private_azurite",
        "pgbouncer",
        "oauth_azurite",
    }
)
# LIGHTSOUT_TEST_POOLER=pgbouncer: the app's settings (settings_env) reach the database
# through a PgBouncer in transaction mode; migrations and the tests' own queries go direct.
TEST_POOLERS = ("", "pgbouncer")


@dataclass(frozen=True)
class QueueNames:
    """Queue names of one test; valid Azure names (lowercase, digits, single hyphens)."""

    jobs: str
    tasks: str
    jobs_poison: str
    tasks_poison: str

    @classmethod
    def unique(cls) -> QueueNames:
        prefix = f"t{secrets.token_hex(4)}"
        jobs, tasks = f"{prefix}-jobs", f"{prefix}-tasks"
        return cls(jobs, tasks, f"{jobs}-poison", f"{tasks}-poison")


def database_dsn(server_dsn: str, dbname: str) -> str:
    """Point a server's DSN (URL or key=value) at another database."""
    parts = urlsplit(server_dsn)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return make_conninfo(server_dsn, dbname=dbname)


def create_database(server_dsn: str, name: str, template: str = "template0") -> None:
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template)
    )
    for attempt in range(50):
        try:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(statement)
            return
        except psycopg.errors.ObjectInUse:
            # A session that just closed on the template can take a moment to end.
            if attempt == 49:
                raise
            time.sleep(0.1)


def drop_database(server_dsn: str, name: str) -> None:
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(statement)


def scratch_database(server_dsn: str, template: str) -> Iterator[str]:
    """Yield the DSN of a new database copied from template, dropped afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    create_database(server_dsn, name, template)
    try:
        yield database_dsn(server_dsn, name)
    finally:
        drop_database(server_dsn, name)


def pytest_configure(config: pytest.Config) -> None:
    """Turn SIGTERM (a cancelled CI job) into an interrupt, so the services are stopped."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use a real service as integration, for `-m "not integration"`."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVICE_FIXTURES and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_service() -> Iterator[PostgresService]:
    """DATABASE_URL if it answers, else a throwaway cluster or container."""
    service = ensure_postgres(RUN_DIR)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def azurite_service() -> Iterator[AzuriteService]:
    service = ensure_azurite(RUN_DIR)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def azurite(azurite_service: AzuriteService) -> str:
    """The storage connection string of the session's Azurite."""
    return azurite_service.connection_string


@pytest.fixture(scope="session")
def template_database(pg_service: PostgresService) -> Iterator[str]:
    """Name of a database migrated once per session, copied by `database_url`."""
    from repositories.migrations import migrate

    name = f"lightsout_tmpl_{secrets.token_hex(4)}"
    create_database(pg_service.dsn, name)
    try:
        migrate(database_dsn(pg_service.dsn, name), schema=SCHEMA)
        yield name
    finally:
        drop_database(pg_service.dsn, name)


@pytest.fixture
def database_url(pg_service: PostgresService, template_database: str) -> Iterator[str]:
    """DSN of this test's own migrated database."""
    yield from scratch_database(pg_service.dsn, template_database)


@pytest.fixture
def empty_database_url(pg_service: PostgresService) -> Iterator[str]:
    """DSN of this test's own database, without any migration."""
    yield from scratch_database(pg_service.dsn, "template0")


@pytest.fixture
def queue_names() -> QueueNames:
    return QueueNames.unique()


@pytest.fixture
def settings_env(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    azurite: str,
    queue_names: QueueNames,
) -> dict[str, str]:
    """Set the app settings of this test in os.environ and return them."""
    env = {
        "DATABASE_URL": database_url,
        "AzureWebJobsStorage": azurite,
        "LIGHTSOUT_JOBS_QUEUE": queue_names.jobs,
        "LIGHTSOUT_TASKS_QUEUE": queue_names.tasks,
        "LIGHTSOUT_SCHEMA": SCHEMA,
        "LIGHTSOUT_API_KEYS": TEST_API_KEYS,
        "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
    }
    if pooler_under_test() == "pgbouncer":
        env.update(through_pgbouncer(request.getfixturevalue("pgbouncer"), database_url))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def private_postgres() -> Iterator[ClusterPostgres]:
    """A throwaway cluster of this test alone, which it may restart (chaos tests)."""
    cluster = start_cluster(RUN_DIR)
    yield cluster
    cluster.stop()


@pytest.fixture
def private_azurite() -> Iterator[AzuriteService]:
    """An Azurite of this test alone, which it may restart (chaos tests)."""
    service = start_azurite(RUN_DIR)
    yield service
    service.stop()


def pooler_under_test() -> str:
    """LIGHTSOUT_TEST_POOLER: empty (direct connections) or `pgbouncer`."""
    value = os.environ.get("LIGHTSOUT_TEST_POOLER", "")
    if value not in TEST_POOLERS:
        raise pytest.UsageError(f"LIGHTSOUT_TEST_POOLER must be one of {TEST_POOLERS}: {value!r}")
    return value


def through_pgbouncer(bouncer: PgBouncer, database_url: str) -> dict[str, str]:
    """The settings of an app that reaches `database_url` through PgBouncer."""
    return {
        "DATABASE_URL": bouncer.url(database_url),
        "LIGHTSOUT_MIGRATIONS_DATABASE_URL": database_url,
        "LIGHTSOUT_DB_POOLER": "transaction",
    }


@pytest.fixture(scope="session")
def pgbouncer(pg_service: PostgresService) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode (5 server connections per database) before pg_service."""
    bouncer = start_pgbouncer(RUN_DIR, pg_service.dsn, pool_size=5)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def oauth_azurite() -> Iterator[OAuthAzurite]:
    """An Azurite taking only what an identity brings: bearer tokens, over HTTPS."""
    service = start_oauth_azurite(RUN_DIR)
    yield service
    service.stop()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    """A managed-identity token endpoint of this test alone, on 127.0.0.1."""
    endpoint = TokenEndpoint().start()
    yield endpoint
    endpoint.stop()
