"""The operator's reads and actions in PostgreSQL: history, pauses, evidence, workers."""

from __future__ import annotations

from datetime import timedelta

from psycopg_pool import ConnectionPool

from repositories.db import Connection
from repositories.errors import parse_row, translated
from repositories.paging import Page, decode_cursor, encode_cursor
from schemas.ids import JobId
from schemas.operator import (
    ExpiredClaim,
    JanitorAction,
    JobStage,
    JobState,
    JobTypePause,
    Outbox,
    PoisonNote,
    Resumed,
    ScheduledRetry,
    SentMessage,
    StageCounters,
    StageRunning,
    StatusChange,
    StatusCount,
    WorkerView,
)
from schemas.records import JobEvent
from schemas.status import JobStatus, TaskStatus

EVIDENCE_ROWS = 20
OPEN_TASKS = ("queued", "processing", "retrying")

SILENT_CLAIMS = """
    SELECT task_id, stage, claimed_by AS worker, attempt, max_attempts, heartbeat_at,
           extract(epoch FROM now() - heartbeat_at)::float8 AS silent_s
      FROM tasks WHERE job_id = %s AND status = 'processing'
       AND heartbeat_at < now() - %s AND heartbeat_at >= now() - %s
     ORDER BY heartbeat_at, task_id LIMIT %s"""
SCHEDULED_RETRIES = """
    SELECT task_id, stage, attempt, next_attempt_at, error ->> 'message' AS error
      FROM tasks WHERE job_id = %s AND status = 'retrying'
     ORDER BY next_attempt_at NULLS LAST, task_id LIMIT %s"""
POISON_NOTES = """
    SELECT p.poison_id, p.queue_name, p.reason, p.task_ids, p.received_at, p.replayed_at,
           (SELECT count(*) FROM tasks t WHERE t.task_id = ANY (p.task_ids)
               AND t.status IN ('queued', 'processing', 'retrying'))::integer AS open_tasks
      FROM poison_messages p WHERE p.job_id = %s ORDER BY p.poison_id DESC LIMIT %s"""
# Unsent rows and rows held by a pause, of the job and of its current stage's tasks.
OUTBOX = """
    SELECT (j.dispatched_at IS NULL AND j.status IN ('queued', 'processing'))::integer
             + (SELECT count(*) FROM tasks t WHERE t.job_id = j.job_id
                   AND t.dispatched_at IS NULL AND t.status IN ('queued', 'retrying'))::integer
             AS unsent,
           coalesce(j.dispatched_at = pause_hold(), false)::integer
             + (SELECT count(*) FROM tasks t WHERE t.job_id = j.job_id
                   AND t.dispatched_at = pause_hold()
                   AND t.status IN ('queued', 'retrying'))::integer
             AS held
      FROM jobs j WHERE j.job_id = %s"""
# The oldest message of the current stage sent and not acted on: the stage message while the
# stage is pending, else the oldest queued task message.
WAITING = """
    SELECT 'job' AS kind, j.dispatched_at AS sent_at, 1 AS count
      FROM jobs j JOIN job_stages s ON s.job_id = j.job_id AND s.stage = j.stage
     WHERE j.job_id = %(job)s AND s.status = 'pending' AND j.status IN ('queued', 'processing')
       AND j.dispatched_at < pause_hold()
    UNION ALL
    SELECT 'task', min(t.dispatched_at), count(*)::integer
      FROM tasks t JOIN jobs j ON j.job_id = t.job_id AND t.stage = j.stage
     WHERE t.job_id = %(job)s AND t.status = 'queued' AND t.dispatched_at < pause_hold()
    HAVING count(*) > 0
     LIMIT 1"""
LAST_JANITOR_ACTION = """
    SELECT event_id, stage, task_id, kind, reason, created_at FROM job_events
     WHERE job_id = %s AND actor = 'janitor' ORDER BY event_id DESC LIMIT 1"""
# Every running task (its worker may be dead) and every task claimed lately.
WORKERS = """
    WITH seen AS (
        SELECT task_id, claimed_by, job_id, status, heartbeat_at, claimed_at FROM tasks
         WHERE status = 'processing'
        UNION
        SELECT task_id, claimed_by, job_id, status, heartbeat_at, claimed_at FROM tasks
         WHERE claimed_at > now() - %(since)s
    )
    SELECT claimed_by AS worker,
           max(heartbeat_at) FILTER (WHERE status = 'processing') AS last_heartbeat_at,
           max(claimed_at) AS last_claim_at,
           count(*) FILTER (WHERE status = 'processing')::integer AS tasks_in_hand,
           (array_agg(DISTINCT job_id))[1:%(jobs)s] AS jobs
      FROM seen WHERE claimed_by IS NOT NULL
     GROUP BY claimed_by ORDER BY claimed_by"""


class OperatorRepository:
    def __init__(self, pool: ConnectionPool[Connection]) -> None:
        self._pool = pool

    def events(self, job_id: JobId, limit: int = 100, cursor: str | None = None) -> Page[JobEvent]:
        """Return the job's history oldest first, one page at a time."""
        after = decode_cursor(cursor, int)
        with translated("list events", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM job_events WHERE job_id = %s AND event_id > %s"
                " ORDER BY event_id LIMIT %s",
                (job_id, int(after[0]) if after else 0, limit + 1),
            ).fetchall()
        events = [parse_row(JobEvent, row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(events, encode_cursor(events[-1].event_id) if more else None)

    def pause(self, job_type: str, actor: str, reason: str | None) -> tuple[bool, JobTypePause]:
        """Pause the job type; return (paused by this call, the pause)."""
        with translated("pause job type", job_type=job_type), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT paused_now, paused_by, paused_at FROM pause_job_type(%s, %s, %s)",
                (job_type, actor, reason),
            ).fetchone()
        assert row is not None
        return bool(row["paused_now"]), parse_row(JobTypePause, {**row, "job_type": job_type})

    def resume(self, job_type: str, actor: str) -> Resumed:
        """Lift the pause and release the rows it held back."""
        with translated("resume job type", job_type=job_type), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM resume_job_type(%s, %s)", (job_type, actor)
            ).fetchone()
        return parse_row(Resumed, row)

    def pauses(self) -> dict[str, JobTypePause]:
        """Return the paused job types."""
        with translated("list pauses"), self._pool.connection() as conn:
            rows = conn.execute("SELECT * FROM job_type_pauses ORDER BY job_type").fetchall()
        pauses = [parse_row(JobTypePause, row) for row in rows]
        return {p.job_type: p for p in pauses}

    def unsent_of_type(self, job_type: str) -> tuple[list[JobStage], list[JobStage]]:
        """Return the (job, stage) of the type's unsent stage messages and unsent tasks."""
        with translated("find unsent", job_type=job_type), self._pool.connection() as conn:
            jobs = conn.execute(
                "SELECT job_id, stage FROM jobs WHERE job_type = %s AND dispatched_at IS NULL"
                " AND status IN ('queued', 'processing') ORDER BY job_id",
                (job_type,),
            ).fetchall()
            tasks = conn.execute(
                "SELECT DISTINCT t.job_id, t.stage FROM tasks t JOIN jobs j USING (job_id)"
                " WHERE j.job_type = %s AND j.status = 'processing' AND t.dispatched_at IS NULL"
                " AND t.status IN ('queued', 'retrying') ORDER BY 1, 2",
                (job_type,),
            ).fetchall()
        return [parse_row(JobStage, r) for r in jobs], [parse_row(JobStage, r) for r in tasks]

    def matching_jobs(
        self, job_type: str | None, status: JobStatus | None, after: str = "", limit: int = 500
    ) -> list[JobState]:
        """Return the jobs matching the filters after job id `after`, in id order."""
        with translated("match jobs"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, status FROM jobs"
                " WHERE (%(type)s::text IS NULL OR job_type = %(type)s)"
                " AND (%(status)s::text IS NULL OR status = %(status)s) AND job_id > %(after)s"
                " ORDER BY job_id LIMIT %(limit)s",
                {
                    "type": job_type,
                    "status": status.value if status else None,
                    "after": after,
                    "limit": limit,
                },
            ).fetchall()
        return [parse_row(JobState, r) for r in rows]

    def running_progress(self, job_id: JobId) -> dict[int, float]:
        """Return per stage the summed progress of the job's running attempts."""
        # tasks_running_by_stage: reads the running tasks only, never the whole stage.
        with translated("read progress", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT stage, coalesce(sum(progress) FILTER"
                " (WHERE progress_attempt = attempt), 0)::float8 AS done"
                " FROM tasks WHERE job_id = %s AND status = 'processing' GROUP BY stage",
                (job_id,),
            ).fetchall()
        sums = [parse_row(StageRunning, row) for row in rows]
        return {s.stage: s.done for s in sums}

    def workers(self, since: timedelta, jobs_per_worker: int = 20) -> list[WorkerView]:
        """Return the workers holding tasks or that claimed one within `since`."""
        with translated("list workers"), self._pool.connection() as conn:
            rows = conn.execute(WORKERS, {"since": since, "jobs": jobs_per_worker}).fetchall()
        return [parse_row(WorkerView, row) for row in rows]

    def stage_counters(self, job_id: JobId) -> list[StageCounters]:
        with translated("read stages", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM job_stages WHERE job_id = %s ORDER BY stage", (job_id,)
            ).fetchall()
        return [parse_row(StageCounters, row) for row in rows]

    def tasks_by_status(self, job_id: JobId) -> dict[TaskStatus, int]:
        with translated("count tasks", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT status, count(*)::integer AS n FROM tasks WHERE job_id = %s"
                " GROUP BY status",
                (job_id,),
            ).fetchall()
        counts = [parse_row(StatusCount, row) for row in rows]
        return {c.status: c.n for c in counts}

    def outbox(self, job_id: JobId) -> tuple[int, int]:
        """Return (unsent, held by a pause) message rows of the job."""
        with translated("read outbox", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(OUTBOX, (job_id,)).fetchone()
        outbox = parse_row(Outbox, row) if row else Outbox(unsent=0, held=0)
        return outbox.unsent, outbox.held

    def waiting_since(self, job_id: JobId) -> SentMessage | None:
        with translated("read sent messages", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(WAITING, {"job": job_id}).fetchone()
        return parse_row(SentMessage, row) if row else None

    def silent_claims(
        self, job_id: JobId, silent_for: timedelta, at_most: timedelta | None = None
    ) -> list[ExpiredClaim]:
        """Return running tasks whose worker has been silent for `silent_for` (up to `at_most`)."""
        longest = at_most if at_most is not None else timedelta(days=36500)
        with translated("read claims", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                SILENT_CLAIMS, (job_id, silent_for, longest, EVIDENCE_ROWS)
            ).fetchall()
        return [parse_row(ExpiredClaim, row) for row in rows]

    def scheduled_retries(self, job_id: JobId) -> list[ScheduledRetry]:
        with translated("read retries", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(SCHEDULED_RETRIES, (job_id, EVIDENCE_ROWS)).fetchall()
        return [parse_row(ScheduledRetry, row) for row in rows]

    def poison_of(self, job_id: JobId) -> list[PoisonNote]:
        with translated("read poison", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(POISON_NOTES, (job_id, EVIDENCE_ROWS)).fetchall()
        return [parse_row(PoisonNote, row) for row in rows]

    def ended_by(self, job_id: JobId, status: JobStatus) -> StatusChange | None:
        """Return the event that moved the job to `status`, the latest one."""
        with translated("read status change", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT actor, reason, created_at FROM job_events WHERE job_id = %s"
                " AND kind = 'job_status' AND to_status = %s ORDER BY event_id DESC LIMIT 1",
                (job_id, status.value),
            ).fetchone()
        return parse_row(StatusChange, row) if row else None

    def last_janitor_action(self, job_id: JobId) -> JanitorAction | None:
        with translated("read janitor events", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(LAST_JANITOR_ACTION, (job_id,)).fetchone()
        return parse_row(JanitorAction, row) if row else None
