"""The operator's API: history, diagnosis, pauses, bulk actions, workers (rows and bodies)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.ids import JobIdField, TaskIdField
from schemas.records import JobEvent
from schemas.status import JobStatus, StageStatus, TaskStatus


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventList(_Body):
    events: list[JobEvent]
    next_cursor: str | None


class JobTypePause(_Row):
    job_type: str
    paused_by: str
    paused_at: datetime
    reason: str | None = None


class Resumed(_Row):
    """What resume_job_type answered: whether it was paused, and the rows it released."""

    resumed: bool
    jobs: int = Field(ge=0)
    tasks: int = Field(ge=0)


class JobState(_Row):
    job_id: JobIdField
    status: JobStatus


class StatusChange(_Row):
    """Who moved the job to its final status, and why."""

    actor: str
    reason: str | None
    created_at: datetime


class StageRunning(_Row):
    """The summed progress reports of a stage's running attempts."""

    stage: int
    done: float = Field(ge=0)


class StatusCount(_Row):
    status: TaskStatus
    n: int = Field(ge=0)


class Outbox(_Row):
    unsent: int = Field(ge=0)
    held: int = Field(ge=0)


class JobStage(_Row):
    job_id: JobIdField
    stage: int = Field(ge=1)


class PauseResponse(_Body):
    job_type: str
    paused: bool
    paused_by: str | None
    paused_at: datetime | None


class BulkCancelResponse(_Body):
    matched: int
    cancelled: int


class BulkRetryResponse(_Body):
    matched: int
    retried: int


class WorkerView(_Row):
    worker: str
    last_heartbeat_at: datetime | None
    last_claim_at: datetime | None
    tasks_in_hand: int = Field(ge=0)
    jobs: list[JobIdField]


class WorkerList(_Body):
    workers: list[WorkerView]


class DiagnoseState(StrEnum):
    """Where a job is and why; each has a verdict sentence (controllers/diagnose.py)."""

    UNKNOWN_JOB_TYPE = "unknown_job_type"
    PAUSED = "paused"
    POISON = "poison"
    DEAD_WORKER = "dead_worker"
    STALLED_STAGE = "stalled_stage"
    DISPATCH_PENDING = "dispatch_pending"
    LOST_MESSAGE = "lost_message"
    WAITING_ON_RETRIES = "waiting_on_retries"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StageCounters(_Row):
    stage: int
    name: str
    status: StageStatus
    task_count: int
    remaining: int
    completed_count: int
    failed_count: int
    cancelled_count: int
    uncreated: int = 0  # tasks not created yet (sql/0011)
    started_at: datetime | None
    finished_at: datetime | None


class ExpiredClaim(_Row):
    """A running task whose worker has not heartbeated for a while (expired: past the lease)."""

    task_id: TaskIdField
    stage: int
    worker: str
    attempt: int
    max_attempts: int
    heartbeat_at: datetime
    silent_s: float


class ScheduledRetry(_Row):
    task_id: TaskIdField
    stage: int
    attempt: int
    next_attempt_at: datetime | None
    error: str | None


class PoisonNote(_Row):
    poison_id: int
    queue_name: str
    reason: str
    task_ids: list[str]
    open_tasks: int = Field(ge=0, description="tasks it names that have not ended")
    received_at: datetime
    replayed_at: datetime | None


class JanitorAction(_Row):
    event_id: int
    stage: int | None
    task_id: str | None
    kind: str
    reason: str | None
    created_at: datetime


class SentMessage(_Row):
    """The oldest message of the job's current stage that was sent and not acted on."""

    kind: str = Field(description="'job' (the stage message) or 'task'")
    sent_at: datetime
    count: int = Field(ge=1)


class Evidence(_Body):
    stages: list[StageCounters]
    tasks_by_status: dict[TaskStatus, int]
    unsent_messages: int = Field(ge=0)
    held_messages: int = Field(ge=0, description="job and task rows held back by a pause")
    waiting_since: SentMessage | None
    expired_claims: list[ExpiredClaim]
    silent_claims: list[ExpiredClaim] = Field(
        description="claims silent for three heartbeats whose lease has not ended yet"
    )
    scheduled_retries: list[ScheduledRetry]
    poison: list[PoisonNote]
    last_janitor_action: JanitorAction | None
    paused: bool
    pause: JobTypePause | None
    ended_by: StatusChange | None


class Diagnosis(_Body):
    job_id: JobIdField
    status: JobStatus
    stage: int
    state: DiagnoseState
    verdict: str
    evidence: Evidence
