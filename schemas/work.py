"""What the engine hands its stores: new jobs and tasks, the ends and retries of attempts, pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Generic, TypeVar

from schemas.ids import JobId, TaskId
from schemas.records import Json, TaskError
from schemas.status import TaskStatus

T = TypeVar("T")


@dataclass(frozen=True)
class NewJob:
    """A job to create with its pending stages (the repository's submit, one per caller)."""

    job_id: JobId
    job_type: str
    parameters: Json
    stage_names: Sequence[str]
    rerun_of: JobId | None = None
    actor: str = "api"


@dataclass(frozen=True)
class NewTask:
    """A task to create: its index in the stage gives its deterministic id."""

    task_type: str
    parameters: Json = field(default_factory=dict)
    max_attempts: int = 3


@dataclass(frozen=True)
class TaskEnd:
    """One claimed attempt's end: completed with a result, or failed for good with an error."""

    task_id: TaskId
    attempt: int
    status: TaskStatus
    result: Json | None = None
    error: TaskError | None = None


@dataclass(frozen=True)
class TaskRetry:
    """One claimed attempt that failed and runs again after `delay`."""

    task_id: TaskId
    job_id: JobId
    stage: int
    attempt: int
    error: TaskError
    delay: timedelta


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
