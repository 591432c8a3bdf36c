"""Queue messages: small, strict, ids only (DESIGN invariant 10)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.ids import JobIdField, TaskIdField

MAX_MESSAGE_BYTES = 64 * 1024
# The most task ids one message may carry: 512 ids of the longest form still fit in
# 64 KiB once base64-encoded (tests/unit/test_contracts.py checks it).
MAX_TASK_IDS = 512
# W3C Trace Context, version 00: queues have no headers, so the trace rides in the body.
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
Traceparent = Annotated[str | None, Field(pattern=TRACEPARENT_PATTERN)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class JobQueueMessage(_Message):
    """Ask the controller to build and dispatch stage `stage` of a job."""

    job_id: JobIdField
    stage: int = Field(ge=1)
    traceparent: Traceparent = None


class TaskQueueMessage(_Message):
    """Run one or more tasks of one stage of one job."""

    job_id: JobIdField
    stage: int = Field(ge=1)
    task_ids: Annotated[list[TaskIdField], Field(min_length=1, max_length=MAX_TASK_IDS)]
    traceparent: Traceparent = None

    @model_validator(mode="after")
    def _tasks_belong_to_stage(self) -> TaskQueueMessage:
        prefix = f"{self.job_id}-s{self.stage}-t"
        strangers = [t for t in self.task_ids if not t.startswith(prefix)]
        if strangers:
            raise ValueError(
                f"task_ids not of job {self.job_id} stage {self.stage}: {strangers[:3]}"
            )
        return self
