"""The engine's front door: submission, the two queue messages, and poison messages."""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from controllers.base import BaseController
from controllers.dispatcher import BatchDispatcher
from controllers.faults import crash_point
from controllers.localrun import LocalRuns
from controllers.ports import JobStore, MessageBus, PoisonStore, TaskStore
from controllers.registry import Registry
from controllers.stages import StageDriver
from controllers.tracing import traced
from controllers.worker import TaskRunner
from schemas.canonical import job_id_for
from schemas.exceptions import (
    ContractViolation,
    DatabaseError,
    InvalidParameters,
    NotFound,
    QueueError,
)
from schemas.ids import JobId
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import TaskError
from schemas.status import JobStatus

log = logging.getLogger(__name__)


def default_worker_name() -> str:
    """Return host:pid, which tells operators which process claimed a task."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Submission:
    job_id: JobId
    job_type: str
    status: JobStatus
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
    heartbeat_s: float = 10.0
    outage_wait_s: float = 120.0
    dispatch_lease_s: float = 60.0
    # Threads that run a new stage's first message here (controllers/localrun.py); 0: none.
    local_runs: int = 0
    # None: a submission sends its own stage-1 message before it answers (the fakes, tests).
    dispatcher: BatchDispatcher | None = None

    def __post_init__(self) -> None:
        lease = timedelta(seconds=self.dispatch_lease_s)
        self.driver = StageDriver(
            self.jobs, self.tasks, self.bus, self.registry, self.worker, lease
        )
        self.runner = TaskRunner(
            self.jobs,
            self.tasks,
            self.bus,
            self.registry,
            self.driver,
            self.worker,
            self.task_concurrency,
            self.heartbeat_s,
            self.outage_wait_s,
        )
        if self.local_runs:
            # A local run takes a stage's first message only, right after process_stage found
            # the job type not paused (StageDriver._built_unless_held): not checked again.
            first = functools.partial(self.runner.run_message, pause_checked=True)
            self.driver.local = LocalRuns(first, self.local_runs)

    def close(self) -> None:
        """Wait for the runs started here (controllers/localrun.py) to end."""
        if self.driver.local is not None:
            self.driver.local.close()

    @traced("submit")
    def submit(
        self, job_type: str, raw_parameters: object, actor: str = "api", force: bool = False
    ) -> Submission:
        """Validate and record a job (idempotent by its canonical id) and send its first stage.

        With `force`, a job that has finished runs again under a new id naming the job it
        re-runs. Raises JobTypeError for an unknown type, InvalidParameters for bad ones.
        """
        controller = self.registry.get(job_type)
        try:
            params = controller.parameters.model_validate(raw_parameters)
        except ValidationError as exc:
            raise InvalidParameters(
                f"invalid parameters for {job_type}: {_first_error(exc)}",
                [dict(e) for e in exc.errors(include_url=False, include_context=False)],
            ) from exc
        dumped = params.model_dump(mode="json")  # once: the id hashes what the row stores
        job_id, rerun_of = job_id_for(job_type, dumped), None
        if force and self._finished(job_id):
            rerun_of, job_id = job_id, job_id_for(job_type, dumped, f"rerun:{time.time_ns()}")
        stages = [stage.name for stage in controller.stages[: controller.stage_count(params)]]
        created = self.jobs.submit(job_id, job_type, dumped, stages, rerun_of, actor)
        crash_point("after_submit_commit")
        if created:
            self._start(job_id)
            return Submission(job_id, job_type, JobStatus.QUEUED, True)
        job = self.jobs.get(job_id)
        if job.dispatched_at is None and job.status is JobStatus.QUEUED and job.stage == 1:
            # A job whose first send was lost: (re)sending is harmless.
            self._start(job_id)
        return Submission(job_id, job_type, job.status, False)

    def _start(self, job_id: JobId) -> None:
        """Send the stage-1 job message now, or have the dispatcher send it in a batch."""
        if self.dispatcher is None:
            self.driver.send_stage(job_id, 1)
        else:
            self.dispatcher.enqueue(job_id)

    def _finished(self, job_id: JobId) -> bool:
        try:
            return self.jobs.get(job_id).status not in (JobStatus.QUEUED, JobStatus.PROCESSING)
        except NotFound:
            return False

    def handle_job_message(self, msg: JobQueueMessage) -> None:
        """Build and dispatch the stage the message names, for each job it names.

        A job of a batch that fails for a reason other than an outage gets a message of its
        own, so that its redeliveries (and at worst its poison record) are its alone; an
        outage fails the whole message, whose redelivery is harmless to the jobs done.
        """
        if not msg.more_job_ids:
            self.driver.process_stage(msg)
            return
        for job_id in msg.job_ids:
            try:
                self.driver.process_stage(msg.one(job_id))
            except (DatabaseError, QueueError):
                raise
            except Exception:
                log.warning("job %s of a batch failed: sent on its own", job_id, exc_info=True)
                self.bus.send_job(msg.one(job_id))

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
        self.poison.record(queue_name, message_id, body, dequeue_count, reason, job_id, task_ids)
        log.error("poison message %s on %s: %s", message_id, queue_name, reason)
        # Failing what it names is idempotent: a redelivery after a crash here does it again.
        try:
            if isinstance(msg, TaskQueueMessage):
                self._fail_tasks(msg, reason)
            elif isinstance(msg, JobQueueMessage):
                # Only while the job is still at that stage: a stale message must not fail it.
                error = {"message": f"job message for stage {msg.stage} is poison: {reason}"}
                for job_id in msg.job_ids:
                    try:
                        self.jobs.fail(job_id, error, "poison", reason, msg.stage)
                    except NotFound:
                        log.error("poison message %s names job %s, which does not exist",
                                  message_id, job_id)  # fmt: skip
        except NotFound:
            log.error("poison message %s names a job or task that does not exist", message_id)

    def _fail_tasks(self, msg: TaskQueueMessage, reason: str) -> None:
        error = TaskError(type="PoisonMessage", message=reason, attempt=0, permanent=True)
        last = False
        for task_id in msg.task_ids:
            last |= self.tasks.fail_unclaimed(task_id, error, "poison", reason).is_last_task
        if last:
            self.driver.leave_stage(msg.job_id, msg.stage, actor="poison")

    def cancel(self, job_id: JobId, actor: str, reason: str) -> tuple[bool, JobStatus]:
        """Cancel an unfinished job; its queued tasks will find nothing to claim."""
        return self.jobs.cancel(job_id, actor, reason)

    def repair_stalled_stages(self, grace: timedelta) -> list[tuple[JobId, int]]:
        """Leave every stage whose last task ended without the stage advancing.

        Returns the stages this call moved on (another janitor may have moved the rest).
        """
        repaired = []
        for ref in self.jobs.stalled_stages(grace):
            if self.driver.leave_stage(ref.job_id, ref.stage, actor="janitor"):
                log.warning("stage %d of job %s ended but never advanced", ref.stage, ref.job_id)
                repaired.append((ref.job_id, ref.stage))
        return repaired

    def controller_of(self, job_id: JobId) -> BaseController[Any]:
        """Return the job type of a job (JobTypeError when this deployment lacks it)."""
        return self.registry.get(self.jobs.get(job_id).job_type)


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
