"""Run the tasks of one task message: claim, run, complete (or retry), fan in."""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeAlias

from controllers.base import BaseController, RetryPolicy, TaskContext
from controllers.faults import crash_point
from controllers.jobspecs import job_specs
from controllers.limits import checked_result
from controllers.outages import while_unavailable
from controllers.ports import JobStore, MessageBus, TaskStore
from controllers.progress import ProgressReport
from controllers.registry import Registry
from controllers.stages import StageDriver
from controllers.tracing import in_task_span
from schemas.exceptions import DatabaseError, PermanentTaskError, QueueError
from schemas.ids import TaskId
from schemas.messages import TaskQueueMessage
from schemas.records import Claim, Json, TaskError
from schemas.status import TaskStatus
from schemas.work import TaskEnd, TaskRetry

log = logging.getLogger(__name__)
# What running one claimed attempt comes to; the message loop records each of them.
Outcome: TypeAlias = TaskEnd | TaskRetry


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> timedelta:
    """Return the delay before the next attempt: exponential, jittered in its upper half."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return timedelta(seconds=(rng or random).uniform(ceiling / 2, ceiling))


def task_error(exc: BaseException, attempt: int) -> TaskError:
    """Return the record of an attempt that raised `exc`."""
    return TaskError(
        type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc))[-8000:],
        attempt=attempt,
        permanent=isinstance(exc, PermanentTaskError),
    )


class Heartbeat:
    """Refresh the claimed tasks' heartbeat while they run, so the janitor leaves them be."""

    def __init__(
        self, tasks: TaskStore, task_ids: Sequence[TaskId], worker: str, interval_s: float
    ) -> None:
        self._tasks, self._ids, self._worker = tasks, list(task_ids), worker
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tasks.heartbeat(self._ids, self._worker)
            except Exception:
                log.warning("heartbeat failed for %d tasks", len(self._ids), exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class TaskRunner:
    jobs: JobStore
    tasks: TaskStore
    bus: MessageBus
    registry: Registry
    driver: StageDriver
    worker: str
    concurrency: int = 8
    heartbeat_s: float = 10.0
    outage_wait_s: float = 120.0

    def run_message(self, msg: TaskQueueMessage, pause_checked: bool = False) -> None:
        """Claim the message's tasks, run each on its own, and leave the stage if one was last.

        Ends are group-committed: whatever tasks have ended when the previous write returns
        go to the database together, each still fenced by its own attempt. Every outcome is
        recorded by this loop, under the same outage handling; one that cannot be recorded
        never discards another's. `pause_checked`: the caller has just found the job type
        not paused (a new stage's first message, run where it was built).
        """
        if not pause_checked and self.tasks.hold_if_paused(msg.job_id, msg.task_ids):
            log.info("job %s stage %d: its job type is paused; tasks held", msg.job_id, msg.stage)
            return
        claims = self.tasks.claim(msg.task_ids, self.worker)
        if claims:
            self._run_claims(msg, claims)
        else:
            log.info("nothing to claim in message for %s stage %d", msg.job_id, msg.stage)
        if len(claims) < len(set(msg.task_ids)):
            self._defer_early(msg, {claim.task_id for claim in claims})

    def _run_claims(self, msg: TaskQueueMessage, claims: list[Claim]) -> None:
        spec = job_specs.of(msg.job_id, self.jobs, self.registry)
        controller, params = spec.controller, spec.params
        ids = [claim.task_id for claim in claims]
        last, unrecorded = False, list[TaskEnd]()
        with (
            Heartbeat(self.tasks, ids, self.worker, self.heartbeat_s),
            ThreadPoolExecutor(min(len(claims), self.concurrency), "task") as pool,
        ):
            # Each task runs in a copy of this context, in its own span: its log lines name it.
            running = {
                pool.submit(in_task_span(claim), self._run, controller, params, claim)
                for claim in claims
            }
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                outcomes = [f.result() for f in done]
                ends = unrecorded + [o for o in outcomes if isinstance(o, TaskEnd)]
                try:
                    last |= self._record(ends)
                    unrecorded = []
                except (DatabaseError, QueueError):
                    # Kept for the next round: the siblings still running must not wait on it.
                    log.warning("could not record %d task ends yet", len(ends), exc_info=True)
                    unrecorded = ends
                for retry in (o for o in outcomes if isinstance(o, TaskRetry)):
                    self._schedule(retry)
            last |= self._record(unrecorded)
        if last:
            crash_point("before_advance")
            self.driver.leave_stage(msg.job_id, msg.stage)

    def _record(self, ends: list[TaskEnd]) -> bool:
        """Record attempts' ends; return whether one of them was its stage's last."""
        if not ends:
            return False
        record = functools.partial(self.tasks.end_many, ends)
        return any(c.is_last_task for c in while_unavailable(record, self.outage_wait_s))

    def _schedule(self, retry: TaskRetry) -> None:
        """Move the attempt to retrying and send its next delivery, marked once sent.

        If the send cannot be made, the task is retrying with no message marked sent, which
        the janitor's sweeper sends: the other tasks of the message go on regardless.
        """
        wait_s = self.outage_wait_s
        msg = TaskQueueMessage(job_id=retry.job_id, stage=retry.stage, task_ids=[retry.task_id])
        try:
            moved = functools.partial(
                self.tasks.retry, retry.task_id, retry.attempt, retry.error, retry.delay
            )
            if not while_unavailable(moved, wait_s):
                return
            while_unavailable(functools.partial(self.bus.send_tasks, [msg], retry.delay), wait_s)
            while_unavailable(functools.partial(self.tasks.mark_dispatched, msg.task_ids), wait_s)
        except (DatabaseError, QueueError):
            log.warning("retry of task %s left to the sweeper", retry.task_id, exc_info=True)

    def _defer_early(self, msg: TaskQueueMessage, claimed: set[TaskId]) -> None:
        """Send again, delayed, the tasks the message named before their backoff ended.

        An early or duplicate delivery must neither run a retry early nor use an attempt;
        this delivery then ends, and the delayed message brings the tasks back when due.
        """
        unclaimed = [task_id for task_id in msg.task_ids if task_id not in claimed]
        waiting = self.tasks.deferred(unclaimed)
        if not waiting:
            return
        delay = timedelta(seconds=max(d.delay_s for d in waiting))
        again = TaskQueueMessage(
            job_id=msg.job_id, stage=msg.stage, task_ids=[d.task_id for d in waiting]
        )
        send = functools.partial(self.bus.send_tasks, [again], delay)
        while_unavailable(send, self.outage_wait_s)
        log.info("%d tasks not due yet: sent again in %.1f s", len(waiting), delay.total_seconds())

    def _run(self, controller: BaseController[Any], params: Any, claim: Claim) -> Outcome:
        ctx = TaskContext(
            job_id=claim.job_id,
            task_id=claim.task_id,
            stage=claim.stage,
            index=claim.task_index,
            attempt=claim.attempt,
            max_attempts=claim.max_attempts,
            params=params,
            task=claim.parameters,
            report=ProgressReport(self.tasks, claim.task_id, claim.attempt),
        )
        try:
            result = checked_result(_json_object(controller.stage(claim.stage).run(ctx)))
        except Exception as exc:
            return _failed(controller, claim, task_error(exc, claim.attempt))
        return TaskEnd(claim.task_id, claim.attempt, TaskStatus.COMPLETED, result=result)


def _failed(controller: BaseController[Any], claim: Claim, error: TaskError) -> Outcome:
    """Return the task's failure when it is final; otherwise its next attempt."""
    if error.permanent or claim.attempt >= claim.max_attempts:
        log.warning(
            "task %s failed for good on attempt %d: %s", claim.task_id, claim.attempt, error.message
        )
        return TaskEnd(claim.task_id, claim.attempt, TaskStatus.FAILED, error=error)
    delay = backoff(controller.retry, claim.attempt)
    return TaskRetry(claim.task_id, claim.job_id, claim.stage, claim.attempt, error, delay)


def _json_object(value: object) -> Json:
    """Return a handler's result if it is a JSON object, else raise naming what it was."""
    if not isinstance(value, dict):
        raise PermanentTaskError(f"task handler returned {type(value).__name__}, not a dict")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"task result is not JSON: {exc}") from exc
    return value
