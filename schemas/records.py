"""Rows as they leave the database: every row crosses into Python through these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.ids import JobIdField, TaskIdField
from schemas.status import JobStatus, StageStatus, TaskStatus

JsonObject = dict[str, Any]


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
    parameters: JsonObject
    stage_results: dict[str, JsonObject]
    result: JsonObject | None
    error: JsonObject | None
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
    started_at: datetime | None
    finished_at: datetime | None


class TaskRecord(_Row):
    task_id: TaskIdField
    job_id: JobIdField
    stage: int = Field(ge=1)
    task_index: int = Field(ge=0)
    task_type: str
    status: TaskStatus
    parameters: JsonObject
    result: JsonObject | None
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
    detail: JsonObject | None
    created_at: datetime


class Claim(_Row):
    """A task claimed for one attempt: what a worker needs to run it."""

    task_id: TaskIdField
    job_id: JobIdField
    stage: int
    task_index: int
    task_type: str
    parameters: JsonObject
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
