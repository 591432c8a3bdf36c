"""Crash points for the chaos tests: a process told to crash at a point dies there, at once.

`LIGHTSOUT_CRASH_AT=after_submit_commit,before_advance` makes the process exit with code 86
the first time it reaches either point, as a kill -9 would: no clean-up runs, nothing is
flushed. Unset (always, in production), each point costs one dictionary lookup.

`LIGHTSOUT_REFUSE_SENDS_WHILE=<path>` makes every queue send fail as an unreachable queue
service does while that file exists (receives go on): see RefusingSends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from controllers.ports import JanitorQueues
from schemas.exceptions import QueueUnavailable
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.queued import RawMessage

log = logging.getLogger(__name__)
CRASH_EXIT_CODE = 86
REFUSE_SENDS_ENV = "LIGHTSOUT_REFUSE_SENDS_WHILE"

CrashPoint = Literal[
    "after_submit_commit",  # the job row is committed, its first stage message not sent
    "after_stage_commit",  # a stage's task rows are committed, no task message sent
    "before_advance",  # the last task is counted off, the stage not yet left
    "while_entering_stage",  # the stage was left; the next one not yet built nor sent
    "before_batched_send",  # submissions answered 202, their stage-1 messages not sent
    "before_local_claim",  # a stage's first message handed to a local thread, not claimed
    "between_stage_parts",  # a stage started with its first message's tasks, the rest uncreated
]


def crash_point(point: CrashPoint) -> None:
    """Exit the process here if LIGHTSOUT_CRASH_AT names `point`."""
    if point in os.environ.get("LIGHTSOUT_CRASH_AT", "").split(","):
        log.critical("crash point %s reached: exiting with %d", point, CRASH_EXIT_CODE)
        os._exit(CRASH_EXIT_CODE)


@dataclass
class RefusingSends:
    """The queues, refusing every send while the file `switch` exists (chaos tests only)."""

    queues: JanitorQueues
    switch: Path

    def _check(self) -> None:
        if self.switch.exists():
            raise QueueUnavailable(f"send message: refused while {self.switch} exists")

    def send_job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None:
        self._check()
        self.queues.send_job(msg, delay)

    def send_tasks(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]:
        self._check()
        return self.queues.send_tasks(msgs, delay)

    def send_raw(self, queue: str, text: str, delay: timedelta | None = None) -> None:
        self._check()
        self.queues.send_raw(queue, text, delay)

    @property
    def jobs_queue(self) -> str:
        return self.queues.jobs_queue

    @property
    def tasks_queue(self) -> str:
        return self.queues.tasks_queue

    @property
    def task_queues(self) -> tuple[str, ...]:
        return self.queues.task_queues

    @property
    def jobs_poison_queue(self) -> str:
        return self.queues.jobs_poison_queue

    @property
    def tasks_poison_queue(self) -> str:
        return self.queues.tasks_poison_queue

    @property
    def task_poison_queues(self) -> tuple[str, ...]:
        return self.queues.task_poison_queues

    @property
    def encoding(self) -> str:
        return self.queues.encoding

    def approximate_counts(self) -> dict[str, int]:
        return self.queues.approximate_counts()

    def oldest_visible(self, queue: str) -> datetime | None:
        return self.queues.oldest_visible(queue)

    def receive_raw(
        self, queue: str, n: int = 32, lease: timedelta = timedelta(minutes=1)
    ) -> list[RawMessage]:
        return self.queues.receive_raw(queue, n, lease)

    def delete_raw(self, queue: str, message: RawMessage) -> None:
        self.queues.delete_raw(queue, message)


def with_injected_faults(queues: JanitorQueues) -> JanitorQueues:
    """Return the queues, wrapped in RefusingSends when its environment variable asks."""
    switch = os.environ.get(REFUSE_SENDS_ENV)
    return RefusingSends(queues, Path(switch)) if switch else queues
