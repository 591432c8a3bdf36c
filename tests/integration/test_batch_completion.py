"""complete_tasks_and_check_stage (0009, set-based) answers as one finish_task per task did.

The same random sequence of batches runs against a schema at migration 0008 (the batch
function calling finish_task once per element, in order) and one at the newest; every
answer row, every task and stage row and every event must be the same.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lightsout.devservices import PostgresService
from repositories.migrations import migrate
from tests.fixtures_services import scratch_database
from tests.integration.test_procedures import Conn, claim, new_job_id, start, submit

OLD, NEW = "batch_v8", "batch_new"
JOBS, TASKS = 2, 4

# (job, task index, attempt, status) of one end; failed ends carry an error.
end = st.tuples(
    st.integers(0, JOBS - 1),
    st.integers(0, TASKS - 1),
    st.integers(1, 2),
    st.sampled_from(["completed", "failed"]),
)
batches = st.lists(st.lists(end, min_size=1, max_size=6), min_size=1, max_size=5)
claimed = st.lists(st.booleans(), min_size=JOBS * TASKS, max_size=JOBS * TASKS)


@pytest.fixture(scope="module")
def schemas(pg_service: PostgresService) -> Iterator[tuple[Conn, Conn]]:
    """One connection to a schema at 0008 and one to a schema at the newest migration."""
    for dsn in scratch_database(pg_service.dsn, "template0"):
        migrate(dsn, OLD, 8)
        migrate(dsn, NEW)
        with (
            psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as old,
            psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as new,
        ):
            for conn, schema in ((old, OLD), (new, NEW)):
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            yield old, new


def prepare(conn: Conn, label: str, claims: list[bool]) -> list[list[str]]:
    """JOBS jobs with stage 1 started; the tasks `claims` marks are claimed once."""
    ids = []
    for j in range(JOBS):
        job = submit(conn, f"{label}-{j}", stages=1)
        ids.append(start(conn, job, 1, TASKS))
    chosen = [
        t for j, tasks in enumerate(ids) for i, t in enumerate(tasks) if claims[j * TASKS + i]
    ]
    claim(conn, chosen)
    return ids


def run(conn: Conn, ids: list[list[str]], batch: list[tuple[int, int, int, str]]) -> list[Any]:
    rows = conn.execute(
        "SELECT * FROM complete_tasks_and_check_stage(%s, %s, %s, %s::jsonb[], %s::jsonb[])",
        (
            [ids[j][i] for j, i, _, _ in batch],
            [attempt for _, _, attempt, _ in batch],
            [status for _, _, _, status in batch],
            [Jsonb({"n": n}) for n in range(len(batch))],
            [
                Jsonb({"message": f"e{n}"}) if s == "failed" else None
                for n, (*_, s) in enumerate(batch)
            ],
        ),
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def state(conn: Conn, label: str) -> list[Any]:
    jobs = [new_job_id(f"{label}-{j}") for j in range(JOBS)]
    tasks = conn.execute(
        "SELECT task_id, status, result, error, attempt, finished_at IS NOT NULL AS done"
        " FROM tasks WHERE job_id = ANY (%s) ORDER BY task_id",
        (jobs,),
    ).fetchall()
    stages = conn.execute(
        "SELECT job_id, stage, status, task_count, remaining, completed_count, failed_count"
        " FROM job_stages WHERE job_id = ANY (%s) ORDER BY job_id, stage",
        (jobs,),
    ).fetchall()
    events = conn.execute(
        "SELECT task_id, kind, from_status, to_status, actor, reason, detail FROM job_events"
        " WHERE job_id = ANY (%s) AND kind = 'task_failed' ORDER BY event_id",
        (jobs,),
    ).fetchall()
    return [tasks, stages, events]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(claims=claimed, sequence=batches)
def test_batches_answer_as_one_finish_task_per_element_did(
    schemas: tuple[Conn, Conn], claims: list[bool], sequence: list[list[tuple[int, int, int, str]]]
) -> None:
    old, new = schemas
    label = f"batch-{secrets.token_hex(6)}"
    old_ids, new_ids = prepare(old, label, claims), prepare(new, label, claims)
    assert old_ids == new_ids
    for batch in sequence:
        assert run(new, new_ids, batch) == run(old, old_ids, batch), batch
    assert state(new, label) == state(old, label)


def test_exactly_one_end_is_last_when_a_batch_ends_a_stage(schemas: tuple[Conn, Conn]) -> None:
    _, new = schemas
    ids = prepare(new, f"last-{secrets.token_hex(6)}", [True] * (JOBS * TASKS))
    # Both jobs' stages end in one batch, with a stale attempt and a repeat mixed in.
    batch = [(j, i, 1, "completed") for j in range(JOBS) for i in range(TASKS)]
    batch[1:1] = [(0, 0, 1, "completed"), (1, 2, 2, "completed")]
    rows = run(new, ids, batch)
    lasts = [r[0] for r in rows if r[2]]
    assert lasts == [ids[0][TASKS - 1], ids[1][TASKS - 1]]
    assert [r[1] for r in rows].count(True) == JOBS * TASKS
