"""Tasks in PostgreSQL: bulk creation, claims, completion (the fan-in), retries."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import timedelta

from psycopg.types.json import Jsonb

from repositories.db import Connection, SchemaPool
from repositories.errors import parse_json, parse_row, translated
from repositories.groupcommit import GroupCommit
from repositories.paging import decode_cursor, encode_cursor
from schemas.exceptions import NotFound, TransactionConflict
from schemas.ids import JobId, TaskId, make_task_id
from schemas.records import (
    Claim,
    Completion,
    DeferredTask,
    Json,
    ResultPage,
    TaskError,
    TaskRecord,
    TaskRef,
)
from schemas.status import TaskStatus
from schemas.work import NewTask, Page, TaskEnd

CONFLICT_RETRIES = 3
# One JSON array of [task_index, result] pairs: parsed and checked in one pass, not per row.
RESULTS_PAGE = (
    "SELECT coalesce(json_agg(json_build_array(task_index, result) ORDER BY task_index),"
    " '[]')::text AS page FROM (SELECT task_index, result FROM tasks"
    " WHERE job_id = %s AND stage = %s AND status = 'completed' AND task_index > %s"
    " ORDER BY task_index LIMIT %s) AS p"
)
COPY_TASKS = (
    "COPY tasks (task_id, job_id, stage, task_index, task_type, parameters, max_attempts)"
    " FROM STDIN"
)


def _copy_tasks(
    conn: Connection, job_id: JobId, stage: int, tasks: Sequence[NewTask], start: int, stop: int
) -> None:
    """COPY the rows of tasks[start:stop], each at its position in the stage."""
    with conn.cursor().copy(COPY_TASKS) as copy:
        for index in range(start, stop):
            task = tasks[index]
            copy.write_row(
                (
                    make_task_id(job_id, stage, index),
                    job_id,
                    stage,
                    index,
                    task.task_type,
                    json.dumps(task.parameters),
                    task.max_attempts,
                )
            )


class TaskRepository:
    def __init__(self, pool: SchemaPool) -> None:
        self._pool = pool
        self._group = GroupCommit(self._end_batch)

    def start_stage(
        self, job_id: JobId, stage: int, tasks: Sequence[NewTask], created: int | None = None
    ) -> bool:
        """Start the stage with its task rows in one transaction; False if already started.

        With `created`, only the first `created` tasks are created now, the rest later by
        create_rest (sql/0011): the first ones can be claimed before the rest are written.
        """
        first = len(tasks) if created is None else created
        with (
            translated("start stage", job_id=job_id, stage=stage),
            self._pool.begun(
                "SELECT start_stage_in_parts(%s, %s, %s, %s) AS started",
                (job_id, stage, len(tasks), first),
            ) as (conn, rows),
        ):
            if not (rows and rows[0]["started"]):
                return False
            _copy_tasks(conn, job_id, stage, tasks, 0, first)
        return True

    def create_rest(self, job_id: JobId, stage: int, tasks: Sequence[NewTask]) -> int:
        """Create the started stage's uncreated tasks, as `tasks` has them; return how many.

        0 when none is left to create (another process did, or the stage ended). Raises if
        the stage was started with another number of tasks than `tasks` has.
        """
        with (
            translated("create stage tasks", job_id=job_id, stage=stage),
            self._pool.begun(
                "SELECT create_rest_of_stage(%s, %s, %s) AS first", (job_id, stage, len(tasks))
            ) as (conn, rows),
        ):
            first = rows[0]["first"] if rows else None
            if not isinstance(first, int):
                return 0
            _copy_tasks(conn, job_id, stage, tasks, first, len(tasks))
        return len(tasks) - first

    def hold_if_paused(self, job_id: JobId, task_ids: Sequence[TaskId]) -> bool:
        """Hold the unclaimed tasks while the job's type is paused; return whether it is."""
        with translated("check pause", job_id=job_id):
            row = self._pool.one_row(
                "SELECT hold_tasks_if_paused(%s, %s) AS held", (job_id, list(task_ids))
            )
        return bool(row and row["held"])

    def report_progress(self, task_id: TaskId, attempt: int, fraction: float, message: str) -> bool:
        """Record how far the running attempt is; False when it no longer holds the task."""
        with translated("report progress", task_id=task_id):
            row = self._pool.one_row(
                "SELECT report_task_progress(%s, %s, %s, %s) AS applied",
                (task_id, attempt, fraction, message),
            )
        return bool(row and row["applied"])

    def claim(self, task_ids: Sequence[TaskId], worker: str) -> list[Claim]:
        """Claim each task for its next attempt; tasks another delivery holds are left out."""
        with translated("claim tasks", worker=worker):
            rows = self._pool.one_trip(
                "SELECT * FROM claim_tasks(%s, %s) ORDER BY task_index", (list(task_ids), worker)
            )
        return [parse_row(Claim, row) for row in rows]

    def complete(self, task_id: TaskId, attempt: int, result: Json) -> Completion:
        """Mark the claimed attempt completed and count it off its stage."""
        return self._end(task_id, attempt, TaskStatus.COMPLETED, result, None)

    def fail(self, task_id: TaskId, attempt: int, error: TaskError) -> Completion:
        """Mark the claimed attempt failed for good and count it off its stage."""
        return self._end(task_id, attempt, TaskStatus.FAILED, None, error)

    def _end(
        self,
        task_id: TaskId,
        attempt: int,
        status: TaskStatus,
        result: Json | None,
        error: TaskError | None,
    ) -> Completion:
        with translated("complete task", task_id=task_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM complete_task_and_check_stage(%s, %s, %s, %s, %s)",
                (
                    task_id,
                    attempt,
                    status.value,
                    Jsonb(result) if result is not None else None,
                    Jsonb(error.model_dump(mode="json")) if error else None,
                ),
            ).fetchone()
        return parse_row(Completion, row)

    def end_many(self, ends: Sequence[TaskEnd]) -> list[Completion]:
        """Record claimed attempts' ends, each fenced on its own; one Completion per end.

        Concurrent callers are group-committed: their ends go in one transaction.
        """
        return self._group(ends) if ends else []

    def _end_batch(self, ends: Sequence[TaskEnd]) -> list[Completion]:
        # Rows are locked in task_id order everywhere, so merged batches cannot deadlock.
        order = sorted(range(len(ends)), key=lambda i: ends[i].task_id)
        ordered = [ends[i] for i in order]
        columns = (
            [f.task_id for f in ordered],
            [f.attempt for f in ordered],
            [f.status.value for f in ordered],
            [Jsonb(f.result) if f.result is not None else None for f in ordered],
            [Jsonb(f.error.model_dump(mode="json")) if f.error else None for f in ordered],
        )
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with translated("complete tasks", tasks=len(ends)):
                    rows = self._pool.one_trip(
                        "SELECT * FROM complete_tasks_and_check_stage"
                        "(%s, %s, %s, %s::jsonb[], %s::jsonb[])",
                        columns,
                    )
                completions: list[Completion | None] = [None] * len(ends)
                for position, row in zip(order, rows, strict=True):
                    completions[position] = parse_row(Completion, row)
                return [c for c in completions if c is not None]
            except TransactionConflict:
                # The whole transaction rolled back, so running it again is safe.
                if attempt == CONFLICT_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def fail_unclaimed(
        self, task_id: TaskId, error: TaskError, actor: str, reason: str
    ) -> Completion:
        """Fail a task whatever attempt holds it (poison message, janitor)."""
        with translated("fail task", task_id=task_id), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT * FROM fail_task_and_check_stage(%s, %s, %s, %s)",
                (task_id, Jsonb(error.model_dump(mode="json")), actor, reason),
            ).fetchone()
        return parse_row(Completion, row)

    def retry(self, task_id: TaskId, attempt: int, error: TaskError, delay: timedelta) -> bool:
        """Move the claimed attempt to retrying; its message is re-sent after `delay`."""
        with translated("retry task", task_id=task_id):
            row = self._pool.one_row(
                "SELECT retry_task(%s, %s, %s, %s) AS retried",
                (task_id, attempt, Jsonb(error.model_dump(mode="json")), delay),
            )
        return bool(row and row["retried"])

    def heartbeat(self, task_ids: Sequence[TaskId], worker: str) -> int:
        """Refresh the lease of running tasks this worker holds; return how many it holds."""
        with translated("heartbeat", worker=worker):
            row = self._pool.one_row(
                "SELECT heartbeat_tasks(%s, %s) AS held", (list(task_ids), worker)
            )
        held = row["held"] if row else 0
        return held if isinstance(held, int) else 0

    def mark_dispatched(self, task_ids: Sequence[TaskId]) -> None:
        """Record that the messages naming these tasks were sent (the outbox marker)."""
        with translated("mark tasks dispatched"):
            self._pool.one_trip("SELECT mark_tasks_dispatched(%s)", (list(task_ids),))

    def deferred(self, task_ids: Sequence[TaskId]) -> list[DeferredTask]:
        """Return those of the tasks that wait for their retry's backoff, with the delay left."""
        with translated("deferred tasks"):
            rows = self._pool.one_trip("SELECT * FROM deferred_tasks(%s)", (list(task_ids),))
        return [parse_row(DeferredTask, row) for row in rows]

    def undispatched(self, job_id: JobId, stage: int) -> list[TaskId]:
        """Return the stage's queued or retrying tasks whose message was never sent."""
        with translated("undispatched tasks", job_id=job_id):
            rows = self._pool.one_trip(
                "SELECT task_id FROM tasks WHERE job_id = %s AND stage = %s"
                " AND dispatched_at IS NULL AND status IN ('queued', 'retrying')"
                " ORDER BY task_index",
                (job_id, stage),
            )
        return [parse_row(TaskRef, row).task_id for row in rows]

    def get(self, task_id: TaskId) -> TaskRecord:
        """Return one task, or raise NotFound."""
        with translated("get task", task_id=task_id):
            row = self._pool.one_row("SELECT * FROM tasks WHERE task_id = %s", (task_id,))
        if row is None:
            raise NotFound("task not found", task_id=task_id)
        return parse_row(TaskRecord, row)

    def find(
        self,
        job_id: JobId,
        stage: int | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[TaskRecord]:
        """Return the job's tasks in (stage, index) order, filtered, one page at a time."""
        after = decode_cursor(cursor, int, int)
        query = (
            "SELECT * FROM tasks WHERE job_id = %(job)s"
            " AND (%(stage)s::integer IS NULL OR stage = %(stage)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(s)s::integer IS NULL OR (stage, task_index) > (%(s)s, %(i)s))"
            " ORDER BY stage, task_index LIMIT %(limit)s"
        )
        params = {
            "job": job_id,
            "stage": stage,
            "status": status.value if status else None,
            "s": int(after[0]) if after else None,
            "i": int(after[1]) if after else None,
            "limit": limit + 1,
        }
        with translated("list tasks", job_id=job_id), self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        tasks = [parse_row(TaskRecord, row) for row in rows[:limit]]
        more = len(rows) > limit
        last = tasks[-1] if tasks else None
        return Page(tasks, encode_cursor(last.stage, last.task_index) if more and last else None)

    def results(
        self, job_id: JobId, stage: int, page_size: int = 5000
    ) -> Iterator[list[tuple[int, Json | None]]]:
        """Yield (task_index, result) of the stage's completed tasks, a page at a time."""
        last = -1
        while True:
            with translated("read results", job_id=job_id):
                row = self._pool.one_row(RESULTS_PAGE, (job_id, stage, last, page_size))
            text = row["page"] if row else "[]"
            page = parse_json(ResultPage, str(text), "a page of results", job_id=job_id)
            if not page:
                return
            yield page
            last = page[-1][0]
