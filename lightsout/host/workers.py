"""A fixed pool of daemon threads, so a stuck function never keeps the process alive."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
Job = Callable[[], None]


class WorkerPool:
    """Run jobs on `size` daemon threads (concurrent.futures would join its threads at exit)."""

    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def close(self) -> None:
        """Let each thread finish its current job and end; do not wait for them."""
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a job reports its own failures; this is a last resort
                log.exception("worker job failed")
