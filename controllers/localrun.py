"""The process that builds a stage runs the stage's first message itself, without a poll.

A stage's task messages wait in the queue until a host polls it, which costs up to
`maxPollingInterval` between one stage's last task and the next stage's first. The
process that has just created a stage's tasks hands the first message's worth to a
thread of its own instead of sending it, and sends the rest. Nothing depends on that
thread: until it claims the tasks they are queued with no message sent, which the
janitor's sweeper sends once `LIGHTSOUT_SWEEP_GRACE_S` has passed (a process that dies
in between, crash point `before_local_claim`, leaves nothing hanging); once claimed, they
are a claim like any other, kept by its heartbeat and reaped if the process dies. A
process with every slot busy sends the first message like the rest.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from controllers.faults import crash_point
from schemas.messages import TaskQueueMessage

log = logging.getLogger(__name__)


class LocalRuns:
    """Run task messages on this process's own threads, at most `slots` at a time."""

    def __init__(self, run: Callable[[TaskQueueMessage], None], slots: int) -> None:
        self._run = run
        self._free = threading.BoundedSemaphore(slots)
        self._threads = ThreadPoolExecutor(slots, "local-run")
        self._lock = threading.Lock()
        self._running: set[Future[None]] = set()

    def offer(self, msg: TaskQueueMessage) -> bool:
        """Start running `msg` here and return True, or return False when every slot is busy."""
        if not self._free.acquire(blocking=False):
            return False
        try:
            # In a copy of this context: the run's log lines and spans name the stage.
            future = self._threads.submit(contextvars.copy_context().run, self._guarded, msg)
        except RuntimeError:  # shutting down
            self._free.release()
            return False
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._forget)
        return True

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._running.discard(future)

    def drain(self) -> None:
        """Wait until no run is in flight here, runs they started included."""
        while True:
            with self._lock:
                running = set(self._running)
            if not running:
                return
            wait(running)

    def _guarded(self, msg: TaskQueueMessage) -> None:
        try:
            crash_point("before_local_claim")
            self._run(msg)
        except Exception:  # not lost: unclaimed tasks go to the sweeper, claimed ones are reaped
            log.warning(
                "running the first %d tasks of job %s stage %d here failed",
                len(msg.task_ids),
                msg.job_id,
                msg.stage,
                exc_info=True,
            )
        finally:
            self._free.release()

    def close(self) -> None:
        """Take no more runs, and wait for those in flight and those they started."""
        self.drain()
        self._threads.shutdown(wait=True)
