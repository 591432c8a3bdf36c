"""Retention: a purge deletes exactly the finished jobs it names, while other jobs run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from repositories.db import SchemaPool, open_pool
from repositories.jobs import JobRepository
from repositories.retention import RetentionRepository
from repositories.tasks import TaskRepository
from schemas.ids import JobId, make_task_id
from schemas.records import Purged
from schemas.settings import load_settings
from schemas.status import JobStatus, TaskStatus
from schemas.work import NewTask, TaskEnd
from tests.integration.test_repositories import SCHEMA, job_id, stage_result

TASKS = 3
DSN: list[str] = []


@pytest.fixture
def pool(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SchemaPool]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("LIGHTSOUT_SCHEMA", SCHEMA)
    DSN[:] = [database_url]
    with open_pool(load_settings()) as pool:
        yield pool


@pytest.fixture
def jobs(pool: SchemaPool) -> JobRepository:
    return JobRepository(pool)


@pytest.fixture
def tasks(pool: SchemaPool) -> TaskRepository:
    return TaskRepository(pool)


def started(jobs: JobRepository, tasks: TaskRepository, label: str) -> JobId:
    """A one-stage job whose tasks are claimed and running."""
    job = job_id(label)
    assert jobs.submit(job, "demo", {"label": label}, ["s1"])
    tasks.start_stage(job, 1, [NewTask("s1")] * TASKS)
    assert len(tasks.claim([make_task_id(job, 1, i) for i in range(TASKS)], "w")) == TASKS
    return job


def complete(tasks: TaskRepository, job: JobId) -> None:
    ids = [make_task_id(job, 1, i) for i in range(TASKS)]
    tasks.end_many([TaskEnd(t, 1, TaskStatus.COMPLETED, result={}) for t in ids])


def finished(
    jobs: JobRepository, tasks: TaskRepository, label: str, status: JobStatus, days_ago: float
) -> JobId:
    job = started(jobs, tasks, label)
    complete(tasks, job)
    if status is JobStatus.FAILED:
        assert jobs.fail(job, {"message": "failed for the test"}, "test", "test")
    else:
        assert jobs.advance(job, stage_result(1), status, {}).advanced
    sql(
        "UPDATE jobs SET finished_at = now() - %s, created_at = now() - %s WHERE job_id = %s",
        timedelta(days=days_ago),
        timedelta(days=days_ago + 1),
        job,
    )
    return job


def sql(query: str, *params: object) -> list[dict[str, object]]:
    with psycopg.connect(DSN[0], autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def counts(job: JobId) -> tuple[int, int, int, int]:
    row = sql(
        "SELECT (SELECT count(*) FROM jobs WHERE job_id = %(j)s) AS jobs,"
        " (SELECT count(*) FROM job_stages WHERE job_id = %(j)s) AS stages,"
        " (SELECT count(*) FROM tasks WHERE job_id = %(j)s) AS tasks,"
        " (SELECT count(*) FROM job_events WHERE job_id = %(j)s) AS events".replace("%(j)s", "%s"),
        job,
        job,
        job,
        job,
    )[0]
    return (
        int(str(row["jobs"])),
        int(str(row["stages"])),
        int(str(row["tasks"])),
        int(str(row["events"])),
    )


def test_a_purge_removes_exactly_the_old_finished_jobs_while_others_run(
    jobs: JobRepository, tasks: TaskRepository, pool: SchemaPool
) -> None:
    retention = RetentionRepository(pool)
    old_done = finished(jobs, tasks, "old-done", JobStatus.COMPLETED, 40)
    old_failed = finished(jobs, tasks, "old-failed", JobStatus.FAILED, 40)
    recent = finished(jobs, tasks, "recent", JobStatus.COMPLETED, 1)
    running = started(jobs, tasks, "running")
    sql("UPDATE jobs SET created_at = now() - interval '50 days' WHERE job_id = %s", running)
    rerun = finished(jobs, tasks, "rerun-of-old", JobStatus.COMPLETED, 1)
    sql("UPDATE jobs SET rerun_of = %s WHERE job_id = %s", old_done, rerun)
    assert counts(old_done)[0:3] == (1, 1, TASKS) and counts(old_done)[3] > 0

    # The running job's tasks complete while the purge runs.
    finisher = threading.Thread(target=complete, args=(tasks, running))
    finisher.start()
    cutoff = datetime.now(UTC) - timedelta(days=30)
    purged = retention.purge(cutoff, None, max_jobs=100, max_tasks=1000)
    finisher.join()

    assert purged == Purged(jobs=2, tasks=2 * TASKS)
    assert counts(old_done) == (0, 0, 0, 0)
    assert counts(old_failed) == (0, 0, 0, 0)
    for kept in (recent, running, rerun):
        assert counts(kept)[0:3] == (1, 1, TASKS)
    assert sql("SELECT rerun_of FROM jobs WHERE job_id = %s", rerun) == [{"rerun_of": None}]
    assert sql(
        "SELECT count(*) AS n FROM tasks WHERE job_id = %s AND status = 'completed'", running
    ) == [{"n": TASKS}]
    assert retention.purge(cutoff, None, 100, 1000) == Purged(jobs=0, tasks=0)


def test_a_purge_keeps_to_its_statuses_and_its_batch(
    jobs: JobRepository, tasks: TaskRepository, pool: SchemaPool
) -> None:
    retention = RetentionRepository(pool)
    done = [finished(jobs, tasks, f"done-{n}", JobStatus.COMPLETED, 40 + n) for n in range(3)]
    failed = finished(jobs, tasks, "failed", JobStatus.FAILED, 45)
    cutoff = datetime.now(UTC) - timedelta(days=30)

    assert retention.purge(cutoff, [JobStatus.FAILED], 100, 1000) == Purged(jobs=1, tasks=TASKS)
    assert counts(failed)[0] == 0 and all(counts(j)[0] == 1 for j in done)
    # Past the first job, a batch stops before it would exceed max_tasks: 3 + 3 > 4.
    assert retention.purge(cutoff, None, 100, 4) == Purged(jobs=1, tasks=TASKS)
    assert counts(done[2])[0] == 0  # the oldest went first
    assert retention.purge(cutoff, None, 1, 1000) == Purged(jobs=1, tasks=TASKS)
    assert retention.purge(cutoff, None, 100, 1000) == Purged(jobs=1, tasks=TASKS)
    assert [counts(j)[0] for j in done] == [0, 0, 0]
