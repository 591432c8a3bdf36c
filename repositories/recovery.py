"""The janitor's and the operator's repairs: each one a guarded procedure in sql/0002."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from psycopg_pool import ConnectionPool

from repositories.db import Connection
from repositories.errors import translated
from schemas.ids import JobId, TaskId


@dataclass(frozen=True)
class Reaped:
    """What reap_task did: 'none' (the task was alive after all), 'retried' or 'failed'."""

    task_id: TaskId
    job_id: JobId
    stage: int
    action: str
    is_last_task: bool


@dataclass(frozen=True)
class Unsent:
    task_id: TaskId
    job_id: JobId
    stage: int
    delay: timedelta


class RecoveryRepository:
    def __init__(self, pool: ConnectionPool[Connection]) -> None:
        self._pool = pool

    def expired_tasks(self, lease: timedelta, limit: int = 500) -> list[tuple[TaskId, JobId, int]]:
        """Return running tasks whose heartbeat is older than `lease`."""
        with translated("find expired tasks"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT task_id, job_id, stage FROM tasks WHERE status = 'processing'"
                " AND heartbeat_at < now() - %s"
                # A paused job type's tasks wait for the resume, however long (sql/0004).
                " AND NOT EXISTS (SELECT 1 FROM jobs j JOIN job_type_pauses p USING (job_type)"
                " WHERE j.job_id = tasks.job_id)"
                " ORDER BY heartbeat_at LIMIT %s",
                (lease, limit),
            ).fetchall()
        return [
            (TaskId(str(r["task_id"])), JobId(str(r["job_id"])), int(str(r["stage"]))) for r in rows
        ]

    def reap(
        self, task_id: TaskId, job_id: JobId, stage: int, lease: timedelta, delay: timedelta
    ) -> Reaped:
        """Retry or fail a task whose worker is gone, if it still is."""
        with translated("reap task", task_id=task_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM reap_task(%s, %s, %s)", (task_id, lease, delay)
            ).fetchone()
        assert row is not None
        return Reaped(task_id, job_id, stage, str(row["action"]), bool(row["is_last_task"]))

    def claim_unsent_tasks(self, grace: timedelta, limit: int = 5000) -> list[Unsent]:
        """Mark and return tasks whose message was never sent; the caller sends them."""
        with translated("sweep tasks"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM claim_unsent_tasks(%s, %s)", (grace, limit)
            ).fetchall()
        return [
            Unsent(
                TaskId(str(r["task_id"])),
                JobId(str(r["job_id"])),
                int(str(r["stage"])),
                timedelta(seconds=float(str(r["delay_s"]))),
            )
            for r in rows
        ]

    def claim_unsent_jobs(self, grace: timedelta, limit: int = 500) -> list[tuple[JobId, int]]:
        """Mark and return jobs whose stage message was never sent; the caller sends them."""
        with translated("sweep jobs"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM claim_unsent_jobs(%s, %s)", (grace, limit)
            ).fetchall()
        return [(JobId(str(r["job_id"])), int(str(r["stage"]))) for r in rows]

    def reopen_idle(self, idle: timedelta) -> tuple[int, int]:
        """Mark messages sent longer than `idle` ago, with nothing come of them, as unsent."""
        with translated("reopen idle messages"), self._pool.connection() as conn:
            row = conn.execute("SELECT * FROM reopen_idle_messages(%s)", (idle,)).fetchone()
        assert row is not None
        return int(str(row["tasks"])), int(str(row["jobs"]))

    def retry_job(self, job_id: JobId, attempts: int, actor: str) -> tuple[bool, int, int]:
        """Re-queue the failed tasks of a failed job's failed stage: (retried, stage, tasks)."""
        with translated("retry job", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM retry_job(%s, %s, %s)", (job_id, attempts, actor)
            ).fetchone()
        assert row is not None
        return bool(row["retried"]), int(str(row["stage"])), int(str(row["task_count"]))

    def record_repair(self, job_id: JobId, stage: int | None, reason: str) -> None:
        """Append a janitor repair to the job's history."""
        with translated("record repair", job_id=job_id), self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO job_events (job_id, stage, kind, actor, reason)"
                " VALUES (%s, %s, 'repair', 'janitor', %s)",
                (job_id, stage, reason),
            )

    def unknown_type_jobs(self, known: list[str], limit: int = 100) -> list[JobId]:
        """Return unfinished jobs whose job type this deployment does not know."""
        with translated("find unknown job types"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id FROM jobs WHERE status IN ('queued', 'processing')"
                " AND NOT (job_type = ANY (%s)) LIMIT %s",
                (known, limit),
            ).fetchall()
        return [JobId(str(r["job_id"])) for r in rows]
