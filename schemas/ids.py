"""Identifier types: validated at the boundary, NewType inside the code."""

from __future__ import annotations

import re
from typing import Annotated, NewType

from pydantic import AfterValidator

JobId = NewType("JobId", str)
TaskId = NewType("TaskId", str)

JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")
TASK_ID_PATTERN = re.compile(
    r"^(?P<job>[0-9a-f]{64})-s(?P<stage>[1-9][0-9]*)-t(?P<index>0|[1-9][0-9]*)$"
)


def parse_job_id(value: str) -> JobId:
    """Return value as a JobId, or raise ValueError naming the expected form."""
    if not JOB_ID_PATTERN.fullmatch(value):
        raise ValueError("job_id must be 64 lowercase hexadecimal characters")
    return JobId(value)


def parse_task_id(value: str) -> TaskId:
    """Return value as a TaskId, or raise ValueError naming the expected form."""
    if not TASK_ID_PATTERN.fullmatch(value):
        raise ValueError("task_id must look like '{job_id}-s{stage}-t{index}'")
    return TaskId(value)


def make_task_id(job_id: JobId, stage: int, index: int) -> TaskId:
    """Return the deterministic id of task `index` of `stage`."""
    return TaskId(f"{job_id}-s{stage}-t{index}")


JobIdField = Annotated[JobId, AfterValidator(parse_job_id)]
TaskIdField = Annotated[TaskId, AfterValidator(parse_task_id)]
