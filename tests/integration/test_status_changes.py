"""Every status change any stored procedure makes is one schemas/status.py declares.

A trigger logs each status change of a job, stage or task row with the procedure that made
it; every status-writing procedure is driven from every source status, and the log is
checked against the transition tables. A procedure that writes a status and is not driven
here fails test_every_status_writing_procedure_is_driven, so none can slip past.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from schemas.status import JobStatus, StageStatus, TaskStatus, can_recover, can_transition
from tests.integration.test_procedures import (
    ERROR,
    SCENARIOS,
    SCHEMA,
    Conn,
    advance,
    connect,
    job_of,
    put_task_in,
    run_step,
    submit,
    task,
)

pytestmark = pytest.mark.integration
KINDS: dict[str, type[JobStatus] | type[StageStatus] | type[TaskStatus]] = {
    "jobs": JobStatus,
    "job_stages": StageStatus,
    "tasks": TaskStatus,
}
# The procedures that write a status column, and so are driven below.
DRIVEN = {
    "claim_tasks",
    "finish_task",
    "complete_tasks_and_check_stage",
    "retry_task",
    "reap_task",
    "stop_job",
    "retry_job",
    "start_stage",
    "advance_job_stage",
}
# An UPDATE's SET list: from SET to its FROM, WHERE, RETURNING or the statement's end.
SET_LIST = re.compile(
    r"\bUPDATE\s+\w+(?:\s+\w+)?\s+SET\b(.*?)(?=\bFROM\b|\bWHERE\b|\bRETURNING\b|;|\$\$|\Z)",
    re.I | re.S,
)


def writes_status(source: str) -> bool:
    """Return whether a procedure body assigns a status column in some UPDATE."""
    return any(re.search(r"\bstatus\s*=", m.group(1)) for m in SET_LIST.finditer(source))


LOG_SETUP = """
CREATE TABLE status_log (proc text, tbl text, from_status text, to_status text);
CREATE FUNCTION log_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO status_log VALUES (current_setting('lightsout.proc', true), TG_TABLE_NAME,
                                       OLD.status, NEW.status);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_log AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION log_status();
CREATE TRIGGER stages_log AFTER UPDATE ON job_stages FOR EACH ROW EXECUTE FUNCTION log_status();
CREATE TRIGGER tasks_log AFTER UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION log_status();
"""


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as conn:
        conn.execute(LOG_SETUP)
        yield conn


def as_proc(conn: Conn, proc: str, sql: str, *params: object) -> None:
    """Run `sql` with the status changes it makes logged under `proc`."""
    conn.execute("SELECT set_config('lightsout.proc', %s, false)", (proc,))
    # A refused call must change nothing; the log shows whether it did.
    with contextlib.suppress(psycopg.Error):
        conn.execute(sql, params)
    conn.execute("SELECT set_config('lightsout.proc', 'setup', false)")


TaskOperation = Callable[[Conn, str], None]


def claim(conn: Conn, task_id: str) -> None:
    as_proc(conn, "claim_tasks", "SELECT * FROM claim_tasks(%s, 'w')", [task_id])


def complete(conn: Conn, task_id: str) -> None:
    attempt = task(conn, task_id)["attempt"]
    sql = "SELECT * FROM complete_task_and_check_stage(%s, %s, 'completed', '{}')"
    as_proc(conn, "finish_task", sql, task_id, attempt)


def end_in_batch(conn: Conn, task_id: str) -> None:
    attempt = task(conn, task_id)["attempt"]
    sql = (
        "SELECT * FROM complete_tasks_and_check_stage"
        "(ARRAY[%s, %s], ARRAY[%s, %s], ARRAY['failed', 'completed'], ARRAY[NULL, '{}']::jsonb[],"
        " ARRAY[%s, NULL]::jsonb[])"
    )
    params = (task_id, task_id, attempt, attempt, Jsonb(ERROR))
    as_proc(conn, "complete_tasks_and_check_stage", sql, *params)


def fail(conn: Conn, task_id: str) -> None:
    attempt = task(conn, task_id)["attempt"]
    sql = "SELECT * FROM complete_task_and_check_stage(%s, %s, 'failed', NULL, %s)"
    as_proc(conn, "finish_task", sql, task_id, attempt, Jsonb(ERROR))


def fail_unclaimed(conn: Conn, task_id: str) -> None:
    sql = "SELECT * FROM fail_task_and_check_stage(%s, %s, 'poison', 'test')"
    as_proc(conn, "finish_task", sql, task_id, Jsonb(ERROR))


def retry(conn: Conn, task_id: str) -> None:
    attempt = task(conn, task_id)["attempt"]
    sql = "SELECT retry_task(%s, %s, %s, interval '0')"
    as_proc(conn, "retry_task", sql, task_id, attempt, Jsonb(ERROR))


def reap(conn: Conn, task_id: str) -> None:
    conn.execute(
        "UPDATE tasks SET heartbeat_at = now() - interval '1 hour' WHERE task_id = %s"
        " AND heartbeat_at IS NOT NULL",
        (task_id,),
    )
    sql = "SELECT * FROM reap_task(%s, interval '1 minute', interval '0')"
    as_proc(conn, "reap_task", sql, task_id)


def cancel(conn: Conn, task_id: str) -> None:
    as_proc(conn, "stop_job", "SELECT * FROM cancel_job(%s, 'op', 'test')", job_of(task_id))


def fail_job(conn: Conn, task_id: str) -> None:
    sql = "SELECT * FROM fail_job(%s, %s, 'janitor', 'test')"
    as_proc(conn, "stop_job", sql, job_of(task_id), Jsonb(ERROR))


def fail_stage_and_retry_job(conn: Conn, task_id: str) -> None:
    job = job_of(task_id)
    conn.execute("SELECT set_config('lightsout.proc', 'advance_job_stage', false)")
    if task(conn, task_id)["status"] == "failed":
        advance(conn, job, 1, "failed", "failed")
    as_proc(conn, "retry_job", "SELECT * FROM retry_job(%s, 2, 'op')", job)


def outbox(conn: Conn, task_id: str) -> None:
    # Marking, sweeping and reopening move no status; the log proves it.
    as_proc(conn, "mark_tasks_dispatched", "SELECT mark_tasks_dispatched(%s)", [task_id])
    conn.execute(
        "UPDATE tasks SET dispatched_at = now() - interval '1 hour' WHERE task_id = %s",
        (task_id,),
    )
    as_proc(
        conn,
        "reopen_lost_messages",
        "SELECT * FROM reopen_lost_messages(interval '0', now(), now(), 10, 10)",
    )
    as_proc(
        conn,
        "sweep_unsent_tasks",
        "SELECT * FROM sweep_unsent_tasks(interval '0', 10, 'h', interval '1 minute')",
    )
    as_proc(conn, "sweep_unsent_jobs", "SELECT * FROM sweep_unsent_jobs(interval '0', 10)")
    as_proc(conn, "heartbeat_tasks", "SELECT heartbeat_tasks(%s, 'w')", [task_id])


TASK_OPERATIONS: dict[str, TaskOperation] = {
    "claim": claim,
    "complete": complete,
    "end_in_batch": end_in_batch,
    "fail": fail,
    "fail_unclaimed": fail_unclaimed,
    "retry": retry,
    "reap": reap,
    "cancel": cancel,
    "fail_job": fail_job,
    "retry_job": fail_stage_and_retry_job,
    "outbox": outbox,
}


def undeclared(conn: Conn) -> list[tuple[str, str, str, str]]:
    """Return the logged changes the transition tables do not declare."""
    bad = []
    for row in conn.execute("SELECT * FROM status_log").fetchall():
        kind = KINDS[row["tbl"]]
        before, after = kind(row["from_status"]), kind(row["to_status"])
        recovery = row["proc"] == "retry_job" and can_recover(before, after)  # type: ignore[type-var]
        if not (can_transition(before, after) or recovery):  # type: ignore[type-var]
            bad.append((row["proc"], row["tbl"], before.value, after.value))
    return bad


@pytest.mark.parametrize("source", list(TaskStatus))
@pytest.mark.parametrize("operation", list(TASK_OPERATIONS))
def test_task_procedures_make_only_declared_changes(
    conn: Conn, source: TaskStatus, operation: str
) -> None:
    task_id = put_task_in(conn, f"changes-{source}-{operation}", source)
    TASK_OPERATIONS[operation](conn, task_id)
    TASK_OPERATIONS[operation](conn, task_id)  # and once more, from where it left it
    assert undeclared(conn) == []


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_job_and_stage_procedures_make_only_declared_changes(conn: Conn, scenario: str) -> None:
    job = submit(conn, f"changes-{scenario}")
    for step in SCENARIOS[scenario]:
        conn.execute("SELECT set_config('lightsout.proc', %s, false)", (step,))
        with contextlib.suppress(psycopg.Error):
            run_step(conn, job, step)
    assert undeclared(conn) == []


def test_the_log_sees_changes(conn: Conn) -> None:
    task_id = put_task_in(conn, "changes-seen", TaskStatus.PROCESSING)
    complete(conn, task_id)
    logged = conn.execute("SELECT proc, tbl, from_status, to_status FROM status_log").fetchall()
    assert {
        "proc": "finish_task",
        "tbl": "tasks",
        "from_status": "processing",
        "to_status": "completed",
    } in logged


def test_every_status_writing_procedure_is_driven(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s",
        (SCHEMA,),
    ).fetchall()
    writers = {r["proname"] for r in rows if writes_status(r["prosrc"])}
    assert writers - {"log_status"} <= DRIVEN, "drive the new procedure in TASK_OPERATIONS"
    assert writers >= DRIVEN, "a driven procedure no longer writes a status: update DRIVEN"
