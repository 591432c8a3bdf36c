"""What the engine needs from storage and queues: repositories/ and the fakes provide it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from schemas.ids import JobId, TaskId
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.operator import (
    ExpiredClaim,
    JanitorAction,
    JobStage,
    JobState,
    JobTypePause,
    PoisonNote,
    Resumed,
    ScheduledRetry,
    SentMessage,
    StageCounters,
    StatusChange,
)
from schemas.queued import RawMessage
from schemas.records import (
    Advance,
    Claim,
    Completion,
    DeferredTask,
    ExpiredTask,
    JobRecord,
    JobRetried,
    Json,
    PoisonRecord,
    Purged,
    Reaped,
    Reopened,
    Replay,
    StageRecord,
    StageRef,
    TaskError,
    TaskRecord,
    UnsentTask,
)
from schemas.results import StageResultContract
from schemas.status import JobStatus, TaskStatus
from schemas.work import NewTask, Page, TaskEnd


class JobStore(Protocol):
    def submit(
        self,
        job_id: JobId,
        job_type: str,
        parameters: Json,
        stage_names: Sequence[str],
        rerun_of: JobId | None = None,
        actor: str = "api",
    ) -> bool: ...

    def get(self, job_id: JobId) -> JobRecord: ...

    def stages(self, job_id: JobId) -> list[StageRecord]: ...

    def stage(self, job_id: JobId, stage: int) -> StageRecord: ...

    def mark_dispatched(self, job_id: JobId, stage: int) -> None: ...

    def hold_if_paused(self, job_id: JobId, stage: int) -> bool: ...

    def take_dispatch_lease(
        self, job_id: JobId, stage: int, holder: str, lease: timedelta
    ) -> bool: ...

    def release_dispatch_lease(self, job_id: JobId, stage: int, holder: str) -> None: ...

    def advance(
        self,
        job_id: JobId,
        stage_result: StageResultContract,
        job_status: JobStatus | None = None,
        result: Json | None = None,
        error: Json | None = None,
        actor: str = "engine",
    ) -> Advance: ...

    def fail(
        self,
        job_id: JobId,
        error: Json,
        actor: str,
        reason: str,
        stage: int | None = None,
    ) -> bool: ...

    def cancel(self, job_id: JobId, actor: str, reason: str) -> tuple[bool, JobStatus]: ...

    def stalled_stages(self, older_than: timedelta, limit: int = 100) -> list[StageRef]: ...


class TaskStore(Protocol):
    def start_stage(
        self, job_id: JobId, stage: int, tasks: Sequence[NewTask], created: int | None = None
    ) -> bool: ...

    def create_rest(self, job_id: JobId, stage: int, tasks: Sequence[NewTask]) -> int: ...

    def hold_if_paused(self, job_id: JobId, task_ids: Sequence[TaskId]) -> bool: ...

    def report_progress(
        self, task_id: TaskId, attempt: int, fraction: float, message: str
    ) -> bool: ...

    def claim(self, task_ids: Sequence[TaskId], worker: str) -> list[Claim]: ...

    def complete(self, task_id: TaskId, attempt: int, result: Json) -> Completion: ...

    def fail(self, task_id: TaskId, attempt: int, error: TaskError) -> Completion: ...

    def end_many(self, ends: Sequence[TaskEnd]) -> list[Completion]: ...

    def fail_unclaimed(
        self, task_id: TaskId, error: TaskError, actor: str, reason: str
    ) -> Completion: ...

    def retry(self, task_id: TaskId, attempt: int, error: TaskError, delay: timedelta) -> bool: ...

    def heartbeat(self, task_ids: Sequence[TaskId], worker: str) -> int: ...

    def mark_dispatched(self, task_ids: Sequence[TaskId]) -> None: ...

    def deferred(self, task_ids: Sequence[TaskId]) -> list[DeferredTask]: ...

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
    ) -> Iterator[list[tuple[int, Json | None]]]: ...


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


class PoisonReplays(PoisonStore, Protocol):
    def get(self, poison_id: int) -> PoisonRecord: ...

    def claim_replay(self, poison_id: int, force: bool = False) -> Replay: ...

    def release_replay(self, poison_id: int, previous: datetime | None) -> None: ...


class RecoveryStore(Protocol):
    """The janitor's and the operator's repairs (sql/0002 and sql/0003)."""

    def expired_tasks(self, lease: timedelta, limit: int = 500) -> list[ExpiredTask]: ...

    def reap(self, task_id: TaskId, lease: timedelta, delay: timedelta) -> Reaped: ...

    def sweep_unsent_tasks(
        self, grace: timedelta, holder: str, lease: timedelta, limit: int = 5000
    ) -> list[UnsentTask]: ...

    def sweep_unsent_jobs(self, grace: timedelta, limit: int = 500) -> list[StageRef]: ...

    def reopen_lost(
        self,
        idle: timedelta,
        tasks_sent_before: datetime,
        jobs_sent_before: datetime,
        limit: int,
        per_stage: int,
    ) -> Reopened: ...

    def retry_job(self, job_id: JobId, attempts: int, actor: str) -> JobRetried: ...

    def record_repair(self, job_id: JobId, stage: int | None, reason: str) -> None: ...

    def unknown_type_jobs(self, known: list[str], limit: int = 100) -> list[StageRef]: ...


class JanitorQueues(MessageBus, Protocol):
    """What the janitor reads and moves on the queues besides sending."""

    @property
    def jobs_queue(self) -> str: ...

    @property
    def tasks_queue(self) -> str: ...

    @property
    def task_queues(self) -> tuple[str, ...]: ...

    @property
    def jobs_poison_queue(self) -> str: ...

    @property
    def tasks_poison_queue(self) -> str: ...

    @property
    def task_poison_queues(self) -> tuple[str, ...]: ...

    @property
    def encoding(self) -> str: ...

    def approximate_counts(self) -> dict[str, int]: ...

    def oldest_visible(self, queue: str) -> datetime | None: ...

    def send_raw(self, queue: str, text: str, delay: timedelta | None = None) -> None: ...

    def receive_raw(
        self, queue: str, n: int = 32, lease: timedelta = timedelta(minutes=1)
    ) -> list[RawMessage]: ...

    def delete_raw(self, queue: str, message: RawMessage) -> None: ...


class OperatorStore(Protocol):
    """What the operator's controllers (pause, bulk actions, diagnose) need from storage."""

    def pause(self, job_type: str, actor: str, reason: str | None) -> tuple[bool, JobTypePause]: ...

    def resume(self, job_type: str, actor: str) -> Resumed: ...

    def pauses(self) -> dict[str, JobTypePause]: ...

    def unsent_of_type(self, job_type: str) -> tuple[list[JobStage], list[JobStage]]: ...

    def matching_jobs(
        self, job_type: str | None, status: JobStatus | None, after: str = "", limit: int = 500
    ) -> list[JobState]: ...

    def stage_counters(self, job_id: JobId) -> list[StageCounters]: ...

    def tasks_by_status(self, job_id: JobId) -> dict[TaskStatus, int]: ...

    def outbox(self, job_id: JobId) -> tuple[int, int]: ...

    def waiting_since(self, job_id: JobId) -> SentMessage | None: ...

    def silent_claims(
        self, job_id: JobId, silent_for: timedelta, at_most: timedelta | None = None
    ) -> list[ExpiredClaim]: ...

    def scheduled_retries(self, job_id: JobId) -> list[ScheduledRetry]: ...

    def poison_of(self, job_id: JobId) -> list[PoisonNote]: ...

    def ended_by(self, job_id: JobId, status: JobStatus) -> StatusChange | None: ...

    def last_janitor_action(self, job_id: JobId) -> JanitorAction | None: ...


class RetentionStore(Protocol):
    def purge(
        self,
        older_than: datetime,
        statuses: Sequence[JobStatus] | None,
        max_jobs: int,
        max_tasks: int,
    ) -> Purged: ...
