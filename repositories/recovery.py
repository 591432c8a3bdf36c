"""The janitor's and the operator's repairs: each one a guarded procedure in sql/."""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg_pool import ConnectionPool

from repositories.db import Connection
from repositories.errors import parse_row, translated
from schemas.ids import JobId, TaskId
from schemas.records import ExpiredTask, JobRetried, Reaped, Reopened, StageRef, UnsentTask


class RecoveryRepository:
    def __init__(self, pool: ConnectionPool[Connection]) -> None:
        self._pool = pool

    def expired_tasks(self, lease: timedelta, limit: int = 500) -> list[ExpiredTask]:
        """Return running tasks whose heartbeat is older than `lease`."""
        with translated("find expired tasks"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT task_id, job_id, stage, attempt FROM tasks WHERE status = 'processing'"
                " AND heartbeat_at < now() - %s"
                # A paused job type's tasks wait for the resume, however long (sql/0004).
                " AND NOT EXISTS (SELECT 1 FROM jobs j JOIN job_type_pauses p USING (job_type)"
                " WHERE j.job_id = tasks.job_id)"
                " ORDER BY heartbeat_at LIMIT %s",
                (lease, limit),
            ).fetchall()
        return [parse_row(ExpiredTask, row) for row in rows]

    def reap(self, task_id: TaskId, lease: timedelta, delay: timedelta) -> Reaped:
        """Retry or fail a task whose worker is gone, if it still is."""
        with translated("reap task", task_id=task_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM reap_task(%s, %s, %s)", (task_id, lease, delay)
            ).fetchone()
        return parse_row(Reaped, row)

    def sweep_unsent_tasks(
        self, grace: timedelta, holder: str, lease: timedelta, limit: int = 5000
    ) -> list[UnsentTask]:
        """Return tasks whose message was never sent, of stages no live dispatcher holds.

        Their stages' dispatch leases pass to `holder`; the caller sends, marks, releases.
        """
        with translated("sweep tasks"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM sweep_unsent_tasks(%s, %s, %s, %s)", (grace, limit, holder, lease)
            ).fetchall()
        return [parse_row(UnsentTask, row) for row in rows]

    def sweep_unsent_jobs(self, grace: timedelta, limit: int = 500) -> list[StageRef]:
        """Return jobs whose stage message was never sent; the caller sends and marks them."""
        with translated("sweep jobs"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM sweep_unsent_jobs(%s, %s)", (grace, limit)
            ).fetchall()
        return [parse_row(StageRef, row) for row in rows]

    def reopen_lost(
        self,
        idle: timedelta,
        tasks_sent_before: datetime,
        jobs_sent_before: datetime,
        limit: int,
        per_stage: int,
    ) -> Reopened:
        """Mark as unsent the messages provably lost (see sql/0003 reopen_lost_messages)."""
        with translated("reopen lost messages"), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM reopen_lost_messages(%s, %s, %s, %s, %s)",
                (idle, tasks_sent_before, jobs_sent_before, limit, per_stage),
            ).fetchone()
        return parse_row(Reopened, row)

    def retry_job(self, job_id: JobId, attempts: int, actor: str) -> JobRetried:
        """Re-queue the failed tasks of a failed job's failed stage."""
        with translated("retry job", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM retry_job(%s, %s, %s)", (job_id, attempts, actor)
            ).fetchone()
        return parse_row(JobRetried, row)

    def record_repair(self, job_id: JobId, stage: int | None, reason: str) -> None:
        """Append a janitor repair to the job's history."""
        with translated("record repair", job_id=job_id), self._pool.connection() as conn:
            conn.execute("SELECT record_repair(%s, %s, %s)", (job_id, stage, reason))

    def unknown_type_jobs(self, known: list[str], limit: int = 100) -> list[StageRef]:
        """Return unfinished jobs (at their stage) whose job type this deployment lacks."""
        with translated("find unknown job types"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, stage FROM jobs WHERE status IN ('queued', 'processing')"
                " AND NOT (job_type = ANY (%s)) LIMIT %s",
                (known, limit),
            ).fetchall()
        return [parse_row(StageRef, row) for row in rows]
