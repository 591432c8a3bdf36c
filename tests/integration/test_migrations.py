"""Migrations: up, down to zero and up again; the catalog is the declared one each time."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import BaseModel

from repositories.migrations import discover, migrate, status
from schemas.exceptions import MigrationError
from schemas.operator import JobTypePause, StageCounters
from schemas.records import Claim, Completion, JobEvent, JobRecord, StageRecord, TaskRecord
from schemas.status import JobStatus, StageStatus, TaskStatus

SCHEMA = "lightsout"
VERSIONS = [m.version for m in discover()]
LATEST = VERSIONS[-1]
TABLES = {
    "jobs",
    "job_stages",
    "tasks",
    "job_events",
    "poison_messages",
    "schema_migrations",
    "job_type_pauses",
}
PROCEDURES = {
    "submit_job",
    "start_stage",
    "claim_tasks",
    "finish_task",
    "complete_task_and_check_stage",
    "fail_task_and_check_stage",
    "retry_task",
    "advance_job_stage",
    "cancel_job",
    # 0002
    "reap_task",
    "retry_job",
    # 0003
    "deferred_tasks",
    "mark_tasks_dispatched",
    "mark_job_dispatched",
    "heartbeat_tasks",
    "take_dispatch_lease",
    "release_dispatch_lease",
    "sweep_unsent_tasks",
    "sweep_unsent_jobs",
    "reopen_lost_messages",
    "record_repair",
    "record_poison",
    "claim_poison_replay",
    "release_poison_replay",
    # 0004
    "pause_job_type",
    "resume_job_type",
    "hold_job_if_paused",
    "hold_tasks_if_paused",
    "report_task_progress",
    # 0008
    "tasks_have_their_stage",
    # 0011
    "start_stage_in_parts",
    "create_rest_of_stage",
}

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
               column_default, is_identity
          FROM information_schema.columns WHERE table_schema = %(schema)s
         ORDER BY table_name, ordinal_position""",
    "constraints": """
        SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype,
               pg_get_constraintdef(c.oid) AS definition
          FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = %(schema)s ORDER BY 1, 2""",
    "procedures": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
               pg_get_function_result(p.oid) AS result, p.prosrc, p.proconfig, p.provolatile,
               l.lanname
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_language l ON l.oid = p.prolang
         WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
}


def catalog(dsn: str, schema: str = SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
    """Return a snapshot of the schema's tables, constraints, indexes and procedures."""
    with psycopg.connect(dsn) as conn:
        return {
            name: conn.execute(query, {"schema": schema}).fetchall()
            for name, query in CATALOG_QUERIES.items()
        }


def tables(dsn: str, schema: str = SCHEMA) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {str(r[0]) for r in rows}


def columns(dsn: str, table: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (SCHEMA, table),
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_up_down_to_zero_and_up_again(empty_database_url: str) -> None:
    assert migrate(empty_database_url, SCHEMA) == VERSIONS
    once = catalog(empty_database_url)
    assert tables(empty_database_url) == TABLES
    assert {row[0] for row in once["procedures"]} >= PROCEDURES

    assert migrate(empty_database_url, SCHEMA, target=0) == []
    assert tables(empty_database_url) == {"schema_migrations"}
    down = catalog(empty_database_url)
    assert down["procedures"] == []
    assert {row[0] for row in down["columns"]} == {"schema_migrations"}

    assert migrate(empty_database_url, SCHEMA) == VERSIONS
    assert catalog(empty_database_url) == once


@pytest.mark.parametrize("version", VERSIONS[:-1])
def test_each_down_restores_the_catalog_before_its_up(
    empty_database_url: str, version: int
) -> None:
    migrate(empty_database_url, SCHEMA, target=version)
    before = catalog(empty_database_url)
    migrate(empty_database_url, SCHEMA)
    migrate(empty_database_url, SCHEMA, target=version)
    assert catalog(empty_database_url) == before


def test_migrating_twice_changes_nothing(empty_database_url: str) -> None:
    migrate(empty_database_url, SCHEMA)
    before = catalog(empty_database_url)
    assert migrate(empty_database_url, SCHEMA) == VERSIONS
    assert catalog(empty_database_url) == before
    assert status(empty_database_url, SCHEMA) == (VERSIONS, [])


def test_status_before_and_after(empty_database_url: str) -> None:
    assert status(empty_database_url, SCHEMA) == ([], VERSIONS)
    migrate(empty_database_url, SCHEMA)
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version, name FROM {}.schema_migrations ORDER BY version").format(
                sql.Identifier(SCHEMA)
            )
        ).fetchall()
    assert rows == [(m.version, m.name) for m in discover()]


def test_template_database_matches_a_fresh_migration(
    empty_database_url: str, database_url: str
) -> None:
    migrate(empty_database_url, SCHEMA)
    assert catalog(database_url) == catalog(empty_database_url)


@pytest.mark.parametrize("target", [-1, LATEST + 1])
def test_target_out_of_range_is_refused(empty_database_url: str, target: int) -> None:
    with pytest.raises(MigrationError, match="target"):
        migrate(empty_database_url, SCHEMA, target=target)


def test_records_match_their_tables(database_url: str) -> None:
    # Every field a record reads is a column of its table (the declared schema).
    readers: list[tuple[type[BaseModel], str]] = [
        (JobRecord, "jobs"),
        (StageRecord, "job_stages"),
        (TaskRecord, "tasks"),
        (JobEvent, "job_events"),
        (Claim, "tasks"),
        (JobTypePause, "job_type_pauses"),
        (StageCounters, "job_stages"),
    ]
    for model, table in readers:
        missing = set(model.model_fields) - columns(database_url, table)
        assert not missing, f"{model.__name__} reads {missing} that {table} lacks"
    assert set(Completion.model_fields) == {
        "applied",
        "is_last_task",
        "task_count",
        "remaining",
        "completed_count",
        "failed_count",
    }


def check_values(dsn: str, constraint: str) -> set[str]:
    """Return the string literals of a CHECK constraint's `status IN (...)` list."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE n.nspname = %s AND c.conname = %s AND c.contype = 'c'",
            (SCHEMA, constraint),
        ).fetchone()
    assert row is not None, f"no CHECK constraint {constraint}"
    definition = str(row[0])
    assert "status" in definition
    literals = definition.split("'")[1::2]
    return set(literals)


@pytest.mark.parametrize(
    ("constraint", "enum"),
    [
        ("job_status_known", JobStatus),
        ("stage_status_known", StageStatus),
        ("task_status_known", TaskStatus),
    ],
)
def test_status_checks_list_the_enums(
    database_url: str, constraint: str, enum: type[JobStatus | StageStatus | TaskStatus]
) -> None:
    assert check_values(database_url, constraint) == {s.value for s in enum}


def test_custom_schema_name(empty_database_url: str) -> None:
    custom = "ls_custom"
    assert migrate(empty_database_url, custom) == VERSIONS
    migrate(empty_database_url, SCHEMA)
    assert tables(empty_database_url, custom) == TABLES
    ours = catalog(empty_database_url, custom)
    theirs = catalog(empty_database_url, SCHEMA)
    assert [r[:2] for r in ours["columns"]] == [r[:2] for r in theirs["columns"]]
    # Every procedure keeps its own schema; the by-id ones also plan without scans (0010).
    assert all(f"search_path={custom}" in r[4] for r in ours["procedures"])
    assert {s for r in ours["procedures"] for s in r[4]} == {
        f"search_path={custom}",
        "enable_seqscan=off",
    }

    job = "c" * 64
    # A session whose search_path does not name the schema: the procedures keep their own.
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("SET search_path TO public")
        q = sql.Identifier(custom)
        created = conn.execute(
            sql.SQL("SELECT {}.submit_job(%s, 'demo', '{{}}', ARRAY['one'])").format(q), (job,)
        ).fetchone()
        assert created == (True,)
        started = conn.execute(
            sql.SQL("SELECT {}.start_stage(%s, 1, 1)").format(q), (job,)
        ).fetchone()
        assert started == (True,)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.tasks (task_id, job_id, stage, task_index, task_type)"
                " VALUES (%s, %s, 1, 0, 'noop')"
            ).format(q),
            (f"{job}-s1-t0", job),
        )
        claimed = conn.execute(
            sql.SQL("SELECT task_id, attempt FROM {}.claim_tasks(%s, 'w')").format(q),
            ([f"{job}-s1-t0"],),
        ).fetchall()
        assert claimed == [(f"{job}-s1-t0", 1)]
        done = conn.execute(
            sql.SQL(
                "SELECT applied, is_last_task FROM"
                " {}.complete_task_and_check_stage(%s, 1, 'completed', '{{}}')"
            ).format(q),
            (f"{job}-s1-t0",),
        ).fetchone()
        assert done == (True, True)
        moved = conn.execute(
            sql.SQL(
                "SELECT advanced, status FROM"
                " {}.advance_job_stage(%s, 1, 'completed', '{{}}', 'completed')"
            ).format(q),
            (job,),
        ).fetchone()
        assert moved == (True, "completed")
        in_custom = conn.execute(sql.SQL("SELECT status FROM {}.jobs").format(q)).fetchall()
        in_default = conn.execute("SELECT count(*) FROM lightsout.jobs").fetchone()
    assert in_custom == [("completed",)]
    assert in_default == (0,)

    assert migrate(empty_database_url, custom, target=0) == []
    assert tables(empty_database_url, custom) == {"schema_migrations"}
    assert tables(empty_database_url, SCHEMA) == TABLES
