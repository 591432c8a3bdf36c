"""The stage driver: build and dispatch a stage, and leave it once its last task ends."""

from __future__ import annotations

import contextlib
import logging
import traceback
import uuid
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from controllers.base import (
    AggregateContext,
    BaseController,
    BuildContext,
    FinalizeContext,
    packing_for,
)
from controllers.faults import crash_point
from controllers.limits import capped_tasks
from controllers.localrun import LocalRuns
from controllers.ports import JobStore, MessageBus, TaskStore
from controllers.registry import Registry
from controllers.tracing import span, traced
from controllers.transitions import enter_stage
from schemas.exceptions import DatabaseError, QueueError
from schemas.ids import JobId, TaskId, make_task_id
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import JobRecord, Json, StageRecord, TaskRecord
from schemas.results import MAX_FAILED_IDS, StageResultContract
from schemas.status import JobStatus, StageStatus, TaskStatus
from schemas.work import NewTask

log = logging.getLogger(__name__)
ERRORS_IN_JOB_ERROR = 20
# Messages sent between two renewals of the dispatch lease (and two outbox marks).
DISPATCH_CHUNK = 256


class UserCodeError(Exception):
    """A job type's build, aggregate or finalize step raised."""

    def __init__(self, phase: str, stage: int, cause: BaseException) -> None:
        super().__init__(f"{phase} of stage {stage} raised {type(cause).__name__}: {cause}")
        self.phase, self.stage, self.cause = phase, stage, cause

    def as_error(self) -> Json:
        return {
            "message": str(self),
            "phase": self.phase,
            "stage": self.stage,
            "type": type(self.cause).__name__,
            "traceback": "".join(traceback.format_exception(self.cause)),
        }


class NondeterministicBuild(Exception):
    """A stage's build, run again, made another number of tasks than the first time."""

    def __init__(self, row: StageRecord, made: int) -> None:
        super().__init__(
            f"stage {row.stage} was started with {row.task_count} tasks, but building it again"
            f" made {made}: a stage's build must make the same tasks each time"
        )


@dataclass
class StageDriver:
    jobs: JobStore
    tasks: TaskStore
    bus: MessageBus
    registry: Registry
    holder: str = "engine"
    dispatch_lease: timedelta = timedelta(seconds=60)
    # Runs a new stage's first message in this process (None: every message is sent).
    local: LocalRuns | None = None

    def process_stage(
        self, msg: JobQueueMessage, holder: str | None = None, entered: JobRecord | None = None
    ) -> None:
        """Build the stage's tasks once, then send every task message not yet sent.

        `holder`: the dispatch lease the caller already holds on the stage (enter_stage).
        `entered`: the job as the caller's own advance into the stage left it (leave_stage).
        """
        job = entered or self.jobs.get(msg.job_id)
        if job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING) or job.stage != msg.stage:
            log.info(
                "job %s is %s at stage %d; message for stage %d ignored",
                job.job_id,
                job.status,
                job.stage,
                msg.stage,
            )
            return
        controller = self.registry.get(job.job_type)
        per_message = controller.stage(msg.stage).tasks_per_message
        # A stage just advanced into is pending: no stage starts before its job reaches it.
        # Should another process start it meanwhile, start_stage finds it started.
        row = None if entered else self.jobs.stage(job.job_id, msg.stage)
        if row is not None and row.status is not StageStatus.PENDING:
            if not self._held(job.job_id, msg.stage):
                if row.status is StageStatus.PROCESSING and row.uncreated:
                    self._create_rest(controller, job, row, holder)
                self._go_on(row, per_message, holder)
            return
        specs = self._built_unless_held(controller, job, msg.stage)
        if specs is None:
            return
        first = self._first_message_size(per_message, len(specs))
        if not self.tasks.start_stage(job.job_id, msg.stage, specs, first):
            self._go_on(self.jobs.stage(job.job_id, msg.stage), per_message, holder)
            return
        crash_point("after_stage_commit")
        here = self._run_first_here(job.job_id, msg.stage, first)
        if first < len(specs):
            crash_point("between_stage_parts")
            self._create_the_rest(job.job_id, msg.stage, specs, holder)
        # Just started here: processing with every task remaining (a cancel since is found
        # by the dispatch lease, which a stage that is not processing no longer gives).
        if not specs:
            self.leave_stage(job.job_id, msg.stage)
            return
        self.dispatch(job.job_id, msg.stage, per_message, holder, here)

    def _first_message_size(self, per_message: int, count: int) -> int:
        """How many tasks the new stage starts with: its first message's when run here.

        Those are created in the stage's first transaction, to be claimed by the local run
        while the rest are created in a second one (sql/0011); with no local run, all at once.
        """
        if self.local is None or count == 0:
            return count
        return min(count, packing_for(per_message, count))

    def _create_rest(
        self, controller: BaseController[Any], job: JobRecord, row: StageRecord, holder: str | None
    ) -> None:
        """Create the tasks that the process which started the stage left uncreated (it died).

        The stage is built again; its tasks are known by position, so the build must make
        as many as the first time, or the job fails naming both counts.
        """
        try:
            with span("stage build", job_id=job.job_id, stage=row.stage):
                specs = self._build(controller, job, row.stage)
            if len(specs) != row.task_count:
                raise UserCodeError("build", row.stage, NondeterministicBuild(row, len(specs)))
        except UserCodeError as exc:
            self.jobs.fail(job.job_id, exc.as_error(), "engine", str(exc))
            return
        created = self._create_the_rest(job.job_id, row.stage, specs, holder)
        log.info("job %s stage %d: created %d tasks left uncreated", job.job_id, row.stage, created)

    def _create_the_rest(
        self, job_id: JobId, stage: int, specs: list[NewTask], holder: str | None
    ) -> int:
        """Create the stage's uncreated tasks; then its stage message is done (sql/0011).

        With `holder` the caller (enter_stage) marks the message done once it dispatched.
        """
        created = self.tasks.create_rest(job_id, stage, specs)
        if holder is None:
            self.jobs.mark_dispatched(job_id, stage)
        return created

    def _go_on(self, row: StageRecord, per_message: int, holder: str | None) -> None:
        """Send the unsent tasks of a stage started before, or leave it if none remains."""
        if row.status is not StageStatus.PROCESSING:
            return
        if row.remaining == 0:
            self.leave_stage(row.job_id, row.stage)
            return
        self.dispatch(row.job_id, row.stage, per_message, holder)

    def _built_unless_held(
        self, controller: BaseController[Any], job: JobRecord, stage: int
    ) -> list[NewTask] | None:
        """Return the stage's tasks; None if its job type is paused (held) or its build raised.

        The pause is checked after the build, not before it: the first message of the stage
        runs here without a check of its own (TaskRunner.run_message), and between this check
        and its claim there is only start_stage's transaction, no user code, no reading of the
        previous stage's results. A pause that commits in that gap meets tasks being created,
        as one meets a worker between its own check and its claim. A paused type's build is
        wasted, not harmful: building a stage again is what a redelivery does.
        """
        try:
            with span("stage build", job_id=job.job_id, stage=stage):
                specs = self._build(controller, job, stage)
        except UserCodeError as exc:
            if not self._held(job.job_id, stage):  # while paused the job waits, as it did
                self.jobs.fail(job.job_id, exc.as_error(), "engine", str(exc))
            return None
        return None if self._held(job.job_id, stage) else specs

    def _held(self, job_id: JobId, stage: int) -> bool:
        """Hold the stage's start if its job type is paused; return whether it is."""
        if self.jobs.hold_if_paused(job_id, stage):
            log.info("job %s stage %d held: its job type is paused", job_id, stage)
            return True
        return False

    def _run_first_here(self, job_id: JobId, stage: int, size: int) -> set[TaskId]:
        """Hand the new stage's first `size` tasks to a local thread; return the tasks.

        Those tasks are not sent: see controllers/localrun.py for what covers them.
        """
        if self.local is None or size == 0:
            return set()
        first = TaskQueueMessage(
            job_id=job_id,
            stage=stage,
            task_ids=[make_task_id(job_id, stage, i) for i in range(size)],
        )
        return set(first.task_ids) if self.local.offer(first) else set()

    def _build(self, controller: BaseController[Any], job: JobRecord, stage: int) -> list[NewTask]:
        declared = controller.stage(stage)
        ctx = BuildContext(
            job_id=job.job_id,
            stage=stage,
            params=controller.parameters.model_validate(job.parameters),
            stage_results=_stage_results(job),
            previous_pages=lambda: self._pages(job.job_id, stage - 1),
        )
        try:
            specs = [dict(spec) for spec in capped_tasks(stage, declared.build(ctx))]
        except Exception as exc:
            raise UserCodeError("build", stage, exc) from exc
        attempts = controller.max_attempts(stage)
        return [NewTask(declared.name, spec, attempts) for spec in specs]

    def _pages(self, job_id: JobId, stage: int) -> Iterator[list[tuple[int, Json | None]]]:
        return self.tasks.results(job_id, stage) if stage >= 1 else iter(())

    @traced("dispatch")
    def dispatch(
        self,
        job_id: JobId,
        stage: int,
        per_message: int,
        holder: str | None = None,
        here: Set[TaskId] = frozenset(),
    ) -> int:
        """Send the stage's unsent tasks, `per_message` to a message; mark what was sent.

        Tasks in `here` are left out: a local thread of this process runs them.

        Under the stage's dispatch lease, renewed between chunks: the janitor's sweeper
        leaves a stage alone while its dispatcher is alive, and takes over once it stopped.
        Returns how many tasks this call sent (0 when another dispatcher holds the stage).
        With `holder`, the caller holds the lease already and releases it itself.
        """
        own = holder is None
        lease = holder or self.new_holder()
        if not self.jobs.take_dispatch_lease(job_id, stage, lease, self.dispatch_lease):
            log.info("stage %d of job %s is being dispatched elsewhere", stage, job_id)
            return 0
        try:
            return self._send_unsent(job_id, stage, per_message, lease, here)
        finally:
            if own:
                self.release(job_id, stage, lease)

    def new_holder(self) -> str:
        """A dispatch lease holder of its own for one call."""
        # One holder per call: two threads of one host dispatching a duplicated job message
        # must not share a lease.
        return f"{self.holder}/{uuid.uuid4().hex[:8]}"

    def release(self, job_id: JobId, stage: int, holder: str) -> None:
        """Give the stage's dispatch lease back, if the database answers."""
        # An expired lease frees the stage as well, if the database is down right now.
        with contextlib.suppress(DatabaseError):
            self.jobs.release_dispatch_lease(job_id, stage, holder)

    def _send_unsent(
        self, job_id: JobId, stage: int, per_message: int, holder: str, here: Set[TaskId]
    ) -> int:
        ids = [task_id for task_id in self.tasks.undispatched(job_id, stage) if task_id not in here]
        msgs = task_messages(job_id, stage, ids, per_message)
        sent = 0
        for start in range(0, len(msgs), DISPATCH_CHUNK):
            if start and not self.jobs.take_dispatch_lease(
                job_id, stage, holder, self.dispatch_lease
            ):
                log.warning("lost the dispatch lease of stage %d of job %s", stage, job_id)
                break
            sent += len(send_and_mark(self.bus, self.tasks, msgs[start : start + DISPATCH_CHUNK]))
        return sent

    @traced("fan-in")
    def leave_stage(self, job_id: JobId, stage: int, actor: str = "engine") -> bool:
        """Record the stage's result and move the job on; return whether this call did.

        A no-op (False) unless the job is at `stage` and the stage has no task remaining.
        """
        job = self.jobs.get(job_id)
        row = self.jobs.stage(job_id, stage)
        if job.status is not JobStatus.PROCESSING or job.stage != stage:
            return False
        if row.status is not StageStatus.PROCESSING or row.remaining != 0:
            return False
        controller = self.registry.get(job.job_type)
        # One read of the failed tasks serves the stage result and the job's error.
        failed = self._failed_tasks(job_id, row) if row.failed_count else []
        try:
            result = self._stage_result(controller, job, row, failed)
            if result.status is StageStatus.FAILED:
                failure = _failure(result, failed[:ERRORS_IN_JOB_ERROR])
                return self.jobs.advance(
                    job_id, result, JobStatus.FAILED, None, failure, actor
                ).advanced
            if stage == job.total_stages:
                return self._complete(controller, job, result, actor)
            advanced = self.jobs.advance(job_id, result, actor=actor).advanced
            if advanced:
                enter_stage(self, job_id, stage + 1, _advanced(job, result))
            return advanced
        except UserCodeError as exc:
            return self.jobs.fail(job_id, exc.as_error(), actor, str(exc))

    def send_stage(self, job_id: JobId, stage: int) -> None:
        """Send the job message of `stage` and record that it was sent."""
        self.bus.send_job(JobQueueMessage(job_id=job_id, stage=stage))
        self.jobs.mark_dispatched(job_id, stage)

    def _stage_result(
        self,
        controller: BaseController[Any],
        job: JobRecord,
        row: StageRecord,
        failed: list[TaskRecord],
    ) -> StageResultContract:
        declared = controller.stage(row.stage)
        ctx = AggregateContext(
            job_id=job.job_id,
            stage=row.stage,
            params=controller.parameters.model_validate(job.parameters),
            results_pages=lambda: self.tasks.results(job.job_id, row.stage),
        )
        try:
            aggregate = dict(declared.aggregate(ctx))
        except Exception as exc:
            raise UserCodeError("aggregate", row.stage, exc) from exc
        finished = datetime.now(UTC)
        return StageResultContract(
            stage=row.stage,
            name=declared.name,
            status=controller.failure_policy.stage_status(row.task_count, row.failed_count),
            task_count=row.task_count,
            completed_count=row.completed_count,
            failed_count=row.failed_count,
            started_at=row.started_at,
            finished_at=finished,
            duration_s=(finished - row.started_at).total_seconds() if row.started_at else 0.0,
            failed_task_ids=[task.task_id for task in failed],
            aggregate=aggregate,
        )

    def _failed_tasks(self, job_id: JobId, row: StageRecord) -> list[TaskRecord]:
        return self.tasks.find(job_id, row.stage, TaskStatus.FAILED, limit=MAX_FAILED_IDS).items

    def _complete(
        self,
        controller: BaseController[Any],
        job: JobRecord,
        last: StageResultContract,
        actor: str,
    ) -> bool:
        results = {**_stage_results(job), last.key: last}
        ctx = FinalizeContext(
            job_id=job.job_id,
            params=controller.parameters.model_validate(job.parameters),
            stage_results=results,
        )
        try:
            output = dict(controller.finalize(ctx))
        except Exception as exc:
            raise UserCodeError("finalize", last.stage, exc) from exc
        with_errors = any(r.status is StageStatus.COMPLETED_WITH_ERRORS for r in results.values())
        status = JobStatus.COMPLETED_WITH_ERRORS if with_errors else JobStatus.COMPLETED
        return self.jobs.advance(job.job_id, last, status, output, None, actor).advanced


def _failure(result: StageResultContract, failed: list[TaskRecord]) -> Json:
    """Return a failed job's error: the counts, the failed ids, and the first errors."""
    return {
        "message": f"stage {result.stage} ({result.name}) failed: {result.failed_count} of "
        f"{result.task_count} tasks failed",
        "stage": result.stage,
        "failed_count": result.failed_count,
        "failed_task_ids": [str(t) for t in result.failed_task_ids],
        "errors": [
            {
                "task_id": t.task_id,
                **(t.error.model_dump(exclude={"traceback"}) if t.error else {}),
            }
            for t in failed
        ],
    }


def send_and_mark(
    bus: MessageBus,
    tasks: TaskStore,
    msgs: Sequence[TaskQueueMessage],
    delay: timedelta | None = None,
) -> list[TaskId]:
    """Send task messages, then mark sent the tasks of those whose send was confirmed."""
    try:
        sent = bus.send_tasks(msgs, delay)
    except QueueError as exc:
        tasks.mark_dispatched(_task_ids(getattr(exc, "sent", ())))
        raise
    ids = _task_ids(sent)
    tasks.mark_dispatched(ids)
    return ids


def task_messages(
    job_id: JobId, stage: int, task_ids: Sequence[TaskId], per_message: int
) -> list[TaskQueueMessage]:
    """Pack a stage's task ids into messages of at most `per_message` tasks each.

    A `per_message` of AUTO_PACKING picks the size from how many tasks are sent.
    """
    per_message = packing_for(per_message, len(task_ids))
    return [
        TaskQueueMessage(job_id=job_id, stage=stage, task_ids=list(task_ids[i : i + per_message]))
        for i in range(0, len(task_ids), per_message)
    ]


def _advanced(job: JobRecord, result: StageResultContract) -> JobRecord:
    """The job as advance_job_stage leaves it once `result`'s stage, not the last, is done."""
    # What building the next stage reads of it: the stage and every stage result so far.
    results = {**job.stage_results, result.key: result.model_dump(mode="json")}
    return job.model_copy(
        update={"stage": result.stage + 1, "stage_results": results, "dispatched_at": None}
    )


def _stage_results(job: JobRecord) -> dict[str, StageResultContract]:
    return {k: StageResultContract.model_validate(v) for k, v in job.stage_results.items()}


def _task_ids(msgs: Sequence[TaskQueueMessage]) -> list[TaskId]:
    return [task_id for msg in msgs for task_id in msg.task_ids]
