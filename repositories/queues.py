"""Azure Storage Queues: send job and task messages, check the size first, translate errors."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Self

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import QueueClient

from azstorage import (
    ClientOptions,
    ConnectionString,
    MessageEncoding,
    NotEncoded,
    StorageConfigError,
    StorageConnection,
    decode_text,
    load_host_json,
    queue_client,
    read_connection,
    wire_size,
    wire_text,
)
from repositories.tracecontext import stamped
from schemas.exceptions import ConfigurationError, MessageTooLarge, QueueError, QueueUnavailable
from schemas.messages import MAX_MESSAGE_BYTES, JobQueueMessage, TaskQueueMessage
from schemas.queued import RawMessage
from schemas.settings import Settings, task_shard_queues

# The SDK defaults (20 s connect, 60 s read, 3 retries 15 s apart) make a call to a
# stopped Azurite hang for about a minute; these fail it in about 2 s. One client per
# thread, so a connection or two each.
CLIENT_OPTIONS = ClientOptions(
    retries=2, backoff_s=1, jitter_s=0, connect_timeout_s=2, read_timeout_s=10, pool_size=2
)
MAX_DELAY = timedelta(days=7)
PEEK_MAX = 32


class PartialSend(QueueError):
    """Some messages of a batch were sent and others were not."""

    def __init__(self, message: str, sent: Sequence[TaskQueueMessage], total: int) -> None:
        super().__init__(message, sent=len(sent), total=total)
        self.sent = list(sent)
        self.total = total


def read_message_encoding(host_json: Path) -> MessageEncoding:
    """Return host.json's extensions.queues.messageEncoding; base64 when unset."""
    try:
        return load_host_json(host_json).extensions.queues.message_encoding
    except StorageConfigError as exc:
        raise ConfigurationError(str(exc)) from exc


def decode_wire_text(wire: str, encoding: MessageEncoding) -> str:
    """Return the text of a message as read from the queue, or raise QueueError."""
    try:
        return decode_text(wire, encoding)
    except NotEncoded as exc:
        raise QueueError(f"message is {exc}: {wire[:80]!r}") from exc


@contextmanager
def translated(action: str, **context: object) -> Iterator[None]:
    """Run a queue action; re-raise its Azure SDK errors as QueueError with the ids."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise QueueUnavailable(f"{action}: queue service unreachable: {exc}", **context) from exc
    except ResourceNotFoundError as exc:
        raise QueueError(f"{action}: queue not found", **context) from exc
    except ClientAuthenticationError as exc:
        # A credential that cannot get a token says why in its message, not in a code.
        reason = (exc.message or str(exc)).splitlines()[0]
        raise QueueError(f"{action}: not authenticated: {reason}", **context) from exc
    except HttpResponseError as exc:
        raise _http_error(action, exc, context) from exc
    except AzureError as exc:
        raise QueueError(f"{action}: {exc}", **context) from exc


def _http_error(action: str, exc: HttpResponseError, context: dict[str, object]) -> QueueError:
    # The storage SDK attaches the service's x-ms-error-code as an untyped attribute
    # (a StorageErrorCode, which is a str enum).
    code = getattr(exc, "error_code", None) or exc.reason or "error"
    name = str(getattr(code, "value", code))
    if name == "RequestBodyTooLarge":
        return MessageTooLarge(f"{action}: refused by the queue service as too large", **context)
    if exc.status_code is not None and exc.status_code >= 500:
        return QueueUnavailable(f"{action}: queue service failed: {name}", **context)
    return QueueError(f"{action}: {name} (HTTP {exc.status_code})", **context)


def visibility_seconds(delay: timedelta | None) -> int | None:
    """Return a delay as whole seconds for the service (rounded up), or None for no delay."""
    if delay is None:
        return None
    if not timedelta(0) <= delay <= MAX_DELAY:
        raise ValueError(f"delay must be between 0 and 7 days, not {delay}")
    return math.ceil(delay.total_seconds())


class _ThreadClients(threading.local):
    """One QueueClient per queue per thread (see QueueRepository._client)."""

    def __init__(self) -> None:
        self.by_queue: dict[str, QueueClient] = {}


class QueueRepository:
    """The jobs queue, the task queue shards, and their poison queues, of one storage account.

    Task messages are spread over the shards round-robin (per process): one Azure queue
    takes about 2,000 messages a second, so a deployment past that uses several.
    """

    def __init__(
        self,
        connection: StorageConnection | str,
        jobs_queue: str,
        tasks_queue: str,
        encoding: MessageEncoding = "base64",
        max_workers: int = 16,
        task_shards: int = 1,
    ) -> None:
        self.jobs_queue, self.tasks_queue = jobs_queue, tasks_queue
        self.jobs_poison_queue = f"{jobs_queue}-poison"
        self.tasks_poison_queue = f"{tasks_queue}-poison"
        self.task_queues = task_shard_queues(tasks_queue, task_shards)
        self.task_poison_queues = tuple(f"{queue}-poison" for queue in self.task_queues)
        self._next_shard = 0
        self.encoding: MessageEncoding = encoding
        # A plain string is a connection string (tests, tools); settings give either kind.
        self._connection = (
            ConnectionString(connection) if isinstance(connection, str) else connection
        )
        self._max_workers = max_workers
        self._local = _ThreadClients()
        self._all_clients: list[QueueClient] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._client(jobs_queue)  # a bad connection string fails here, not at the first send

    @classmethod
    def from_settings(cls, settings: Settings, encoding: MessageEncoding = "base64") -> Self:
        try:
            connection = read_connection("AzureWebJobsStorage", settings.storage_settings)
        except StorageConfigError as exc:
            raise ConfigurationError(str(exc)) from exc
        return cls(
            connection,
            settings.jobs_queue,
            settings.tasks_queue,
            encoding,
            task_shards=settings.task_queue_shards,
        )

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue: jobs, the task shards, then their poison queues in the same order."""
        return (
            self.jobs_queue,
            *self.task_queues,
            self.jobs_poison_queue,
            *self.task_poison_queues,
        )

    def ensure_queues(self) -> None:
        """Create every queue where missing."""
        for queue in self.queues:
            # Another worker or an earlier start may have created it: that is fine.
            with translated("create queue", queue=queue), suppress(ResourceExistsError):
                self._client(queue).create_queue()

    def send_job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None:
        """Send one job message, or raise QueueError (MessageTooLarge before sending)."""
        wire, visibility = self._checked_wire(msg), visibility_seconds(delay)
        self._send(self.jobs_queue, wire, visibility, job_id=msg.job_id, stage=msg.stage)

    def send_tasks(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]:
        """Send task messages in parallel and return them; PartialSend names what was sent.

        Any other QueueError means none was confirmed sent (MessageTooLarge: none was tried).
        """
        wires, visibility = [self._checked_wire(msg) for msg in msgs], visibility_seconds(delay)
        pool, stop = self._executor(), threading.Event()
        futures = [
            pool.submit(self._send_task, stop, queue, msg, wire, visibility)
            for queue, msg, wire in zip(self._task_shards_for(len(msgs)), msgs, wires, strict=True)
        ]
        wait(futures)
        return _all_sent_or_raise(msgs, futures)

    def send_raw(self, queue: str, text: str, delay: timedelta | None = None) -> None:
        """Send text as it is (encoded as configured) to any queue: tests, poison replay."""
        self._check_size(text, queue=queue)
        self._send(queue, wire_text(text, self.encoding), visibility_seconds(delay))

    def health(self) -> str | None:
        """Return None when the queue service answers and the queues exist, else why not."""
        for queue in (self.jobs_queue, *self.task_queues):
            try:
                with translated("queue health", queue=queue):
                    # No retries: a health probe should answer at once.
                    self._client(queue).get_queue_properties(retry_total=0)
            except QueueUnavailable as exc:
                return f"queue service unreachable at {self._endpoint()}: {_short_reason(exc)}"
            except QueueError as exc:
                return str(exc)
        return None

    def approximate_counts(self) -> dict[str, int]:
        """Return each queue's approximate message count (includes invisible messages)."""
        counts: dict[str, int] = {}
        for queue in self.queues:
            with translated("count messages", queue=queue):
                properties = self._client(queue).get_queue_properties()
            counts[queue] = properties.approximate_message_count or 0
        return counts

    def peek(self, queue: str, n: int = PEEK_MAX) -> list[str]:
        """Return the decoded texts of up to n (at most 32) visible messages, without receiving."""
        with translated("peek messages", queue=queue):
            peeked = self._client(queue).peek_messages(max_messages=min(n, PEEK_MAX))
        return [decode_wire_text(str(m.content), self.encoding) for m in peeked]

    def oldest_visible(self, queue: str) -> datetime | None:
        """Return when the oldest visible message of the queue was sent; None if none is."""
        with translated("peek messages", queue=queue):
            peeked = self._client(queue).peek_messages(max_messages=1)
        return peeked[0].inserted_on if peeked else None

    def receive_raw(
        self, queue: str, n: int = PEEK_MAX, lease: timedelta = timedelta(minutes=1)
    ) -> list[RawMessage]:
        """Receive up to n (at most 32) messages as stored, undecoded; none if no such queue."""
        count = min(n, PEEK_MAX)
        try:
            with translated("receive messages", queue=queue):
                pages = self._client(queue).receive_messages(
                    messages_per_page=count,
                    max_messages=count,
                    visibility_timeout=visibility_seconds(lease),
                )
                received = list(next(pages.by_page(), []))
        except QueueError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return []
            raise
        return [
            RawMessage(m.id, m.pop_receipt or "", str(m.content or ""), m.dequeue_count or 0)
            for m in received
        ]

    def delete_raw(self, queue: str, message: RawMessage) -> None:
        """Delete a message received with receive_raw."""
        with translated("delete message", queue=queue, message_id=message.message_id):
            self._client(queue).delete_message(message.message_id, message.pop_receipt)

    def close(self) -> None:
        """Stop the send threads and close every client's connections; do not use it after."""
        with self._lock:
            pool, self._pool = self._pool, None
            clients, self._all_clients = self._all_clients, []
        if pool is not None:
            pool.shutdown(wait=True)
        for client in clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checked_wire(self, msg: JobQueueMessage | TaskQueueMessage) -> str:
        # A job message naming one job keeps the form it had before batches existed.
        alone = isinstance(msg, JobQueueMessage) and not msg.more_job_ids
        text = stamped(msg).model_dump_json(exclude={"more_job_ids"} if alone else None)
        self._check_size(text, job_id=msg.job_id, stage=msg.stage)
        return wire_text(text, self.encoding)

    def _check_size(self, text: str, **context: object) -> None:
        size = wire_size(text, self.encoding)
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"queue message is {size} bytes as sent ({self.encoding}),"
                f" over the {MAX_MESSAGE_BYTES}-byte limit",
                **context,
            )

    def _task_shards_for(self, count: int) -> list[str]:
        """Return the task queue of each of `count` messages: the next shards in turn."""
        shards = len(self.task_queues)
        with self._lock:
            first, self._next_shard = self._next_shard, (self._next_shard + count) % shards
        return [self.task_queues[(first + n) % shards] for n in range(count)]

    def _send_task(
        self,
        stop: threading.Event,
        queue: str,
        msg: TaskQueueMessage,
        wire: str,
        visibility: int | None,
    ) -> bool:
        """Send one message of a batch; return False, unsent, once another send has failed."""
        if stop.is_set():
            # Each send would wait out its retries against a service that just failed.
            return False
        try:
            self._send(queue, wire, visibility, job_id=msg.job_id, stage=msg.stage)
        except BaseException:
            stop.set()
            raise
        return True

    def _send(self, queue: str, wire: str, visibility: int | None, **context: object) -> None:
        with translated("send message", queue=queue, **context):
            self._client(queue).send_message(wire, visibility_timeout=visibility)

    def _client(self, queue: str) -> QueueClient:
        # One client per thread: send_message reconfigures the client's encode policy on
        # every call, and each client's requests session keeps its own connection pool
        # (urllib3 keeps 10 connections per pool; a shared one would drop the rest).
        client = self._local.by_queue.get(queue)
        if client is None:
            client = self._new_client(queue)
            self._local.by_queue[queue] = client
            with self._lock:
                self._all_clients.append(client)
        return client

    def _new_client(self, queue: str) -> QueueClient:
        try:
            return queue_client(self._connection, queue, CLIENT_OPTIONS)
        except StorageConfigError as exc:
            raise ConfigurationError(str(exc)) from exc

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="queue-send")
            return self._pool

    def _endpoint(self) -> str:
        client = self._client(self.jobs_queue)
        return f"{client.scheme}://{client.primary_hostname}"


def _all_sent_or_raise(
    msgs: Sequence[TaskQueueMessage], futures: Sequence[Future[bool]]
) -> list[TaskQueueMessage]:
    """Return msgs if every send succeeded; else raise the first failure, or PartialSend."""
    failure = next((f.exception() for f in futures if f.exception() is not None), None)
    if failure is None:
        return list(msgs)
    sent = [m for m, f in zip(msgs, futures, strict=True) if f.exception() is None and f.result()]
    if not sent:
        raise failure
    summary = f"sent {len(sent)} of {len(msgs)} task messages"
    raise PartialSend(summary, sent, len(msgs)) from failure


def _short_reason(exc: BaseException) -> str:
    """Return the innermost part of an error, e.g. "[Errno 111] Connection refused"."""
    cause = exc.__cause__ or exc
    return str(cause).rsplit(": ", 1)[-1] or type(cause).__name__
