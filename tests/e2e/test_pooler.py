"""A job through PgBouncer in transaction mode, as Azure's built-in pooler serves it."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from lightsout.pgbouncer import PgBouncer
from repositories.migrations import migrate
from tests.e2e.hosts import HostProcess, finished
from tests.fixtures_services import TEST_API_KEYS, QueueNames, through_pgbouncer

pytestmark = pytest.mark.e2e
TASKS = 40


def hold_server_connections(url: str, count: int) -> None:
    """Open `count` transactions at once, so PgBouncer makes that many server connections.

    None of them has seen the app's session: a transaction that relies on session state
    set on another server connection then fails.
    """
    with ExitStack() as stack:
        for _ in range(count):
            conn = stack.enter_context(psycopg.connect(url))
            conn.execute("SELECT 1")


@pytest.fixture
def custom_schema(empty_database_url: str) -> Iterator[str]:
    """A schema whose name is not the default, migrated directly (not through the pooler)."""
    schema = f"custom_{secrets.token_hex(4)}"
    migrate(empty_database_url, schema)
    yield schema


def test_a_job_completes_through_pgbouncer_in_a_custom_schema(
    pgbouncer: PgBouncer,
    empty_database_url: str,
    custom_schema: str,
    azurite: str,
    queue_names: QueueNames,
    tmp_path: Path,
) -> None:
    settings = through_pgbouncer(pgbouncer, empty_database_url)
    hold_server_connections(settings["DATABASE_URL"], 5)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIGHTSOUT_")},
        **settings,
        "LIGHTSOUT_SCHEMA": custom_schema,
        "AzureWebJobsStorage": azurite,
        "LIGHTSOUT_JOBS_QUEUE": queue_names.jobs,
        "LIGHTSOUT_TASKS_QUEUE": queue_names.tasks,
        # Stripped with the other LIGHTSOUT_ settings above: the test key, noop_fanout.
        "LIGHTSOUT_API_KEYS": TEST_API_KEYS,
        "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
    }
    host = HostProcess("pooled", env, tmp_path, ["--no-migrate"])
    try:
        host.wait_ready()
        answer = host.api.submit("noop_fanout", {"tasks": TASKS, "stages": 2})
        job = finished(host.api, answer["job_id"], timeout=120)
        assert job["status"] == "completed", job["error"]
    except BaseException:
        sys.stderr.write(f"----- host log -----\n{host.log[-20000:]}\n")
        raise
    finally:
        host.terminate()

    with psycopg.connect(empty_database_url) as conn:
        query = sql.SQL("SELECT status, count(*) FROM {}.tasks GROUP BY status").format(
            sql.Identifier(custom_schema)
        )
        assert dict(conn.execute(query).fetchall()) == {"completed": 2 * TASKS}
    assert "relation" not in host.log, "a statement did not find the schema"
