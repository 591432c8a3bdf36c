"""Queue messages: small, strict, ids only (DESIGN invariant 10)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.ids import JobId, JobIdField, TaskIdField

MAX_MESSAGE_BYTES = 64 * 1024
# The most task ids one message may carry: 512 ids of the longest form still fit in
# 64 KiB once base64-encoded (tests/unit/test_contracts.py checks it).
MAX_TASK_IDS = 512
# W3C Trace Context, version 00: queues have no headers, so the trace rides in the body.
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
Traceparent = Annotated[str | None, Field(pattern=TRACEPARENT_PATTERN)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# The most jobs one job message may start (the dispatcher's batches of submissions).
MAX_JOBS_PER_MESSAGE = 64


class JobQueueMessage(_Message):
    """Ask the controller to build and dispatch stage `stage` of a job, or of several.

    `more_job_ids`: other jobs at the same stage, started by the same message, so that a
    burst of submissions costs a queue send per batch instead of one per job.
    """

    job_id: JobIdField
    stage: int = Field(ge=1)
    more_job_ids: Annotated[list[JobIdField], Field(max_length=MAX_JOBS_PER_MESSAGE - 1)] = []
    traceparent: Traceparent = None

    @property
    def job_ids(self) -> list[JobId]:
        """Every job the message names, the first one first."""
        return [self.job_id, *self.more_job_ids]

    def one(self, job_id: JobId) -> JobQueueMessage:
        """The message for `job_id` alone, in this message's trace."""
        return JobQueueMessage(job_id=job_id, stage=self.stage, traceparent=self.traceparent)


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
