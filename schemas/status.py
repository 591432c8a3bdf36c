"""Statuses of jobs, stages and tasks, and the one transition table of each.

The machines are drawn in README.md ("Statuses"); the stored procedures in
sql/ guard the same transitions with `UPDATE ... WHERE status IN (...)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from schemas.exceptions import IllegalTransition


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StageStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = TypeVar("S", JobStatus, StageStatus, TaskStatus)

JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.COMPLETED_WITH_ERRORS,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.COMPLETED_WITH_ERRORS: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

STAGE_TRANSITIONS: Mapping[StageStatus, frozenset[StageStatus]] = {
    StageStatus.PENDING: frozenset({StageStatus.PROCESSING, StageStatus.CANCELLED}),
    StageStatus.PROCESSING: frozenset(
        {
            StageStatus.COMPLETED,
            StageStatus.COMPLETED_WITH_ERRORS,
            StageStatus.FAILED,
            StageStatus.CANCELLED,
        }
    ),
    StageStatus.COMPLETED: frozenset(),
    StageStatus.COMPLETED_WITH_ERRORS: frozenset(),
    StageStatus.FAILED: frozenset(),
    StageStatus.CANCELLED: frozenset(),
}

TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    # queued -> failed: a poison message fails tasks that no worker could claim.
    TaskStatus.QUEUED: frozenset({TaskStatus.PROCESSING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.PROCESSING: frozenset(
        {
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.RETRYING,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.RETRYING: frozenset(
        {TaskStatus.PROCESSING, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


# The one way out of a finished state: an operator's retry of a failed job re-opens the
# failed stage, re-queues its failed tasks, and the stages the failure cancelled wait again
# (sql/0002 retry_job). Nothing else uses it. Keyed by kind: the statuses are strings, so
# JobStatus.FAILED and StageStatus.FAILED are one dictionary key.
RECOVERY_TRANSITIONS: Mapping[type, Mapping[str, frozenset[str]]] = {
    JobStatus: {JobStatus.FAILED: frozenset({JobStatus.PROCESSING})},
    StageStatus: {
        StageStatus.FAILED: frozenset({StageStatus.PROCESSING}),
        StageStatus.CANCELLED: frozenset({StageStatus.PENDING}),
    },
    TaskStatus: {TaskStatus.FAILED: frozenset({TaskStatus.QUEUED})},
}


def allowed_from(status: S) -> frozenset[S]:
    """Return the statuses that `status` may move to."""
    if isinstance(status, JobStatus):
        return JOB_TRANSITIONS[status]
    if isinstance(status, StageStatus):
        return STAGE_TRANSITIONS[status]
    return TASK_TRANSITIONS[status]


def can_transition(current: S, target: S) -> bool:
    """Return whether `current -> target` is declared."""
    return target in allowed_from(current)


def can_recover(current: S, target: S) -> bool:
    """Return whether `current -> target` is one of an operator retry's (RECOVERY_TRANSITIONS)."""
    if type(current) is not type(target):
        return False
    return target in RECOVERY_TRANSITIONS[type(current)].get(current, frozenset())


def check_transition(current: S, target: S) -> S:
    """Return `target` if `current -> target` is declared, else raise IllegalTransition."""
    if not can_transition(current, target):
        raise IllegalTransition(
            f"{type(current).__name__} cannot go from {current.value!r} to {target.value!r}",
            allowed=sorted(s.value for s in allowed_from(current)),
        )
    return target


def is_terminal(status: S) -> bool:
    """Return whether no transition leaves `status`."""
    return not allowed_from(status)


def sources_of(target: S) -> frozenset[S]:
    """Return every status from which `target` may be reached (the SQL guards use these)."""
    return frozenset(s for s in type(target) if target in allowed_from(s))
