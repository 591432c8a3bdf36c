"""Rows as they leave the database: every row crosses into Python through these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.ids import JobIdField, TaskIdField
from schemas.status import JobStatus, StageStatus, TaskStatus

Json = dict[str, Any]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TaskError(BaseModel):
    """Why one attempt of a task failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    message: str
    traceback: str | None = None
    attempt: int = Field(ge=0)
    permanent: bool = False


class JobRecord(_Row):
    job_id: JobIdField
    job_type: str
    status: JobStatus
    stage: int = Field(ge=1)
    total_stages: int = Field(ge=1)
    parameters: Json
    stage_results: dict[str, Json]
    result: Json | None
    error: Json | None
    rerun_of: JobIdField | None = None
    dispatched_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class StageRecord(_Row):
    job_id: JobIdField
    stage: int = Field(ge=1)
    name: str
    status: StageStatus
    task_count: int = Field(ge=0)
    remaining: int = Field(ge=0)
    completed_count: int = Field(ge=0)
    failed_count: int = Field(ge=0)
    cancelled_count: int = Field(ge=0)
    # Tasks of the stage not created yet (their rows come in a second transaction; sql/0011).
    uncreated: int = Field(default=0, ge=0)
    started_at: datetime | None
    finished_at: datetime | None


class TaskRecord(_Row):
    task_id: TaskIdField
    job_id: JobIdField
    stage: int = Field(ge=1)
    task_index: int = Field(ge=0)
    task_type: str
    status: TaskStatus
    parameters: Json
    result: Json | None
    error: TaskError | None
    attempt: int = Field(ge=0)
    max_attempts: int = Field(ge=1)
    claimed_by: str | None
    claimed_at: datetime | None
    heartbeat_at: datetime | None
    next_attempt_at: datetime | None
    dispatched_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    progress: float | None = None
    progress_message: str | None = None
    progress_attempt: int | None = None
    progress_at: datetime | None = None


class JobEvent(_Row):
    event_id: int
    job_id: JobIdField
    stage: int | None
    task_id: TaskIdField | None
    kind: str
    from_status: str | None
    to_status: str | None
    actor: str
    reason: str | None
    detail: Json | None
    created_at: datetime


class Claim(_Row):
    """A task claimed for one attempt: what a worker needs to run it."""

    task_id: TaskIdField
    job_id: JobIdField
    stage: int
    task_index: int
    task_type: str
    parameters: Json
    attempt: int = Field(ge=1)
    max_attempts: int = Field(ge=1)


class Completion(_Row):
    """What complete_task_and_check_stage answered."""

    applied: bool
    is_last_task: bool
    task_count: int
    remaining: int
    completed_count: int
    failed_count: int


class PoisonRecord(_Row):
    """A message that could not be processed: its raw body, why, and what it named."""

    poison_id: int
    queue_name: str
    message_id: str
    body: str
    dequeue_count: int
    reason: str
    job_id: str | None
    task_ids: list[str]
    received_at: datetime
    replayed_at: datetime | None


class Advance(_Row):
    """What advance_job_stage answered: whether this call moved the job, and where it is."""

    advanced: bool
    status: JobStatus
    stage: int


class Cancelled(_Row):
    """What cancel_job answered: whether this call cancelled the job, and its status."""

    cancelled: bool
    status: JobStatus


class TaskRef(_Row):
    task_id: TaskIdField


class StageRef(_Row):
    """One stage of one job, as the janitor's queries name it."""

    job_id: JobIdField
    stage: int = Field(ge=1)


class ExpiredTask(_Row):
    """A running task whose heartbeat is older than the lease, at its current attempt."""

    task_id: TaskIdField
    job_id: JobIdField
    stage: int = Field(ge=1)
    attempt: int = Field(ge=1)


class Reaped(_Row):
    """What reap_task did: 'none' (the task was alive after all), 'retried' or 'failed'."""

    action: Literal["none", "retried", "failed"]
    is_last_task: bool
    attempt: int


class UnsentTask(_Row):
    """A queued or retrying task whose message was never sent, and how long it should wait."""

    task_id: TaskIdField
    job_id: JobIdField
    stage: int = Field(ge=1)
    delay_s: float = Field(ge=0)


class Reopened(_Row):
    """How many sent-but-lost task and job messages reopen_lost_messages reopened."""

    tasks: int = Field(ge=0)
    jobs: int = Field(ge=0)


class JobRetried(_Row):
    """What retry_job did: whether it re-queued anything, at which stage, how many tasks."""

    retried: bool
    stage: int
    task_count: int = Field(ge=0)


class DeferredTask(_Row):
    """A task a message named before its retry's backoff ended: due in `delay_s`."""

    task_id: TaskIdField
    delay_s: float = Field(ge=0)


class Replay(_Row):
    """What claim_poison_replay answered: whether this call may replay it, when it was
    replayed, and the replay before this one."""

    replayed: bool
    replayed_at: datetime
    previous_at: datetime | None


# A page of completed tasks' (task_index, result), as a stage's aggregate step reads them:
# the database sends one JSON array of pairs, parsed and checked here in one pass (per-row
# models made reading a 10,000-task stage's results 3-6x slower: bench/PROFILE.md).
ResultPage = TypeAdapter(list[tuple[Annotated[int, Field(ge=0)], Json | None]])


class Purged(_Row):
    """What one purge_jobs call deleted."""

    jobs: int
    tasks: int
