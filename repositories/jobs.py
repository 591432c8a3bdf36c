"""Jobs and their stages in PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from repositories.db import SchemaPool
from repositories.errors import parse_row, translated
from repositories.groupcommit import GroupCommit
from repositories.paging import decode_cursor, encode_cursor
from schemas.exceptions import NotFound
from schemas.ids import JobId
from schemas.records import Advance, Cancelled, JobEvent, JobRecord, Json, StageRecord, StageRef
from schemas.results import StageResultContract
from schemas.status import JobStatus
from schemas.work import NewJob, Page

# Submissions merged into one transaction at most (GroupCommit): enough for 16 callers
# and more, small enough that one statement stays short.
MAX_SUBMITS_PER_COMMIT = 64
# One submit_job per job, in job id order (the order `_submit_batch` sorts them into):
# two merged batches that name the same jobs take their locks in the same order. The jobs
# come as one JSON array: one document to bind, where six arrays were bound element by
# element in this process (a submission's largest share of psycopg's time).
SUBMIT_MANY = (
    "SELECT u.n, submit_job(u.j->>'job_id', u.j->>'job_type', u.j->'parameters',"
    " ARRAY(SELECT jsonb_array_elements_text(u.j->'stages')), u.j->>'rerun_of',"
    " u.j->>'actor') AS created"
    " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS u(j, n)"
)


class JobRepository:
    def __init__(self, pool: SchemaPool) -> None:
        self._pool = pool
        self._submits = GroupCommit(self._submit_batch, MAX_SUBMITS_PER_COMMIT)

    def submit(
        self,
        job_id: JobId,
        job_type: str,
        parameters: Json,
        stage_names: Sequence[str],
        rerun_of: JobId | None = None,
        actor: str = "api",
    ) -> bool:
        """Insert the job and its pending stages; return False when the job existed already.

        Concurrent callers are group-committed: their jobs go in one transaction, so the
        commit (and its WAL flush) is paid once for all of them. A caller whose job fails
        fails alone (GroupCommit writes each caller on its own then).
        """
        job = NewJob(job_id, job_type, parameters, stage_names, rerun_of, actor)
        return self._submits([job])[0]

    def _submit_batch(self, jobs: Sequence[NewJob]) -> list[bool]:
        order = sorted(range(len(jobs)), key=lambda i: jobs[i].job_id)
        document = [
            {
                "job_id": jobs[i].job_id,
                "job_type": jobs[i].job_type,
                "parameters": jobs[i].parameters,
                "stages": list(jobs[i].stage_names),
                "rerun_of": jobs[i].rerun_of,
                "actor": jobs[i].actor,
            }
            for i in order
        ]
        named = {"job_id": jobs[0].job_id} if len(jobs) == 1 else {"jobs": len(jobs)}
        with translated("submit job", **named):
            rows = self._pool.one_trip(f"{SUBMIT_MANY} ORDER BY u.n", (Jsonb(document),))
        created = [False] * len(jobs)
        for position, row in zip(order, rows, strict=True):
            created[position] = bool(row["created"])
        return created

    def get(self, job_id: JobId) -> JobRecord:
        """Return the job, or raise NotFound."""
        with translated("get job", job_id=job_id):
            row = self._pool.one_row("SELECT * FROM jobs WHERE job_id = %s", (job_id,))
        if row is None:
            raise NotFound("job not found", job_id=job_id)
        return parse_row(JobRecord, row)

    def find(
        self,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobRecord]:
        """Return jobs newest first, filtered, one page at a time."""
        after = decode_cursor(cursor, datetime.fromisoformat, str)
        query = (
            "SELECT * FROM jobs WHERE (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(job_type)s::text IS NULL OR job_type = %(job_type)s)"
            " AND (%(at)s::timestamptz IS NULL OR (created_at, job_id) < (%(at)s, %(id)s))"
            " ORDER BY created_at DESC, job_id DESC LIMIT %(limit)s"
        )
        params = {
            "status": status.value if status else None,
            "job_type": job_type,
            "at": after[0] if after else None,
            "id": after[1] if after else None,
            "limit": limit + 1,
        }
        with translated("list jobs"), self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        jobs = [parse_row(JobRecord, row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(jobs, encode_cursor(jobs[-1].created_at, jobs[-1].job_id) if more else None)

    def stages(self, job_id: JobId) -> list[StageRecord]:
        """Return the job's stage rows in order."""
        with translated("get stages", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM job_stages WHERE job_id = %s ORDER BY stage", (job_id,)
            ).fetchall()
        return [parse_row(StageRecord, row) for row in rows]

    def stage(self, job_id: JobId, stage: int) -> StageRecord:
        """Return one stage row, or raise NotFound."""
        with translated("get stage", job_id=job_id, stage=stage):
            row = self._pool.one_row(
                "SELECT * FROM job_stages WHERE job_id = %s AND stage = %s", (job_id, stage)
            )
        if row is None:
            raise NotFound("stage not found", job_id=job_id, stage=stage)
        return parse_row(StageRecord, row)

    def mark_dispatched(self, job_id: JobId, stage: int) -> None:
        """Record that the job message for `stage` was sent (the outbox marker)."""
        with translated("mark job dispatched", job_id=job_id):
            self._pool.one_trip("SELECT mark_job_dispatched(%s, %s)", (job_id, stage))

    def take_dispatch_lease(self, job_id: JobId, stage: int, holder: str, lease: timedelta) -> bool:
        """Hold (or renew) the right to send the stage's task messages; False if another does."""
        with translated("take dispatch lease", job_id=job_id, stage=stage):
            row = self._pool.one_row(
                "SELECT take_dispatch_lease(%s, %s, %s, %s) AS taken",
                (job_id, stage, holder, lease),
            )
        return bool(row and row["taken"])

    def release_dispatch_lease(self, job_id: JobId, stage: int, holder: str) -> None:
        """Give up the stage's dispatch lease, if `holder` has it."""
        with translated("release dispatch lease", job_id=job_id, stage=stage):
            self._pool.one_trip(
                "SELECT release_dispatch_lease(%s, %s, %s)", (job_id, stage, holder)
            )

    def hold_if_paused(self, job_id: JobId, stage: int) -> bool:
        """Hold the stage's start while the job's type is paused; return whether it is."""
        with translated("check pause", job_id=job_id):
            row = self._pool.one_row("SELECT hold_job_if_paused(%s, %s) AS held", (job_id, stage))
        return bool(row and row["held"])

    def mark_many_dispatched(self, job_ids: Sequence[JobId], stage: int) -> None:
        """Record that the job messages of `stage` were sent for these jobs, in one statement."""
        # The one procedure that sets a job's outbox marker, once per job; in job_id order,
        # the order every transaction locks job rows in.
        with translated("mark jobs dispatched", jobs=len(job_ids)):
            self._pool.one_trip(
                "SELECT count(*) FILTER (WHERE mark_job_dispatched(j, %s)) AS marked"
                " FROM unnest(%s::text[]) AS j",
                (stage, sorted(set(job_ids))),
            )

    def advance(
        self,
        job_id: JobId,
        stage_result: StageResultContract,
        job_status: JobStatus | None = None,
        result: Json | None = None,
        error: Json | None = None,
        actor: str = "engine",
    ) -> Advance:
        """Leave the stage of `stage_result`: next stage, or finish with `job_status`."""
        stage = stage_result.stage
        with translated("advance job", job_id=job_id, stage=stage):
            row = self._pool.one_row(
                "SELECT * FROM advance_job_stage(%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    job_id,
                    stage,
                    stage_result.status.value,
                    Jsonb(stage_result.model_dump(mode="json")),
                    job_status.value if job_status else None,
                    Jsonb(result) if result is not None else None,
                    Jsonb(error) if error is not None else None,
                    actor,
                ),
            )
        return parse_row(Advance, row)

    def cancel(self, job_id: JobId, actor: str, reason: str) -> tuple[bool, JobStatus]:
        """Cancel an unfinished job; return (cancelled now, status)."""
        with translated("cancel job", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM cancel_job(%s, %s, %s)", (job_id, actor, reason)
            ).fetchone()
        answer = parse_row(Cancelled, row)
        return answer.cancelled, answer.status

    def fail(
        self,
        job_id: JobId,
        error: Json,
        actor: str,
        reason: str,
        stage: int | None = None,
    ) -> bool:
        """Fail an unfinished job (only while at `stage`, if given); return whether this did."""
        with translated("fail job", job_id=job_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM fail_job(%s, %s, %s, %s, %s)",
                (job_id, Jsonb(error), actor, reason, stage),
            ).fetchone()
        return bool(row and row["failed"])

    def stalled_stages(self, older_than: timedelta, limit: int = 100) -> list[StageRef]:
        """Return (job, stage) whose tasks all ended but which did not advance for a while."""
        with translated("find stalled stages"), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT s.job_id, s.stage FROM job_stages s JOIN jobs j USING (job_id)"
                " WHERE s.status = 'processing' AND s.remaining = 0"
                " AND j.status = 'processing' AND j.stage = s.stage"
                " AND j.updated_at < now() - %s ORDER BY j.updated_at LIMIT %s",
                (older_than, limit),
            ).fetchall()
        return [parse_row(StageRef, row) for row in rows]

    def events(self, job_id: JobId) -> list[JobEvent]:
        """Return the job's history, oldest first."""
        with translated("get events", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM job_events WHERE job_id = %s ORDER BY event_id", (job_id,)
            ).fetchall()
        return [parse_row(JobEvent, row) for row in rows]
