"""What the engine needs from storage and queues: repositories/ and the fakes provide it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, Protocol

from repositories.jobs import Advance
from repositories.paging import Page
from repositories.tasks import Finish, NewTask
from schemas.ids import JobId, TaskId
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import Claim, Completion, JobRecord, StageRecord, TaskError, TaskRecord
from schemas.results import StageResultContract
from schemas.status import JobStatus, TaskStatus


class JobStore(Protocol):
    def submit(
        self,
        job_id: JobId,
        job_type: str,
        parameters: dict[str, Any],
        stage_names: Sequence[str],
        rerun_of: JobId | None = None,
        actor: str = "api",
    ) -> bool: ...

    def get(self, job_id: JobId) -> JobRecord: ...

    def stages(self, job_id: JobId) -> list[StageRecord]: ...

    def stage(self, job_id: JobId, stage: int) -> StageRecord: ...

    def mark_dispatched(self, job_id: JobId, stage: int) -> None: ...

    def hold_if_paused(self, job_id: JobId, stage: int) -> bool: ...

    def advance(
        self,
        job_id: JobId,
        stage_result: StageResultContract,
        job_status: JobStatus | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        actor: str = "engine",
    ) -> Advance: ...

    def fail(
        self,
        job_id: JobId,
        error: dict[str, Any],
        actor: str,
        reason: str,
        stage: int | None = None,
    ) -> bool: ...

    def cancel(self, job_id: JobId, actor: str, reason: str) -> tuple[bool, JobStatus]: ...

    def stalled_stages(
        self, older_than: timedelta, limit: int = 100
    ) -> list[tuple[JobId, int]]: ...


class TaskStore(Protocol):
    def start_stage(self, job_id: JobId, stage: int, tasks: Sequence[NewTask]) -> bool: ...

    def hold_if_paused(self, job_id: JobId, task_ids: Sequence[TaskId]) -> bool: ...

    def report_progress(
        self, task_id: TaskId, attempt: int, fraction: float, message: str
    ) -> bool: ...

    def claim(self, task_ids: Sequence[TaskId], worker: str) -> list[Claim]: ...

    def complete(self, task_id: TaskId, attempt: int, result: dict[str, Any]) -> Completion: ...

    def fail(self, task_id: TaskId, attempt: int, error: TaskError) -> Completion: ...

    def finish_many(self, finishes: Sequence[Finish]) -> list[Completion]: ...

    def fail_unclaimed(
        self, task_id: TaskId, error: TaskError, actor: str, reason: str
    ) -> Completion: ...

    def retry(self, task_id: TaskId, attempt: int, error: TaskError, delay: timedelta) -> bool: ...

    def heartbeat(self, task_ids: Sequence[TaskId], worker: str) -> int: ...

    def mark_dispatched(self, task_ids: Sequence[TaskId]) -> None: ...

    def undispatched(self, job_id: JobId, stage: int) -> list[TaskId]: ...

    def find(
        self,
        job_id: JobId,
        stage: int | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[TaskRecord]: ...

    def results(
        self, job_id: JobId, stage: int, page_size: int = 5000
    ) -> Iterator[list[tuple[int, dict[str, Any] | None]]]: ...


class MessageBus(Protocol):
    def send_job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None: ...

    def send_tasks(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]: ...


class PoisonStore(Protocol):
    def record(
        self,
        queue_name: str,
        message_id: str,
        body: str,
        dequeue_count: int,
        reason: str,
        job_id: JobId | None = None,
        task_ids: Sequence[TaskId] = (),
    ) -> bool: ...
