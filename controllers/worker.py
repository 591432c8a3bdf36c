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
from typing import Any

from controllers.base import BaseController, RetryPolicy, TaskContext
from controllers.faults import crash_point
from controllers.jobspecs import job_specs
from controllers.outages import while_unavailable
from controllers.ports import JobStore, MessageBus, TaskStore
from controllers.registry import Registry
from controllers.stages import StageDriver
from repositories.tasks import Finish
from schemas.exceptions import PermanentTaskError
from schemas.ids import TaskId
from schemas.messages import TaskQueueMessage
from schemas.records import Claim, TaskError
from schemas.status import TaskStatus

log = logging.getLogger(__name__)


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

    def run_message(self, msg: TaskQueueMessage) -> None:
        """Claim the message's tasks, run each on its own, and leave the stage if one was last.

        Completions are group-committed: whatever tasks have finished when the previous
        write returns go to the database together, each still fenced by its own attempt.
        """
        claims = self.tasks.claim(msg.task_ids, self.worker)
        if not claims:
            log.info("nothing to claim in message for %s stage %d", msg.job_id, msg.stage)
            return
        spec = job_specs.of(msg.job_id, self.jobs, self.registry)
        controller, params = spec.controller, spec.params
        ids = [claim.task_id for claim in claims]
        last = False
        with (
            Heartbeat(self.tasks, ids, self.worker, self.heartbeat_s),
            ThreadPoolExecutor(min(len(claims), self.concurrency), "task") as pool,
        ):
            running = {pool.submit(self._run, controller, params, claim) for claim in claims}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                finishes = [f.result() for f in done]
                ended = [f for f in finishes if f is not None]
                record = functools.partial(self.tasks.finish_many, ended)
                completions = while_unavailable(record, self.outage_wait_s)
                last |= any(c.is_last_task for c in completions)
        if last:
            crash_point("before_advance")
            self.driver.finish_stage(msg.job_id, msg.stage)

    def _run(self, controller: BaseController[Any], params: Any, claim: Claim) -> Finish | None:
        ctx = TaskContext(
            job_id=claim.job_id,
            task_id=claim.task_id,
            stage=claim.stage,
            index=claim.task_index,
            attempt=claim.attempt,
            max_attempts=claim.max_attempts,
            params=params,
            task=claim.parameters,
        )
        try:
            result = _json_object(controller.stage(claim.stage).run(ctx))
        except Exception as exc:
            return self._failed(controller, claim, task_error(exc, claim.attempt))
        return Finish(claim.task_id, claim.attempt, TaskStatus.COMPLETED, result=result)

    def _failed(
        self, controller: BaseController[Any], claim: Claim, error: TaskError
    ) -> Finish | None:
        """Return the task's failure when it is final; otherwise schedule its next attempt."""
        if error.permanent or claim.attempt >= claim.max_attempts:
            log.warning(
                "task %s failed for good on attempt %d: %s",
                claim.task_id,
                claim.attempt,
                error.message,
            )
            return Finish(claim.task_id, claim.attempt, TaskStatus.FAILED, error=error)
        delay = backoff(controller.retry, claim.attempt)
        if self.tasks.retry(claim.task_id, claim.attempt, error, delay):
            retry = TaskQueueMessage(
                job_id=claim.job_id, stage=claim.stage, task_ids=[claim.task_id]
            )
            self.bus.send_tasks([retry], delay)
            self.tasks.mark_dispatched([claim.task_id])
        return None


def _json_object(value: object) -> dict[str, Any]:
    """Return a handler's result if it is a JSON object, else raise naming what it was."""
    if not isinstance(value, dict):
        raise PermanentTaskError(f"task handler returned {type(value).__name__}, not a dict")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"task result is not JSON: {exc}") from exc
    return value
