"""Send the first stage of submitted jobs in batches, off the request path.

Azurite sends a few hundred messages a second, so a submission that waits for its own
job message can never answer 1,000 a second. With a dispatcher, a submission commits
its job and answers; this thread sends the stage-1 job messages of everything
submitted meanwhile (several sends at once) and marks them sent in one statement. A
202 still means committed: if the process dies before the send, the job's outbox
marker is unset and the sweeper sends the message after its grace period. One job
message names up to MAX_JOBS_PER_MESSAGE jobs (Engine.handle_job_message).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from controllers.faults import crash_point
from controllers.ports import MessageBus
from schemas.ids import JobId
from schemas.messages import MAX_JOBS_PER_MESSAGE, JobQueueMessage

log = logging.getLogger(__name__)
MAX_BATCH = 500
SENDERS = 16
# Under load (the previous batch was sent less than BUSY_S ago) the dispatcher waits up
# to LINGER_S for a message's worth of jobs before it sends: submissions that commit
# together (group commit) then share one message instead of trickling out a few at a
# time. A job submitted to an idle dispatcher is sent at once.
LINGER_S = 0.05
BUSY_S = 0.1


class DispatchMarks(Protocol):
    def mark_many_dispatched(self, job_ids: Sequence[JobId], stage: int) -> None: ...


class BatchDispatcher:
    """A background sender of stage-1 job messages; `enqueue` never waits for a send."""

    def __init__(
        self,
        bus: MessageBus,
        marks: DispatchMarks,
        senders: int = SENDERS,
        linger_s: float = LINGER_S,
    ) -> None:
        self._bus, self._marks, self._linger_s = bus, marks, linger_s
        self._last_sent = -BUSY_S  # time.monotonic() when the previous batch was sent
        # Each job with the context it was submitted in: its message carries that trace.
        self._pending: list[tuple[JobId, contextvars.Context]] = []
        self._changed = threading.Condition()
        self._busy = False
        self._senders = ThreadPoolExecutor(senders, thread_name_prefix="dispatch-send")
        self._thread: threading.Thread | None = None

    def enqueue(self, job_id: JobId) -> None:
        """Have the job's stage-1 message sent soon."""
        with self._changed:
            self._pending.append((job_id, contextvars.copy_context()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
                self._thread.start()
            # The loop waits for a first job, then (lingering) for a message's worth: wake
            # it for those two, not for every submission.
            if len(self._pending) in (1, MAX_JOBS_PER_MESSAGE):
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything enqueued was sent (or failed); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending))
                if time.monotonic() - self._last_sent < BUSY_S:
                    self._changed.wait_for(
                        lambda: len(self._pending) >= MAX_JOBS_PER_MESSAGE, self._linger_s
                    )
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._busy = True
            try:
                self._send(batch)
            except Exception:  # the sweeper sends whatever this batch left unsent
                log.warning("sending %d stage-1 job messages failed", len(batch), exc_info=True)
            finally:
                with self._changed:
                    self._last_sent = time.monotonic()
                    self._busy = False
                    self._changed.notify_all()

    def _send(self, batch: list[tuple[JobId, contextvars.Context]]) -> None:
        crash_point("before_batched_send")
        contexts = dict(batch)
        unique = list(contexts)
        groups = [
            unique[i : i + MAX_JOBS_PER_MESSAGE]
            for i in range(0, len(unique), MAX_JOBS_PER_MESSAGE)
        ]
        # One message per group, sent in its first job's context (whose trace it carries).
        futures = [
            self._senders.submit(
                contexts[group[0]].run,
                self._bus.send_job,
                JobQueueMessage(job_id=group[0], stage=1, more_job_ids=group[1:]),
            )
            for group in groups
        ]
        sent = [
            job_id
            for group, f in zip(groups, futures, strict=True)
            if f.exception() is None
            for job_id in group
        ]
        if len(sent) < len(unique):
            unsent = len(unique) - len(sent)
            log.warning("%d of %d stage-1 job messages not sent", unsent, len(unique))
        if sent:
            self._marks.mark_many_dispatched(sent, 1)
