"""Per-task progress: a running attempt reports it, the job's progress sums it up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controllers.ports import TaskStore
from schemas.exceptions import LightsoutError
from schemas.ids import TaskId
from schemas.records import StageRecord
from schemas.status import StageStatus

log = logging.getLogger(__name__)
MIN_INTERVAL_S = 1.0
MAX_MESSAGE_CHARS = 500


@dataclass
class ProgressReport:
    """Write a task's progress at most once a second: a handler may call it in a hot loop.

    A report dropped by the throttle is never needed later: once the attempt ends, the
    stage's counters count the task whole.
    """

    tasks: TaskStore
    task_id: TaskId
    attempt: int
    min_interval_s: float = MIN_INTERVAL_S
    _last: float = field(default=float("-inf"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __call__(self, fraction: float, message: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.min_interval_s and fraction < 1.0:
                return
            self._last = now
        try:
            self.tasks.report_progress(
                self.task_id, self.attempt, fraction, message[:MAX_MESSAGE_CHARS]
            )
        except LightsoutError as exc:
            # Progress is advisory: losing a report must never fail the task.
            log.warning("progress of %s not recorded: %s", self.task_id, exc)


def stage_fraction(stage: StageRecord, running: float) -> float:
    """Return how far a stage is: ended tasks count whole, running ones by their reports."""
    if stage.status is StageStatus.PENDING:
        return 0.0
    if stage.status is not StageStatus.PROCESSING or stage.task_count == 0:
        return 1.0
    ended = stage.task_count - stage.remaining
    return min(1.0, (ended + running) / stage.task_count)


def job_fraction(
    stages: Sequence[StageRecord], running: Mapping[int, float], total_stages: int
) -> float:
    """Return how far a job is: the mean of its stages' fractions."""
    done = sum(stage_fraction(s, running.get(s.stage, 0.0)) for s in stages)
    return round(done / max(total_stages, 1), 4)
