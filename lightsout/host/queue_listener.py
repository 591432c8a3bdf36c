"""Poll one queue for one function: batches, back-off, leases and a clean stop."""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import replace
from datetime import timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from azstorage import POISON_SUFFIX, ClientOptions, ensure_queue, queue_client
from lightsout.host.backoff import Backoff
from lightsout.host.discovery import QueueFunction
from lightsout.host.hostjson import MAX_BATCH_SIZE, QueuesOptions
from lightsout.host.invoke import Invoker
from lightsout.host.queue_messages import Lease, MessageHandler
from lightsout.host.workers import WorkerPool

log = logging.getLogger(__name__)
MIN_POLL_SECONDS = 0.1
DEFAULT_LEASE = timedelta(minutes=10)  # the Functions host's own visibility while running
# Few, short retries: the poll loop has its own back-off and must notice a stop soon.
CLIENT_OPTIONS = ClientOptions(
    retries=1, backoff_s=1, jitter_s=1, connect_timeout_s=10, read_timeout_s=30, pool_size=4
)


class QueueListener:
    """Receive up to batchSize messages, again whenever in-flight drops to newBatchThreshold.

    At most `concurrency` messages are in flight (default batchSize + newBatchThreshold).
    """

    def __init__(
        self,
        spec: QueueFunction,
        options: QueuesOptions,
        invoker: Invoker,
        *,
        concurrency: int | None = None,
        lease_time: timedelta = DEFAULT_LEASE,
        function_timeout: timedelta | None = None,
    ) -> None:
        self.spec, self.options = spec, options
        self.capacity = concurrency or options.batch_size + options.batch_threshold
        self.function_timeout = function_timeout
        # Every worker may delete or update at once, besides the poll and the lease watcher.
        pooled = replace(CLIENT_OPTIONS, pool_size=self.capacity + 2)
        self.queue: QueueClient = queue_client(spec.connection, spec.queue_name, pooled)
        poison = queue_client(spec.connection, f"{spec.queue_name}{POISON_SUFFIX}", CLIENT_OPTIONS)
        self.handler = MessageHandler(spec, options, invoker, self.queue, poison, lease_time)
        self._leases: set[Lease] = set()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._queue_ready = False
        self._pool: WorkerPool | None = None
        self._threads = [
            threading.Thread(target=self._poll, name=f"poll-{spec.name}", daemon=True),
            threading.Thread(target=self._watch, name=f"lease-{spec.name}", daemon=True),
        ]

    def start(self) -> None:
        self._pool = WorkerPool(self.capacity, f"queue-{self.spec.name}")
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop receiving; messages already received keep running."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait for in-flight messages to finish; False if some still run after `timeout`."""
        with self._changed:
            done = self._changed.wait_for(lambda: not self._leases, timeout)
        # Leases of functions still running are no longer renewed: their messages
        # become visible again when the lease ends and are delivered once more.
        self._closed.set()
        if self._pool is not None:
            self._pool.close()
        return done

    def _poll(self) -> None:
        backoff = Backoff(MIN_POLL_SECONDS, self.options.max_polling_interval.total_seconds())
        failing = False
        while (wanted := self._wait_for_room()) > 0:
            try:
                messages = self._receive(wanted)
            except Exception as exc:  # no failure may end the polling, only a stop
                # Deleted while we ran: create it again on the next poll.
                self._queue_ready &= not isinstance(exc, ResourceNotFoundError)
                if not failing:
                    log.warning(
                        "polling queue '%s' failed, retrying: %s",
                        self.spec.queue_name,
                        exc,
                        exc_info=not isinstance(exc, AzureError),
                    )
                failing = True
                self._stopping.wait(backoff.next())
                continue
            if failing:
                log.info("queue '%s' is reachable again", self.spec.queue_name)
                failing = False
            if messages:
                backoff.reset()
                self._dispatch(messages)
            else:
                self._stopping.wait(backoff.next())

    def _wait_for_room(self) -> int:
        """Block until a new batch may be fetched; return its size, or 0 when stopping."""

        def room() -> bool:
            n = len(self._leases)
            return n <= self.options.batch_threshold and n < self.capacity

        with self._changed:
            self._changed.wait_for(lambda: self._stopping.is_set() or room())
            if self._stopping.is_set():
                return 0
            return min(self.options.batch_size, self.capacity - len(self._leases), MAX_BATCH_SIZE)

    def _receive(self, count: int) -> list[QueueMessage]:
        if not self._queue_ready:
            ensure_queue(self.queue)
            self._queue_ready = True
        pages = self.queue.receive_messages(
            messages_per_page=count,
            max_messages=count,
            visibility_timeout=self.handler.lease_seconds,
        ).by_page()
        return list(next(pages, []))

    def _dispatch(self, messages: list[QueueMessage]) -> None:
        assert self._pool is not None, "start() the listener first"
        for message in messages:
            lease = self.handler.lease(message)
            with self._changed:
                self._leases.add(lease)
            self._pool.submit(functools.partial(self._run, lease))

    def _run(self, lease: Lease) -> None:
        try:
            self.handler.handle(lease)
        finally:
            with self._changed:
                self._leases.discard(lease)
                self._changed.notify_all()

    def _watch(self) -> None:
        """Renew leases of long-running functions and enforce functionTimeout."""
        tick = min(1.0, self.handler.lease_seconds / 4)
        while not self._closed.wait(tick):
            with self._changed:
                leases = [lease for lease in self._leases if not lease.finished]
            try:
                self._tend(leases)
            except Exception:  # the watcher must keep watching
                log.exception("tending the leases on '%s' failed", self.spec.queue_name)

    def _tend(self, leases: list[Lease]) -> None:
        now, limit = time.monotonic(), self.function_timeout
        for lease in leases:
            if limit is not None and lease.ran_longer_than(limit, now):
                self.handler.time_out(lease, limit)
            elif now >= lease.renew_at:
                self.handler.renew(lease)
