"""Statements that name tasks by id look them up by key on a table of mostly finished tasks.

After ANALYZE of a long history the statistics say no task is queued or running, so the
planner takes the partial indexes on those statuses for empty and would scan one whole
(every unclaimed task of a running stage) instead of looking the ids up in tasks_pkey
(issue 9, migration 0006). The plans checked are the ones the procedures really run: the
session loads auto_explain, which reports each nested statement's plan as a LOG message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bench.workloads import load_history
from tests.integration.test_procedures import SCHEMA, Conn, claim, new_stage

HISTORY_JOBS = 4
HISTORY_TASKS_PER_JOB = 10_000
STAGE_TASKS = 2_000
# Finished stages of 100 tasks before the first ANALYZE: where the planner began to scan.
GROWING_STAGES = 20
# The partial indexes whose predicates a by-id statement's status test could prove.
STATUS_INDEXES = (
    "tasks_dispatched_waiting",
    "tasks_undispatched",
    "tasks_running_by_heartbeat",
    "tasks_running_by_stage",
)


@pytest.fixture
def history_conn(database_url: str) -> Iterator[Conn]:
    """A connection to a database holding finished jobs, analyzed, then one running stage."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.execute(
            "INSERT INTO jobs (job_id, job_type, status, stage, total_stages, finished_at)"
            " SELECT encode(sha256(('history' || j)::bytea), 'hex'), 'demo', 'completed', 1, 1,"
            " now() FROM generate_series(1, %s) j",
            (HISTORY_JOBS,),
        )
        conn.execute(
            "INSERT INTO job_stages (job_id, stage, name, status, task_count, completed_count,"
            " started_at, finished_at) SELECT job_id, 1, 'stage1', 'completed', %s, %s, now(),"
            " now() FROM jobs",
            (HISTORY_TASKS_PER_JOB, HISTORY_TASKS_PER_JOB),
        )
        conn.execute(
            "INSERT INTO tasks (task_id, job_id, stage, task_index, task_type, status, result,"
            " attempt, claimed_by, claimed_at, dispatched_at, finished_at)"
            " SELECT j.job_id || '-s1-t' || i, j.job_id, 1, i, 'noop', 'completed', '{}', 1,"
            " 'history', now(), now(), now() FROM jobs j CROSS JOIN generate_series(0, %s - 1) i",
            (HISTORY_TASKS_PER_JOB,),
        )
        conn.execute("VACUUM ANALYZE tasks")
        yield conn


def plans_of(conn: Conn, call: str, params: tuple[Any, ...]) -> list[str]:
    """Run `call` with auto_explain on; return the plans of the statements it ran."""
    plans: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary and "plan:" in diag.message_primary:
            plans.append(diag.message_primary)

    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "client_min_messages = log",
    ):
        conn.execute(f"SET {setting}")
    conn.add_notice_handler(keep)
    try:
        conn.execute(call, params)
    finally:
        conn.remove_notice_handler(keep)
        conn.execute("RESET client_min_messages")
        conn.execute("SET auto_explain.log_min_duration = -1")
    return plans


def assert_by_key(plans: list[str], statement: str) -> None:
    """The plan of the nested statement containing `statement` reads tasks by tasks_pkey."""
    mine = [p for p in plans if statement in p]
    assert mine, f"no plan of {statement!r} among {len(plans)} plans"
    for plan in mine:
        assert "tasks_pkey" in plan, plan
        for index in STATUS_INDEXES:
            assert index not in plan, plan


def test_by_id_statements_use_the_primary_key_on_a_long_history(history_conn: Conn) -> None:
    tasks = new_stage(history_conn, "history-plans", STAGE_TASKS)

    for call, params, statement in by_id_calls(tasks):
        assert_by_key(plans_of(history_conn, call, params), statement)

    # The statements still did their work: the first 25 were claimed, then completed.
    assert sorted(claim(history_conn, tasks[:30])) == sorted(tasks[25:30])
    ends = tasks[:25]
    done = history_conn.execute(
        "SELECT count(*) AS n FROM tasks WHERE task_id = ANY (%s) AND status = 'completed'",
        (ends,),
    ).fetchone()
    assert done == {"n": 25}


def test_a_new_stage_is_not_scattered_over_the_historys_pages(database_url: str) -> None:
    # Finished rows are wider than new ones: with no space kept back on each page, the
    # free space map would hand out the history's slack a row at a time (migration 0007).
    # The history is loaded as the bench loads it (bench/workloads.py), smaller.
    load_history(database_url, 20_000, per_job=1_000)
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        last = conn.execute("SELECT max((ctid::text::point)[0])::bigint AS page FROM tasks")
        last_history_page = int(last.fetchone()["page"])  # type: ignore[index]
        new_stage(conn, "after the history", STAGE_TASKS)
        pages = conn.execute(
            "SELECT (ctid::text::point)[0]::bigint AS page FROM tasks WHERE status = 'queued'"
        ).fetchall()
    assert len(pages) == STAGE_TASKS
    # The last page, the load's unfinished one, may take some: the pages before it not.
    scattered = [r["page"] for r in pages if r["page"] < last_history_page]
    assert scattered == [], f"{len(scattered)} new tasks on the history's pages"


def test_by_id_statements_use_the_primary_key_before_the_first_analyze(database_url: str) -> None:
    # A new deployment (and the bench's scratch database) grows its tasks table for minutes
    # before autovacuum first analyzes it; without statistics the planner hash-joined a
    # batch of ids against a scan of every task (migration 0010). A few thousand finished
    # tasks, never analyzed, as the engine leaves them: stages of 100 tasks, ended.
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = off)")
        for n in range(GROWING_STAGES):
            new_stage(conn, f"growing {n}", 100)
            conn.execute(
                "UPDATE tasks SET status = 'completed', result = '{\"attempt\": 1}', attempt = 1,"
                " claimed_by = 'w0', claimed_at = now(), finished_at = now()"
                " WHERE status = 'queued'"
            )
        analyzed = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'tasks'::regclass"
        ).fetchone()
        assert analyzed == {"reltuples": -1}  # never analyzed, as the test intends
        tasks = new_stage(conn, "running", 100)
        for call, params, statement in by_id_calls(tasks):
            plans = plans_of(conn, call, params)
            assert_by_key(plans, statement)
            scans = [p for p in plans if "Seq Scan on tasks" in p]
            assert scans == [], f"{call} scans every task"


def by_id_calls(tasks: list[str]) -> list[tuple[str, tuple[Any, ...], str]]:
    """Each by-id procedure of the task path, its arguments, and a text of its statement."""
    ends = tasks[:25]
    return [
        (
            "SELECT mark_tasks_dispatched(%s)",
            (tasks[:100],),
            "UPDATE tasks t SET dispatched_at = now()",
        ),
        ("SELECT * FROM claim_tasks(%s, 'w1')", (tasks[:25],), "WITH claimable AS"),
        (
            "SELECT heartbeat_tasks(%s, 'w1')",
            (tasks[:25],),
            "UPDATE tasks t SET heartbeat_at = now()",
        ),
        (
            "SELECT * FROM deferred_tasks(%s)",
            (tasks[25:50],),
            "extract(epoch FROM t.next_attempt_at - now())",
        ),
        (
            "SELECT * FROM complete_tasks_and_check_stage(%s, %s, %s, %s::jsonb[], %s::jsonb[])",
            (ends, [1] * 25, ["completed"] * 25, ["{}"] * 25, [None] * 25),
            "WITH input AS",
        ),
    ]


def test_a_mark_of_a_dispatch_chunk_tests_no_task_against_the_whole_array(
    history_conn: Conn,
) -> None:
    # mark_tasks_dispatched names a whole dispatch chunk (up to 25,600 ids). A plan that
    # tests rows against the array (`task_id = ANY (...)` as an index recheck or a filter)
    # re-checks each row a concurrent claim changed element by element: a mark of 9,900
    # tasks took 7.9 s in a 10k x 2 run and held the claims waiting (migration 0010).
    tasks = new_stage(history_conn, "a dispatch chunk", STAGE_TASKS)
    plans = plans_of(history_conn, "SELECT mark_tasks_dispatched(%s)", (tasks,))
    (plan,) = [p for p in plans if "UPDATE tasks t SET dispatched_at" in p]
    tests = [line for line in plan.splitlines() if "Cond:" in line or "Filter:" in line]
    assert [line for line in tests if "task_id = ANY" in line] == [], plan
    assert "tasks_pkey" in plan
    marked = history_conn.execute(
        "SELECT count(*) AS n FROM tasks WHERE task_id = ANY (%s) AND dispatched_at IS NOT NULL",
        (tasks,),
    ).fetchone()
    assert marked == {"n": STAGE_TASKS}
