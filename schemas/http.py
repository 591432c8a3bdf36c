"""HTTP request and response bodies of the API (DESIGN "Interfaces users depend on")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.ids import JobIdField, TaskIdField
from schemas.records import PoisonRecord, TaskError
from schemas.status import JobStatus, StageStatus, TaskStatus

MAX_BODY_BYTES = 1024 * 1024  # the largest request body the API reads


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(_Body):
    """Every 4xx/5xx answer: what went wrong, and which fields when parameters were invalid."""

    error: str
    message: str
    fields: list[FieldError] = Field(default_factory=list)
    error_id: str | None = Field(
        default=None, description="on 500 answers: the id under which the log has the details"
    )


class SubmitResponse(_Body):
    job_id: JobIdField
    job_type: str
    status: JobStatus
    status_url: str
    created: bool


class Progress(_Body):
    fraction: float = Field(ge=0, le=1, description="ended tasks and running tasks' reports")
    total: int
    completed: int
    failed: int
    remaining: int


class StageProgress(_Body):
    stage: int
    name: str
    status: StageStatus
    fraction: float = Field(ge=0, le=1)
    task_count: int
    completed: int
    failed: int
    remaining: int


class JobView(_Body):
    job_id: JobIdField
    job_type: str
    status: JobStatus
    stage: int
    total_stages: int
    parameters: dict[str, Any]
    stage_results: dict[str, dict[str, Any]]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    progress: Progress
    stages: list[StageProgress]
    rerun_of: JobIdField | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobSummary(_Body):
    job_id: JobIdField
    job_type: str
    status: JobStatus
    stage: int
    total_stages: int
    created_at: datetime
    finished_at: datetime | None


class JobList(_Body):
    jobs: list[JobSummary]
    next_cursor: str | None


class TaskView(_Body):
    task_id: TaskIdField
    stage: int
    task_index: int
    task_type: str
    status: TaskStatus
    attempt: int
    result: dict[str, Any] | None
    error: TaskError | None
    progress: float | None = None
    progress_message: str | None = None
    updated_at: datetime
    finished_at: datetime | None


class TaskList(_Body):
    tasks: list[TaskView]
    next_cursor: str | None


class StageInfo(_Body):
    stage: int
    name: str
    task_type: str
    # None: packed automatically from the number of tasks sent (controllers.base.packing_for).
    tasks_per_message: int | None


class JobTypeInfo(_Body):
    job_type: str
    description: str
    stages: list[StageInfo]
    parameters_schema: dict[str, Any]
    paused: bool = False
    paused_by: str | None = None
    paused_at: datetime | None = None


class JobTypeList(_Body):
    job_types: list[JobTypeInfo]


class HealthBody(_Body):
    status: str
    checks: dict[str, str]
    auth: Literal["on", "off"] = Field(description="off only when LIGHTSOUT_AUTH=off")
    warnings: list[str] = Field(default_factory=list)


class CancelResponse(_Body):
    job_id: JobIdField
    status: JobStatus


class RetryResponse(_Body):
    job_id: JobIdField
    status: JobStatus
    stage: int
    retried_tasks: int


class PoisonList(_Body):
    poison: list[PoisonRecord]


class ReplayResponse(_Body):
    poison_id: int
    queue_name: str


# What POST /api/jobs/purge accepts: finished statuses, and `older_than` as an age.
PURGE_STATUSES = (
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_ERRORS,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
PURGE_AGE = r"^(\d+(?:\.\d+)?)([dhms])$"


class PurgeResponse(_Body):
    """What `POST /api/jobs/purge` deleted; `more` when jobs matching it are left."""

    older_than: datetime
    statuses: list[str]
    jobs: int
    tasks: int
    more: bool
