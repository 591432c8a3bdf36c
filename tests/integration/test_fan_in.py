"""Fan-in under real concurrency (DESIGN invariants 4 and 5): exactly one last task per stage,
no task completed twice, and the job advanced exactly once, with workers racing on PostgreSQL."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[dict[str, Any]]
SCHEMA = "lightsout"
WORKERS = 8
EXTRA_ADVANCERS = 3


@dataclass(frozen=True)
class Outcome:
    task_id: str
    applied: bool
    is_last: bool


@dataclass(frozen=True)
class Advanced:
    job_id: str
    advanced: bool
    stage: int


def connect(dsn: str) -> Conn:
    conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
    conn.execute(f"SET search_path TO {SCHEMA}")
    return conn


@pytest.fixture
def conns(database_url: str) -> Iterator[list[Conn]]:
    """One connection per racing thread: the workers, then the extra advancers."""
    opened = [connect(database_url) for _ in range(WORKERS + EXTRA_ADVANCERS + 1)]
    yield opened
    for conn in opened:
        conn.close()


def create_stage(conn: Conn, label: str, tasks: int) -> tuple[str, dict[str, int]]:
    """Submit a two-stage job, start stage 1 with `tasks` tasks, claim them all."""
    job = hashlib.sha256(label.encode()).hexdigest()
    with conn.transaction():
        conn.execute("SELECT submit_job(%s, 'fan_in', '{}', ARRAY['fan', 'after'])", (job,))
        conn.execute("SELECT start_stage(%s, 1, %s)", (job, tasks))
        conn.execute(
            "INSERT INTO tasks (task_id, job_id, stage, task_index, task_type)"
            " SELECT %(job)s || '-s1-t' || i, %(job)s, 1, i, 'noop'"
            " FROM generate_series(0, %(n)s - 1) AS i",
            {"job": job, "n": tasks},
        )
    ids = [f"{job}-s1-t{i}" for i in range(tasks)]
    rows = conn.execute("SELECT task_id, attempt FROM claim_tasks(%s, 'setup')", (ids,)).fetchall()
    attempts = {str(r["task_id"]): int(r["attempt"]) for r in rows}
    assert len(attempts) == tasks
    return job, attempts


def complete(conn: Conn, task_id: str, attempt: int) -> Outcome:
    row = conn.execute(
        "SELECT applied, is_last_task FROM complete_task_and_check_stage(%s, %s, 'completed', %s)",
        (task_id, attempt, Jsonb({"t": task_id[-8:]})),
    ).fetchone()
    assert row is not None
    return Outcome(task_id, bool(row["applied"]), bool(row["is_last_task"]))


def advance(conn: Conn, job: str) -> Advanced:
    row = conn.execute(
        "SELECT advanced, stage FROM advance_job_stage(%s, 1, 'completed', '{}')", (job,)
    ).fetchone()
    assert row is not None
    return Advanced(job, bool(row["advanced"]), int(row["stage"]))


def advance_when_ready(conn: Conn, job: str, deadline: float) -> Advanced:
    """Keep calling advance until the stage has no task left (a racing janitor would)."""
    while True:
        try:
            return advance(conn, job)
        except pg_errors.ObjectNotInPrerequisiteState:
            assert time.monotonic() < deadline, "stage never drained"
            time.sleep(0.01)


@dataclass
class Race:
    outcomes: list[Outcome]
    advances: list[Advanced]


def race(conns: list[Conn], work: list[tuple[str, int]], extra_jobs: list[str]) -> Race:
    """Complete `work` from WORKERS threads at once; whoever sees "last" advances the job;
    extra threads race to advance each job in `extra_jobs` too."""
    barrier = threading.Barrier(WORKERS + len(extra_jobs))
    deadline = time.monotonic() + 120

    def worker(n: int) -> tuple[list[Outcome], list[Advanced]]:
        conn = conns[n]
        outcomes: list[Outcome] = []
        advances: list[Advanced] = []
        barrier.wait()
        for task_id, attempt in work[n::WORKERS]:
            outcome = complete(conn, task_id, attempt)
            outcomes.append(outcome)
            if outcome.is_last:
                advances.append(advance(conn, task_id[:64]))
        return outcomes, advances

    def extra(n: int, job: str) -> tuple[list[Outcome], list[Advanced]]:
        barrier.wait()
        return [], [advance_when_ready(conns[WORKERS + n], job, deadline)]

    with ThreadPoolExecutor(WORKERS + len(extra_jobs)) as pool:
        futures = [pool.submit(worker, n) for n in range(WORKERS)]
        futures += [pool.submit(extra, n, job) for n, job in enumerate(extra_jobs)]
        results = [f.result() for f in futures]
    return Race(
        [o for outcomes, _ in results for o in outcomes],
        [a for _, advances in results for a in advances],
    )


def check_stage(conn: Conn, job: str, tasks: int) -> None:
    stage = conn.execute(
        "SELECT remaining, completed_count, failed_count, task_count FROM job_stages"
        " WHERE job_id = %s AND stage = 1",
        (job,),
    ).fetchone()
    assert stage == {
        "remaining": 0,
        "completed_count": tasks,
        "failed_count": 0,
        "task_count": tasks,
    }
    done = conn.execute(
        "SELECT count(*) AS n FROM tasks WHERE job_id = %s AND stage = 1 AND status = 'completed'"
        " AND result IS NOT NULL AND finished_at IS NOT NULL",
        (job,),
    ).fetchone()
    assert done == {"n": tasks}


def check_advanced_once(conn: Conn, job: str, advances: list[Advanced]) -> None:
    mine = [a for a in advances if a.job_id == job]
    assert [a.advanced for a in mine].count(True) == 1, mine
    assert {a.stage for a in mine} == {2}
    moved = conn.execute(
        "SELECT count(*) AS n FROM job_events WHERE job_id = %s AND kind = 'stage_status'"
        " AND stage = 1 AND to_status = 'completed'",
        (job,),
    ).fetchone()
    assert moved == {"n": 1}
    job_row = conn.execute(
        "SELECT status, stage, stage_results ? '1' AS has_result FROM jobs WHERE job_id = %s",
        (job,),
    ).fetchone()
    assert job_row == {"status": "processing", "stage": 2, "has_result": True}
    per_task = conn.execute(
        "SELECT count(*) AS n FROM job_events WHERE job_id = %s AND task_id IS NOT NULL", (job,)
    ).fetchone()
    assert per_task == {"n": 0}


@pytest.mark.parametrize("duplicates", [False, True], ids=["once", "delivered twice"])
def test_one_stage_of_1000_tasks_races_to_exactly_one_last(
    conns: list[Conn], duplicates: bool
) -> None:
    rounds, tasks = (20, 1000) if not duplicates else (6, 1000)
    setup = conns[-1]
    for round_ in range(rounds):
        job, attempts = create_stage(setup, f"fan-in-{duplicates}-{round_}", tasks)
        work = list(attempts.items()) * (2 if duplicates else 1)
        random.Random(round_).shuffle(work)
        result = race(conns, work, [job] * EXTRA_ADVANCERS)

        assert len(result.outcomes) == len(work)
        assert [o.is_last for o in result.outcomes].count(True) == 1, f"round {round_}"
        applied = Counter(o.task_id for o in result.outcomes if o.applied)
        assert set(applied) == set(attempts) and set(applied.values()) == {1}
        assert len(result.advances) == 1 + EXTRA_ADVANCERS
        check_stage(setup, job, tasks)
        check_advanced_once(setup, job, result.advances)


def test_50_jobs_of_200_tasks_interleaved(conns: list[Conn]) -> None:
    setup = conns[-1]
    jobs: dict[str, dict[str, int]] = {}
    for n in range(50):
        job, attempts = create_stage(setup, f"interleaved-{n}", 200)
        jobs[job] = attempts
    work = [item for attempts in jobs.values() for item in attempts.items()]
    random.Random(50).shuffle(work)
    result = race(conns, work, list(jobs)[:EXTRA_ADVANCERS])

    lasts = Counter(o.task_id[:64] for o in result.outcomes if o.is_last)
    assert lasts == dict.fromkeys(jobs, 1)
    assert all(o.applied for o in result.outcomes)
    for job in jobs:
        check_stage(setup, job, 200)
        check_advanced_once(setup, job, result.advances)
