"""In-memory JobStore, TaskStore, PoisonStore and MessageBus for fast engine tests.

The stores copy the semantics of the stored procedures in sql/ (claim compare-and-set,
fencing on the attempt, exactly one last task, advance only from the current stage,
stop_job, retry) and write the same job_events; tests/integration/test_engine_conformance.py
runs the engine cases against both, so a drift between them fails a test.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from azstorage import wire_size
from controllers.engine import Engine, parse_message
from controllers.ports import JobStore, MessageBus, PoisonStore, TaskStore
from repositories.paging import decode_cursor, encode_cursor
from schemas.exceptions import (
    Conflict,
    DatabaseError,
    MessageTooLarge,
    NotFound,
    QueueUnavailable,
)
from schemas.ids import JOB_ID_PATTERN, JobId, TaskId, make_task_id
from schemas.messages import MAX_MESSAGE_BYTES, JobQueueMessage, TaskQueueMessage
from schemas.records import (
    Advance,
    Claim,
    Completion,
    DeferredTask,
    JobEvent,
    JobRecord,
    Json,
    PoisonRecord,
    StageRecord,
    StageRef,
    TaskError,
    TaskRecord,
)
from schemas.results import StageResultContract
from schemas.status import JobStatus, StageStatus, TaskStatus
from schemas.work import NewTask, Page, TaskEnd

FINAL_STAGE = {StageStatus.COMPLETED, StageStatus.COMPLETED_WITH_ERRORS, StageStatus.FAILED}
FINAL_JOB = {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED}
OPEN_TASK = (TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.RETRYING)


def jsonb(value: Json | None) -> Json | None:
    """Return a fresh copy of a JSON object, as a jsonb column would store and return it."""
    return None if value is None else dict(json.loads(json.dumps(value, allow_nan=False)))


@dataclass
class JobRow:
    job_id: JobId
    job_type: str
    total_stages: int
    parameters: Json
    rerun_of: JobId | None
    created_at: datetime
    updated_at: datetime
    status: JobStatus = JobStatus.QUEUED
    stage: int = 1
    stage_results: Json = field(default_factory=dict)
    result: Json | None = None
    error: Json | None = None
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class StageRow:
    job_id: JobId
    stage: int
    name: str
    status: StageStatus = StageStatus.PENDING
    task_count: int = 0
    remaining: int = 0
    completed_count: int = 0
    failed_count: int = 0
    cancelled_count: int = 0
    uncreated: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dispatch_holder: str | None = None
    dispatch_lease_until: datetime | None = None


@dataclass
class TaskRow:
    task_id: TaskId
    job_id: JobId
    stage: int
    task_index: int
    task_type: str
    parameters: Json
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    status: TaskStatus = TaskStatus.QUEUED
    result: Json | None = None
    error: Json | None = None
    attempt: int = 0
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    heartbeat_at: datetime | None = None
    next_attempt_at: datetime | None = None
    dispatched_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = None
    progress_message: str | None = None
    progress_attempt: int | None = None
    progress_at: datetime | None = None


class FakeDatabase:
    """The rows the three fake stores share, behind one lock (the procedures' locks)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[JobId, JobRow] = {}
        self.stages: dict[tuple[JobId, int], StageRow] = {}
        self.tasks: dict[TaskId, TaskRow] = {}
        self.events: list[JobEvent] = []
        self.poison: list[PoisonRecord] = []
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        """Return a strictly increasing time, as separate transactions see now()."""
        self._last = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        return self._last

    def job(self, job_id: JobId, action: str) -> JobRow:
        if job_id not in self.jobs:
            raise NotFound(f"{action}: job {job_id} does not exist", job_id=job_id)
        return self.jobs[job_id]

    def event(
        self,
        job_id: JobId,
        kind: str,
        stage: int | None,
        change: tuple[str | None, str],
        actor: str = "engine",
        reason: str | None = None,
        detail: Json | None = None,
        task_id: TaskId | None = None,
    ) -> None:
        """Append a job_events row as the procedures write it."""
        before, after = (None if s is None else str(s) for s in change)
        row = JobEvent(
            event_id=len(self.events) + 1,
            job_id=job_id,
            stage=stage,
            task_id=task_id,
            kind=kind,
            from_status=before,
            to_status=after,
            actor=actor,
            reason=reason,
            detail=jsonb(detail),
            created_at=self.now(),
        )
        self.events.append(row)

    def stage_tasks(self, job_id: JobId, stage: int) -> list[TaskRow]:
        rows = [t for t in self.tasks.values() if t.job_id == job_id and t.stage == stage]
        return sorted(rows, key=lambda t: t.task_index)


class FakeJobStore:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    def submit(
        self,
        job_id: JobId,
        job_type: str,
        parameters: dict[str, Any],
        stage_names: Sequence[str],
        rerun_of: JobId | None = None,
        actor: str = "api",
    ) -> bool:
        if not stage_names:
            raise DatabaseError(f"submit job: job {job_id} of type {job_type} declares no stage")
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise DatabaseError("submit job: violates check constraint job_id_is_sha256")
        with self.db.lock:
            if job_id in self.db.jobs:
                return False
            now = self.db.now()
            self.db.jobs[job_id] = JobRow(
                job_id, job_type, len(stage_names), jsonb(parameters) or {}, rerun_of, now, now
            )
            for number, name in enumerate(stage_names, start=1):
                self.db.stages[job_id, number] = StageRow(job_id, number, name)
            detail = {"rerun_of": rerun_of} if rerun_of else None
            self.db.event(job_id, "job_status", None, (None, "queued"), actor, "submitted", detail)
            return True

    def get(self, job_id: JobId) -> JobRecord:
        with self.db.lock:
            if job_id not in self.db.jobs:
                raise NotFound("job not found", job_id=job_id)
            return JobRecord.model_validate(asdict(self.db.jobs[job_id]))

    def stages(self, job_id: JobId) -> list[StageRecord]:
        with self.db.lock:
            rows = [s for (job, _), s in sorted(self.db.stages.items()) if job == job_id]
            return [StageRecord.model_validate(asdict(s)) for s in rows]

    def stage(self, job_id: JobId, stage: int) -> StageRecord:
        with self.db.lock:
            if (job_id, stage) not in self.db.stages:
                raise NotFound("stage not found", job_id=job_id, stage=stage)
            return StageRecord.model_validate(asdict(self.db.stages[job_id, stage]))

    def hold_if_paused(self, job_id: JobId, stage: int) -> bool:
        return False  # the fakes know no pauses (tests/integration test them)

    def mark_dispatched(self, job_id: JobId, stage: int) -> None:
        with self.db.lock:
            job = self.db.jobs.get(job_id)
            if job is not None and job.stage == stage:
                job.dispatched_at = self.db.now()

    def take_dispatch_lease(self, job_id: JobId, stage: int, holder: str, lease: timedelta) -> bool:
        with self.db.lock:
            row, now = self.db.stages.get((job_id, stage)), self.db.now()
            if row is None or row.status not in (StageStatus.PENDING, StageStatus.PROCESSING):
                return False
            until = row.dispatch_lease_until
            if row.dispatch_holder not in (None, holder) and until is not None and until >= now:
                return False
            row.dispatch_holder, row.dispatch_lease_until = holder, now + lease
            return True

    def release_dispatch_lease(self, job_id: JobId, stage: int, holder: str) -> None:
        with self.db.lock:
            row = self.db.stages.get((job_id, stage))
            if row is not None and row.dispatch_holder == holder:
                row.dispatch_holder = row.dispatch_lease_until = None

    def advance(
        self,
        job_id: JobId,
        stage_result: StageResultContract,
        job_status: JobStatus | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        actor: str = "engine",
    ) -> Advance:
        stage = stage_result.stage
        if stage_result.status not in FINAL_STAGE:
            raise DatabaseError(f"advance job: {stage_result.status} is not a final stage status")
        if job_status is not None and job_status not in FINAL_JOB:
            raise DatabaseError(f"advance job: {job_status} is not a final job status")
        with self.db.lock:
            job = self.db.job(job_id, "advance job")
            if job.status is not JobStatus.PROCESSING or job.stage != stage:
                return Advance(advanced=False, status=job.status, stage=job.stage)
            if job_status is None and stage >= job.total_stages:
                raise DatabaseError(f"advance job: stage {stage} is the last of job {job_id}")
            row = self.db.stages[job_id, stage]
            if row.status is not StageStatus.PROCESSING or row.remaining != 0:
                raise Conflict(
                    f"advance job: stage {stage} of job {job_id} is not processing with no"
                    " task remaining",
                    job_id=job_id,
                    stage=stage,
                )
            now = self.db.now()
            row.status, row.finished_at = StageStatus(stage_result.status), now
            job.stage = stage + 1 if job_status is None else stage
            job.status = job_status or JobStatus.PROCESSING
            job.stage_results = {**job.stage_results, str(stage): _contract_json(stage_result)}
            job.result, job.error = jsonb(result), jsonb(error)
            job.dispatched_at = None if job_status is None else job.dispatched_at
            job.finished_at = None if job_status is None else now
            job.updated_at = now
            self.db.event(job_id, "stage_status", stage, ("processing", row.status), actor)
            if job_status is JobStatus.FAILED:
                for later in range(stage + 1, job.total_stages + 1):
                    pending = self.db.stages[job_id, later]
                    if pending.status is StageStatus.PENDING:
                        pending.status, pending.finished_at = StageStatus.CANCELLED, now
                        change = ("pending", "cancelled")
                        why = f"stage {stage} failed"
                        self.db.event(job_id, "stage_status", later, change, actor, reason=why)
            if job_status is not None:
                change = ("processing", job_status)
                self.db.event(job_id, "job_status", stage, change, actor, detail=error)
            return Advance(advanced=True, status=job.status, stage=job.stage)

    def fail(
        self,
        job_id: JobId,
        error: dict[str, Any],
        actor: str,
        reason: str,
        stage: int | None = None,
    ) -> bool:
        return self._stop(job_id, JobStatus.FAILED, error, actor, reason, stage)[0]

    def cancel(self, job_id: JobId, actor: str, reason: str) -> tuple[bool, JobStatus]:
        return self._stop(job_id, JobStatus.CANCELLED, None, actor, reason)

    def _stop(
        self,
        job_id: JobId,
        status: JobStatus,
        error: Json | None,
        actor: str,
        reason: str,
        stage: int | None = None,
    ) -> tuple[bool, JobStatus]:
        """stop_job: cancel the open tasks, end the open stages, then the job."""
        with self.db.lock:
            job = self.db.job(job_id, "stop job")
            if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING):
                return False, job.status
            if stage is not None and job.stage != stage:
                return False, job.status
            now = self.db.now()
            for task in self.db.tasks.values():
                if task.job_id == job_id and task.status in OPEN_TASK:
                    task.status, task.finished_at, task.updated_at = TaskStatus.CANCELLED, now, now
                    task.heartbeat_at = None
                    counts = self.db.stages[job_id, task.stage]
                    counts.remaining -= 1
                    counts.cancelled_count += 1
            for number in range(1, job.total_stages + 1):
                row = self.db.stages[job_id, number]
                if row.status not in (StageStatus.PENDING, StageStatus.PROCESSING):
                    continue
                if row.status is StageStatus.PROCESSING:  # tasks never created count cancelled
                    row.remaining -= row.uncreated
                    row.cancelled_count += row.uncreated
                failed = status is JobStatus.FAILED and row.status is StageStatus.PROCESSING
                ended = (row.status, StageStatus.FAILED if failed else StageStatus.CANCELLED)
                row.status, row.finished_at = ended[1], now
                self.db.event(job_id, "stage_status", number, ended, actor, reason)
            change = (job.status, status)
            job.status, job.error, job.finished_at, job.updated_at = status, jsonb(error), now, now
            self.db.event(job_id, "job_status", job.stage, change, actor, reason, error)
            return True, status

    def stalled_stages(self, older_than: timedelta, limit: int = 100) -> list[StageRef]:
        with self.db.lock:
            cutoff = self.db.now() - older_than
            jobs = sorted(self.db.jobs.values(), key=lambda j: j.updated_at)
            return [
                StageRef(job_id=j.job_id, stage=j.stage)
                for j in jobs
                if j.status is JobStatus.PROCESSING
                and j.updated_at < cutoff
                and self.db.stages[j.job_id, j.stage].status is StageStatus.PROCESSING
                and self.db.stages[j.job_id, j.stage].remaining == 0
            ][:limit]

    def events(self, job_id: JobId) -> list[JobEvent]:
        with self.db.lock:
            return [e for e in self.db.events if e.job_id == job_id]


class FakeTaskStore:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    def start_stage(
        self, job_id: JobId, stage: int, tasks: Sequence[NewTask], created: int | None = None
    ) -> bool:
        first = len(tasks) if created is None else created
        if not 0 <= first <= len(tasks):
            raise DatabaseError(f"start stage: {first} of {len(tasks)} tasks created")
        if any(task.max_attempts < 1 for task in tasks):
            raise DatabaseError("start stage: violates check constraint task_max_attempts_positive")
        with self.db.lock:
            job = self.db.job(job_id, "start stage")
            row = self.db.stages.get((job_id, stage))
            if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING) or job.stage != stage:
                return False
            if row is None or row.status is not StageStatus.PENDING:
                return False
            now = self.db.now()
            row.status, row.started_at = StageStatus.PROCESSING, now
            row.task_count = row.remaining = len(tasks)
            count = {"task_count": len(tasks)}
            self.db.event(job_id, "stage_status", stage, ("pending", "processing"), detail=count)
            if job.status is JobStatus.QUEUED:
                job.status, job.updated_at = JobStatus.PROCESSING, now
                self.db.event(job_id, "job_status", stage, ("queued", "processing"))
            if first < len(tasks):  # the stage message is due until the rest are created
                row.uncreated = len(tasks) - first
                job.dispatched_at, job.updated_at = None, now
            self._create(job_id, stage, tasks, 0, first)
            return True

    def create_rest(self, job_id: JobId, stage: int, tasks: Sequence[NewTask]) -> int:
        with self.db.lock:
            row = self.db.stages.get((job_id, stage))
            if row is None:
                raise NotFound("create stage tasks: no such stage", job_id=job_id, stage=stage)
            if row.status is not StageStatus.PROCESSING or row.uncreated == 0:
                return 0
            if len(tasks) != row.task_count:
                raise DatabaseError(
                    f"create stage tasks: stage {stage} of job {job_id} was started with"
                    f" {row.task_count} tasks, but its build now made {len(tasks)}"
                )
            first, row.uncreated = row.task_count - row.uncreated, 0
            self._create(job_id, stage, tasks, first, len(tasks))
            return len(tasks) - first

    def _create(
        self, job_id: JobId, stage: int, tasks: Sequence[NewTask], start: int, stop: int
    ) -> None:
        now = self.db.now()
        for index in range(start, stop):
            task, task_id = tasks[index], make_task_id(job_id, stage, index)
            self.db.tasks[task_id] = TaskRow(
                task_id,
                job_id,
                stage,
                index,
                task.task_type,
                jsonb(task.parameters) or {},
                task.max_attempts,
                now,
                now,
            )

    def hold_if_paused(self, job_id: JobId, task_ids: Sequence[TaskId]) -> bool:
        return False

    def report_progress(self, task_id: TaskId, attempt: int, fraction: float, message: str) -> bool:
        with self.db.lock:
            task = self.db.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.PROCESSING or task.attempt != attempt:
                return False
            task.progress, task.progress_message = fraction, message
            task.progress_attempt, task.progress_at = attempt, self.db.now()
            return True

    def claim(self, task_ids: Sequence[TaskId], worker: str) -> list[Claim]:
        with self.db.lock:
            now, claimed = self.db.now(), []
            for task_id in set(task_ids):
                task = self.db.tasks.get(task_id)
                if (
                    task is None
                    or task.status not in (TaskStatus.QUEUED, TaskStatus.RETRYING)
                    or task.attempt >= task.max_attempts
                    or self.db.jobs[task.job_id].status is not JobStatus.PROCESSING
                    or (task.next_attempt_at is not None and task.next_attempt_at > now)
                ):
                    continue
                task.status, task.claimed_by = TaskStatus.PROCESSING, worker
                task.attempt += 1
                task.claimed_at = task.heartbeat_at = task.updated_at = now
                task.next_attempt_at = None
                claimed.append(Claim.model_validate(asdict(task)))
            return sorted(claimed, key=lambda c: c.task_index)

    def complete(self, task_id: TaskId, attempt: int, result: dict[str, Any]) -> Completion:
        return self._end(task_id, attempt, TaskStatus.COMPLETED, result, None)

    def fail(self, task_id: TaskId, attempt: int, error: TaskError) -> Completion:
        return self._end(task_id, attempt, TaskStatus.FAILED, None, error)

    def end_many(self, ends: Sequence[TaskEnd]) -> list[Completion]:
        return [self._end(e.task_id, e.attempt, e.status, e.result, e.error) for e in ends]

    def fail_unclaimed(
        self, task_id: TaskId, error: TaskError, actor: str, reason: str
    ) -> Completion:
        return self._end(task_id, None, TaskStatus.FAILED, None, error, OPEN_TASK, actor, reason)

    def _end(
        self,
        task_id: TaskId,
        attempt: int | None,
        status: TaskStatus,
        result: Json | None,
        error: TaskError | None,
        sources: Iterable[TaskStatus] = (TaskStatus.PROCESSING,),
        actor: str = "worker",
        reason: str | None = None,
    ) -> Completion:
        """finish_task: the fan-in; exactly one call per stage answers is_last_task."""
        with self.db.lock:
            task = self.db.tasks.get(task_id)
            if task is None:
                raise NotFound(f"complete task: task {task_id} does not exist", task_id=task_id)
            counts = self.db.stages[task.job_id, task.stage]
            if task.status not in sources or attempt not in (None, task.attempt):
                return _completion(counts, applied=False)
            now, before = self.db.now(), task.status
            task.status, task.result = status, jsonb(result)
            task.error = error.model_dump(mode="json") if error else task.error
            task.finished_at = task.updated_at = now
            task.heartbeat_at = None
            counts.remaining -= 1
            if status is TaskStatus.COMPLETED:
                counts.completed_count += 1
            else:
                counts.failed_count += 1
                why = reason or (error.message if error else None)
                change = (before, "failed")
                self.db.event(
                    task.job_id, "task_failed", task.stage, change, actor, why, task.error, task_id
                )
            return _completion(counts, applied=True)

    def retry(self, task_id: TaskId, attempt: int, error: TaskError, delay: timedelta) -> bool:
        with self.db.lock:
            task = self.db.tasks.get(task_id)
            if (
                task is None
                or task.status is not TaskStatus.PROCESSING
                or task.attempt != attempt
                or task.attempt >= task.max_attempts
            ):
                return False
            now = self.db.now()
            task.status, task.error = TaskStatus.RETRYING, error.model_dump(mode="json")
            task.next_attempt_at, task.updated_at = now + delay, now
            task.dispatched_at = task.heartbeat_at = None
            detail = {**task.error, "delay_s": delay.total_seconds()}
            change, why = ("processing", "retrying"), error.message
            self.db.event(
                task.job_id,
                "task_retry",
                task.stage,
                change,
                reason=why,
                detail=detail,
                task_id=task_id,
            )
            return True

    def heartbeat(self, task_ids: Sequence[TaskId], worker: str) -> int:
        with self.db.lock:
            now, held = self.db.now(), 0
            for task_id in set(task_ids):
                task = self.db.tasks.get(task_id)
                if task and task.status is TaskStatus.PROCESSING and task.claimed_by == worker:
                    task.heartbeat_at, held = now, held + 1
            return held

    def mark_dispatched(self, task_ids: Sequence[TaskId]) -> None:
        with self.db.lock:
            now = self.db.now()
            for task_id in task_ids:
                task = self.db.tasks.get(task_id)
                if task is not None and task.dispatched_at is None:
                    task.dispatched_at = now

    def deferred(self, task_ids: Sequence[TaskId]) -> list[DeferredTask]:
        with self.db.lock:
            now, waiting = self.db.now(), []
            for task_id in sorted(set(task_ids)):
                task = self.db.tasks.get(task_id)
                if (
                    task is not None
                    and task.status in (TaskStatus.QUEUED, TaskStatus.RETRYING)
                    and task.next_attempt_at is not None
                    and task.next_attempt_at > now
                ):
                    delay = (task.next_attempt_at - now).total_seconds()
                    waiting.append(DeferredTask(task_id=task_id, delay_s=delay))
            return waiting

    def undispatched(self, job_id: JobId, stage: int) -> list[TaskId]:
        with self.db.lock:
            return [
                t.task_id
                for t in self.db.stage_tasks(job_id, stage)
                if t.dispatched_at is None and t.status in (TaskStatus.QUEUED, TaskStatus.RETRYING)
            ]

    def get(self, task_id: TaskId) -> TaskRecord:
        with self.db.lock:
            if task_id not in self.db.tasks:
                raise NotFound("task not found", task_id=task_id)
            return TaskRecord.model_validate(asdict(self.db.tasks[task_id]))

    def find(
        self,
        job_id: JobId,
        stage: int | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[TaskRecord]:
        after = decode_cursor(cursor, int, int)
        key = (int(after[0]), int(after[1])) if after else (0, -1)
        with self.db.lock:
            rows = sorted(
                (
                    t
                    for t in self.db.tasks.values()
                    if t.job_id == job_id
                    and stage in (None, t.stage)
                    and status in (None, t.status)
                    and (t.stage, t.task_index) > key
                ),
                key=lambda t: (t.stage, t.task_index),
            )
            tasks = [TaskRecord.model_validate(asdict(t)) for t in rows[:limit]]
        last = tasks[-1] if tasks else None
        more = len(rows) > limit
        return Page(tasks, encode_cursor(last.stage, last.task_index) if more and last else None)

    def results(
        self, job_id: JobId, stage: int, page_size: int = 5000
    ) -> Iterator[list[tuple[int, dict[str, Any] | None]]]:
        last = -1
        while True:
            with self.db.lock:
                page = [
                    (t.task_index, jsonb(t.result))
                    for t in self.db.stage_tasks(job_id, stage)
                    if t.status is TaskStatus.COMPLETED and t.task_index > last
                ][:page_size]
            if not page:
                return
            yield page
            last = page[-1][0]


class FakePoisonStore:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    def record(
        self,
        queue_name: str,
        message_id: str,
        body: str,
        dequeue_count: int,
        reason: str,
        job_id: JobId | None = None,
        task_ids: Sequence[TaskId] = (),
    ) -> bool:
        with self.db.lock:
            if (queue_name, message_id) in {(p.queue_name, p.message_id) for p in self.db.poison}:
                return False
            self.db.poison.append(
                PoisonRecord(
                    poison_id=len(self.db.poison) + 1,
                    queue_name=queue_name,
                    message_id=message_id,
                    body=body,
                    dequeue_count=dequeue_count,
                    reason=reason,
                    job_id=job_id,
                    task_ids=list(task_ids),
                    received_at=self.db.now(),
                    replayed_at=None,
                )
            )
            return True

    def recent(self, limit: int = 100) -> list[PoisonRecord]:
        with self.db.lock:
            return sorted(self.db.poison, key=lambda p: (p.received_at, p.poison_id))[::-1][:limit]


QueueName = Literal["jobs", "tasks"]


@dataclass(frozen=True)
class Envelope:
    """One message on a fake queue: its JSON text and when it becomes visible."""

    queue: QueueName
    body: str
    due: float
    message_id: str


class FakeBus:
    """Two in-memory queues with a virtual clock; messages are stored as their JSON text.

    A delay makes a message due `delay` seconds later on the bus's clock, which moves
    only through `advance` or a fast-forwarding `drain`. Both also wait that long for real
    (a retry's backoff is short in the test job types): the stores compare a retry's
    next_attempt_at with the real clock, as PostgreSQL does.

    `refuse_task_sends = n` makes the next n task sends fail as an unreachable queue does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[QueueName, deque[Envelope]] = {"jobs": deque(), "tasks": deque()}
        self._ids = itertools.count(1)
        self.clock = 0.0
        self.sent: list[Envelope] = []
        self.delivered: list[Envelope] = []
        self.refuse_task_sends = 0

    def send_job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None:
        self._put("jobs", [msg], delay)

    def send_tasks(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]:
        with self._lock:
            if self.refuse_task_sends > 0:
                self.refuse_task_sends -= 1
                raise QueueUnavailable("send message: the fake queue refuses sends")
        self._put("tasks", msgs, delay)
        return list(msgs)

    def _put(
        self,
        queue: QueueName,
        msgs: Sequence[JobQueueMessage | TaskQueueMessage],
        delay: timedelta | None,
    ) -> None:
        bodies = [msg.model_dump_json() for msg in msgs]
        for body, msg in zip(bodies, msgs, strict=True):
            size = wire_size(body, "base64")
            if size > MAX_MESSAGE_BYTES:  # checked for the whole batch before any is sent
                raise MessageTooLarge(f"queue message is {size} bytes as sent", job_id=msg.job_id)
        with self._lock:
            due = self.clock + (delay.total_seconds() if delay else 0.0)
            for body in bodies:
                envelope = Envelope(queue, body, due, f"m{next(self._ids)}")
                self._queues[queue].append(envelope)
                self.sent.append(envelope)

    def advance(self, seconds: float) -> None:
        """Move the bus's clock on, and wait as long."""
        time.sleep(seconds)
        with self._lock:
            self.clock += seconds

    def pending(self, queue: QueueName | None = None) -> list[Envelope]:
        """Return the messages still on the queue(s), due or not, oldest first."""
        with self._lock:
            return self._unlocked_pending(queue)

    def take(self, queue: QueueName | None = None) -> Envelope | None:
        """Remove and return the next due message without delivering it."""
        with self._lock:
            due = [e for e in self._unlocked_pending(queue) if e.due <= self.clock]
            if not due:
                return None
            self._queues[due[0].queue].remove(due[0])
            return due[0]

    def deliver(self, engine: Engine, envelope: Envelope) -> None:
        """Hand one message to the engine's handler, parsed from its text as a trigger does."""
        with self._lock:
            self.delivered.append(envelope)
        if envelope.queue == "jobs":
            engine.handle_job_message(parse_message(JobQueueMessage, envelope.body.encode()))
        else:
            engine.handle_task_message(parse_message(TaskQueueMessage, envelope.body.encode()))

    def deliver_next(
        self, engine: Engine, queue: QueueName | None = None, twice: bool = False
    ) -> Envelope | None:
        """Deliver the next due message (of `queue`), twice in a row if asked; return it."""
        envelope = self.take(queue)
        if envelope is not None:
            for _ in range(2 if twice else 1):
                self.deliver(engine, envelope)
        return envelope

    def drain(
        self, engine: Engine, twice: bool = False, fast_forward: bool = True, limit: int = 10_000
    ) -> int:
        """Deliver messages until none is due and return how many were taken.

        With fast_forward the clock jumps to the next delayed message whenever none is due.
        """
        for count in range(limit):
            if self.deliver_next(engine, twice=twice) is not None:
                continue
            waiting = self.pending()
            if not (fast_forward and waiting):
                return count
            self.advance(max(0.0, waiting[0].due - self.clock))
        raise AssertionError(f"the bus did not settle after {limit} deliveries")

    def redeliver_all(self, engine: Engine) -> None:
        """Deliver every message delivered so far once more (stale duplicates)."""
        for envelope in list(self.delivered):
            self.deliver(engine, envelope)

    def _unlocked_pending(self, queue: QueueName | None) -> list[Envelope]:
        queues = [queue] if queue else list(self._queues)
        return sorted((e for q in queues for e in self._queues[q]), key=_order)


def _order(envelope: Envelope) -> tuple[float, int]:
    return envelope.due, int(envelope.message_id[1:])


def _completion(counts: StageRow, applied: bool) -> Completion:
    return Completion(
        applied=applied,
        is_last_task=applied and counts.remaining == 0,
        task_count=counts.task_count,
        remaining=counts.remaining,
        completed_count=counts.completed_count,
        failed_count=counts.failed_count,
    )


def _contract_json(result: StageResultContract) -> Json:
    return jsonb(result.model_dump(mode="json")) or {}


if TYPE_CHECKING:
    _db = FakeDatabase()
    _jobs: JobStore = FakeJobStore(_db)
    _tasks: TaskStore = FakeTaskStore(_db)
    _poison: PoisonStore = FakePoisonStore(_db)
    _bus: MessageBus = FakeBus()
