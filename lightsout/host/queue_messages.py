"""Handle one queue message: decode, invoke, then delete, release or poison it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueClient, QueueMessage

from azstorage import POISON_SUFFIX, NotEncoded, UndecodedMessage, decode_body, ensure_queue
from lightsout.host.discovery import QueueFunction
from lightsout.host.hostjson import QueuesOptions
from lightsout.host.invoke import Invoker

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Lease:
    """A received message while the host holds it invisible to other receivers."""

    message: QueueMessage
    pop_receipt: str
    renew_at: float
    started: float | None = None
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def raw(self) -> str:
        return self.message.content or ""

    def ran_longer_than(self, limit: timedelta, now: float) -> bool:
        return self.started is not None and now - self.started > limit.total_seconds()


_Action = Callable[[Lease], None]


def function_message(
    lease: Lease, body: bytes, undecoded: NotEncoded | None = None
) -> FunctionQueueMessage:
    """The azure.functions QueueMessage the Python worker would build for this message.

    With `undecoded`, the body is the stored text and the message says why (see
    azstorage.UndecodedMessage): only for a poison queue's message that is not decodable.
    """
    m = lease.message
    fields: dict[str, Any] = {
        "id": m.id,
        "body": body,
        "dequeue_count": m.dequeue_count,
        "insertion_time": m.inserted_on,
        "expiration_time": m.expires_on,
        "time_next_visible": m.next_visible_on,
        "pop_receipt": lease.pop_receipt,
    }
    if undecoded is not None:
        return UndecodedMessage(reason=str(undecoded), **fields)
    return FunctionQueueMessage(**fields)  # type: ignore[no-untyped-call]


class MessageHandler:
    """Run a queue function for its messages and settle each message with the queue."""

    def __init__(
        self,
        spec: QueueFunction,
        options: QueuesOptions,
        invoker: Invoker,
        queue: QueueClient,
        poison: QueueClient,
        lease_time: timedelta,
    ) -> None:
        self.spec, self.options, self.invoker = spec, options, invoker
        self.queue, self.poison = queue, poison
        self.lease_seconds = int(lease_time.total_seconds())

    def lease(self, message: QueueMessage) -> Lease:
        """Start holding a freshly received message; it is renewed halfway through its lease."""
        return Lease(message, message.pop_receipt or "", time.monotonic() + self.lease_seconds / 2)

    def handle(self, lease: Lease) -> None:
        """Invoke the function for a leased message and settle the message by the outcome."""
        message = self._function_message(lease)
        if message is None:
            self._settle(lease, self._move_to_poison)
            return
        lease.started = time.monotonic()
        try:
            self.invoker.call(self.spec, message)
        except Exception:
            action = self._fail
        else:
            action = self._delete
        if not self._settle(lease, action):
            log.warning(
                "function '%s' finished message %s after its functionTimeout; "
                "the outcome is ignored",
                self.spec.name,
                lease.message.id,
            )

    def _function_message(self, lease: Lease) -> FunctionQueueMessage | None:
        """The message to call the function with; None when it goes to the poison queue as is."""
        # Delivered more often than allowed without a failure being recorded: the
        # process handling it died each time (or a lease ran out). Do not try again.
        if (lease.message.dequeue_count or 0) > self.options.max_dequeue_count:
            self._log_refusal(lease, f"was dequeued {lease.message.dequeue_count} times")
            return None
        try:
            return function_message(lease, decode_body(lease.raw, self.options.message_encoding))
        except NotEncoded as exc:
            if not self.spec.queue_name.endswith(POISON_SUFFIX):
                # Like the Functions host: moved to the poison queue unread, as it is stored.
                self._log_refusal(lease, f"is {exc}")
                return None
            # The Functions host would move it on to `<queue>-poison-poison`, where no
            # function reads it; the poison queue's function records it instead.
            log.error(
                "message %s on '%s' is %s: handed to '%s' as stored",
                lease.message.id,
                self.spec.queue_name,
                exc,
                self.spec.name,
            )
            return function_message(lease, lease.raw.encode("utf-8"), exc)

    def _log_refusal(self, lease: Lease, why: str) -> None:
        log.error(
            "message %s on '%s' %s: moved to the poison queue without calling '%s'",
            lease.message.id,
            self.spec.queue_name,
            why,
            self.spec.name,
        )

    def renew(self, lease: Lease) -> None:
        """Extend the lease of a message whose function is still running."""
        with lease.lock:
            if lease.finished:
                return
            try:
                updated = self.queue.update_message(
                    lease.message.id,
                    pop_receipt=lease.pop_receipt,
                    visibility_timeout=self.lease_seconds,
                )
            except AzureError as exc:
                log.warning(
                    "could not renew the lease of message %s on '%s': %s",
                    lease.message.id,
                    self.spec.queue_name,
                    exc,
                )
                lease.renew_at = time.monotonic() + min(10.0, self.lease_seconds / 4)
                return
            lease.pop_receipt = updated.pop_receipt or lease.pop_receipt
            lease.renew_at = time.monotonic() + self.lease_seconds / 2

    def time_out(self, lease: Lease, limit: timedelta) -> None:
        """Count a function running past functionTimeout as failed; its thread runs on."""
        if self._settle(lease, self._fail):
            log.error(
                "function '%s' exceeded functionTimeout (%s) on message %s: handled as failed",
                self.spec.name,
                limit,
                lease.message.id,
            )

    def _settle(self, lease: Lease, action: _Action) -> bool:
        """Apply `action` unless the message was settled already; False if it was."""
        with lease.lock:
            if lease.finished:
                return False
            lease.finished = True
            try:
                action(lease)
            except AzureError as exc:
                log.error(
                    "could not settle message %s on '%s' (%s); it will be delivered "
                    "again when its lease ends",
                    lease.message.id,
                    self.spec.queue_name,
                    exc,
                )
            return True

    def _delete(self, lease: Lease) -> None:
        self.queue.delete_message(lease.message.id, lease.pop_receipt)

    def _fail(self, lease: Lease) -> None:
        if (lease.message.dequeue_count or 0) >= self.options.max_dequeue_count:
            self._move_to_poison(lease)
            return
        # Visible again after visibilityTimeout: the delay before the next try.
        delay = int(self.options.visibility_timeout.total_seconds())
        log.debug(
            "message %s failed delivery %s of %s; visible again in %ss",
            lease.message.id,
            lease.message.dequeue_count,
            self.options.max_dequeue_count,
            delay,
        )
        self.queue.update_message(
            lease.message.id, pop_receipt=lease.pop_receipt, visibility_timeout=delay
        )

    def _move_to_poison(self, lease: Lease) -> None:
        try:
            self.poison.send_message(lease.raw)
        except ResourceNotFoundError:
            ensure_queue(self.poison)
            self.poison.send_message(lease.raw)
        log.warning(
            "message %s moved to '%s' after %s deliveries",
            lease.message.id,
            self.poison.queue_name,
            lease.message.dequeue_count,
        )
        self._delete(lease)
