"""Group commit across callers: whoever writes next takes everything waiting to be written.

Every task completion of a stage holds the stage's advisory lock until its commit, so a
stage advances one commit at a time: fewer, larger commits are what make it faster
(bench/PROFILE.md). One message's threads already write together; this merges the
writes of every message a process runs at once. A caller that finds no write under way
writes at once (no added wait); one that finds a write under way waits for it and then
writes, in one call, its own batch and all that queued up meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Request(Generic[T, R]):
    items: Sequence[T]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    result: list[R] | None = None
    error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Merge concurrent calls of `write(items) -> one result per item, in order`."""

    def __init__(self, write: Callable[[Sequence[T]], list[R]], max_items: int = 2000) -> None:
        self._write, self._max = write, max_items
        self._lock = threading.Lock()
        self._queue: list[_Request[T, R]] = []
        self._writing = False

    def __call__(self, items: Sequence[T]) -> list[R]:
        request: _Request[T, R] = _Request(items)
        with self._lock:
            self._queue.append(request)
            if not self._writing:
                self._writing = request.lead = True
        while True:
            if request.lead:
                request.lead = False
                self._lead()
            else:
                request.done.wait()
                request.done.clear()
            if request.error is not None:
                raise request.error
            if request.result is not None:
                return request.result

    def _lead(self) -> None:
        """Write what is queued (up to max_items), then hand the lead to the next caller."""
        with self._lock:
            batch: list[_Request[T, R]] = []
            taken = 0
            while self._queue and (not batch or taken + len(self._queue[0].items) <= self._max):
                batch.append(self._queue.pop(0))
                taken += len(batch[-1].items)
        try:
            self._write_batch(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].done.set()
                else:
                    self._writing = False
            for request in batch:
                request.done.set()

    def _write_batch(self, batch: list[_Request[T, R]]) -> None:
        try:
            results = self._write([item for request in batch for item in request.items])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            # One caller's bad item must not fail the others: write each batch on its own.
            for request in batch:
                self._write_batch([request])
            return
        start = 0
        for request in batch:
            request.result = results[start : start + len(request.items)]
            start += len(request.items)
