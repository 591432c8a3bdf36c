"""The engine's front door: submission, the two queue messages, and poison messages."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from pydantic import ValidationError

from controllers.ports import JobStore, MessageBus, PoisonStore, TaskStore
from controllers.registry import Registry
from controllers.stages import StageDriver
from controllers.worker import TaskRunner
from schemas.canonical import job_id_for
from schemas.exceptions import ContractViolation, InvalidParameters
from schemas.ids import JobId
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import JobRecord, TaskError
from schemas.status import JobStatus

log = logging.getLogger(__name__)
STALL_GRACE = timedelta(seconds=30)


def default_worker_name() -> str:
    """Return host:pid, which tells operators which process claimed a task."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Submission:
    job: JobRecord
    created: bool


@dataclass
class Engine:
    jobs: JobStore
    tasks: TaskStore
    bus: MessageBus
    poison: PoisonStore
    registry: Registry
    worker: str = field(default_factory=default_worker_name)
    task_concurrency: int = 8

    def __post_init__(self) -> None:
        self.driver = StageDriver(self.jobs, self.tasks, self.bus, self.registry)
        self.runner = TaskRunner(
            self.jobs,
            self.tasks,
            self.bus,
            self.registry,
            self.driver,
            self.worker,
            self.task_concurrency,
        )

    def submit(self, job_type: str, raw_parameters: object, actor: str = "api") -> Submission:
        """Validate and record a job (idempotent by its canonical id) and send its first stage.

        Raises JobTypeError for an unknown type and InvalidParameters for bad parameters.
        """
        controller = self.registry.get(job_type)
        try:
            params = controller.parameters.model_validate(raw_parameters)
        except ValidationError as exc:
            raise InvalidParameters(
                f"invalid parameters for {job_type}: {_first_error(exc)}",
                [dict(e) for e in exc.errors(include_url=False, include_context=False)],
            ) from exc
        job_id = job_id_for(job_type, params)
        created = self.jobs.submit(
            job_id,
            job_type,
            params.model_dump(mode="json"),
            [stage.name for stage in controller.stages[: controller.stage_count(params)]],
            actor=actor,
        )
        job = self.jobs.get(job_id)
        if job.dispatched_at is None and job.status is JobStatus.QUEUED:
            # A new job, or one whose first send was lost: (re)sending is harmless.
            self.driver.send_stage(job_id, job.stage)
            job = self.jobs.get(job_id)
        return Submission(job, created)

    def handle_job_message(self, msg: JobQueueMessage) -> None:
        """Build and dispatch the stage the message names."""
        self.driver.process_stage(msg)

    def handle_task_message(self, msg: TaskQueueMessage) -> None:
        """Run the tasks the message names."""
        self.runner.run_message(msg)

    def record_poison(
        self,
        queue_name: str,
        message_id: str,
        body: str,
        dequeue_count: int,
        reason: str,
        model: type[JobQueueMessage] | type[TaskQueueMessage],
    ) -> None:
        """Record a message that cannot be processed, and fail what it names so nothing waits."""
        try:
            msg: JobQueueMessage | TaskQueueMessage | None = model.model_validate_json(body)
        except ValidationError as exc:
            msg, reason = None, f"{reason}: {_first_error(exc)}"
        job_id = msg.job_id if msg else None
        task_ids = msg.task_ids if isinstance(msg, TaskQueueMessage) else []
        recorded = self.poison.record(
            queue_name, message_id, body, dequeue_count, reason, job_id, task_ids
        )
        log.error("poison message %s on %s: %s", message_id, queue_name, reason)
        if recorded and isinstance(msg, TaskQueueMessage):
            self._fail_tasks(msg, reason)
        elif recorded and isinstance(msg, JobQueueMessage):
            error = {"message": f"job message for stage {msg.stage} is poison: {reason}"}
            self.jobs.fail(msg.job_id, error, "poison", reason)

    def _fail_tasks(self, msg: TaskQueueMessage, reason: str) -> None:
        error = TaskError(type="PoisonMessage", message=reason, attempt=0, permanent=True)
        last = False
        for task_id in msg.task_ids:
            last |= self.tasks.fail_unclaimed(task_id, error, "poison", reason).is_last_task
        if last:
            self.driver.finish_stage(msg.job_id, msg.stage, actor="poison")

    def cancel(self, job_id: JobId, actor: str, reason: str) -> tuple[bool, JobStatus]:
        """Cancel an unfinished job; its queued tasks will find nothing to claim."""
        return self.jobs.cancel(job_id, actor, reason)

    def repair_stalled_stages(self, grace: timedelta = STALL_GRACE) -> int:
        """Leave every stage whose last task ended without the stage advancing; return how many."""
        stalled = self.jobs.stalled_stages(grace)
        for job_id, stage in stalled:
            log.warning("stage %d of job %s ended but never advanced: advancing", stage, job_id)
            self.driver.finish_stage(job_id, stage, actor="janitor")
        return len(stalled)


M = TypeVar("M", JobQueueMessage, TaskQueueMessage)


def parse_message(model: type[M], body: bytes) -> M:
    """Parse a queue message body, or raise ContractViolation naming what is wrong."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ContractViolation(f"malformed {model.__name__}: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
