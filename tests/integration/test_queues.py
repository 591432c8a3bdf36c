"""QueueRepository against a real Azurite: wire format, delays, fan-out, limits, outages."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy
from pydantic import ValidationError

from azstorage import wire_size
from lightsout.devservices import azurite_connection_string, free_port, queue_endpoint
from repositories.queues import PartialSend, QueueRepository
from schemas.exceptions import MessageTooLarge, QueueUnavailable
from schemas.ids import JobId, make_task_id
from schemas.messages import (
    MAX_JOBS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    JobQueueMessage,
    TaskQueueMessage,
)
from tests.fixtures_services import QueueNames

JOB = JobId("c0" * 32)
FAN_OUT = 2000


@pytest.fixture
def repo(azurite: str, queue_names: QueueNames) -> Iterator[QueueRepository]:
    with QueueRepository(azurite, queue_names.jobs, queue_names.tasks) as repo:
        repo.ensure_queues()
        yield repo


def task_message(index: int, stage: int = 1, ids_per_message: int = 1) -> TaskQueueMessage:
    first = index * ids_per_message
    ids = [make_task_id(JOB, stage, i) for i in range(first, first + ids_per_message)]
    # Built without validation: the size tests need more ids than a message may carry.
    return TaskQueueMessage.model_construct(job_id=JOB, stage=stage, task_ids=ids)


def task_ids(msg: TaskQueueMessage) -> tuple[str, ...]:
    return tuple(msg.task_ids)


def raw_client(connection: str, queue: str) -> QueueClient:
    """A client without decode policy: it returns the body exactly as stored."""
    return QueueClient.from_connection_string(connection, queue)


def receive_all(client: QueueClient, expected: int, deadline_s: float = 60) -> list[str]:
    """Receive until `expected` bodies arrived, hiding each one so it is read once."""
    bodies: list[str] = []
    deadline = time.monotonic() + deadline_s
    while len(bodies) < expected and time.monotonic() < deadline:
        page = [
            str(m.content) for m in client.receive_messages(max_messages=32, visibility_timeout=600)
        ]
        bodies += page
        if not page:
            time.sleep(0.1)
    return bodies


def test_ensure_queues_creates_the_four_queues_once(azurite: str, queue_names: QueueNames) -> None:
    with QueueRepository(azurite, queue_names.jobs, queue_names.tasks) as repo:
        assert repo.health() is not None  # the queues do not exist yet
        repo.ensure_queues()
        repo.ensure_queues()
        assert repo.health() is None
        assert repo.approximate_counts() == {
            queue_names.jobs: 0,
            queue_names.tasks: 0,
            queue_names.jobs_poison: 0,
            queue_names.tasks_poison: 0,
        }


def test_job_message_is_base64_of_its_json_on_the_wire(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    msg = JobQueueMessage(job_id=JOB, stage=2)
    repo.send_job(msg)

    (body,) = receive_all(raw_client(azurite, queue_names.jobs), 1)
    # A message naming one job has the form it had before batches: no more_job_ids.
    assert json.loads(base64.b64decode(body)) == {"job_id": JOB, "stage": 2, "traceparent": None}
    assert JobQueueMessage.model_validate_json(base64.b64decode(body)) == msg


def test_a_job_message_naming_several_jobs_carries_them_all(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    more = [JobId(f"{n:064x}") for n in range(1, MAX_JOBS_PER_MESSAGE)]
    msg = JobQueueMessage(job_id=JOB, stage=1, more_job_ids=more)
    repo.send_job(msg)

    (body,) = receive_all(raw_client(azurite, queue_names.jobs), 1)
    got = JobQueueMessage.model_validate_json(base64.b64decode(body))
    assert got == msg and got.job_ids == [JOB, *more]
    with pytest.raises(ValidationError, match="more_job_ids"):
        JobQueueMessage(job_id=JOB, stage=1, more_job_ids=[*more, JobId("ab" * 32)])


def test_task_message_decodes_as_the_functions_host_decodes_it(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    msg = task_message(0, stage=3, ids_per_message=5)
    assert repo.send_tasks([msg]) == [msg]

    host_like = QueueClient.from_connection_string(
        azurite, queue_names.tasks, message_decode_policy=TextBase64DecodePolicy()
    )
    (received,) = host_like.receive_messages(max_messages=32)
    assert TaskQueueMessage.model_validate_json(str(received.content)) == msg


def test_encoding_none_sends_plain_json(azurite: str, queue_names: QueueNames) -> None:
    with QueueRepository(azurite, queue_names.jobs, queue_names.tasks, encoding="none") as repo:
        repo.ensure_queues()
        msg = JobQueueMessage(job_id=JOB, stage=1)
        repo.send_job(msg)
        text = msg.model_dump_json(exclude={"more_job_ids"})  # one job: no more_job_ids
        assert repo.peek(queue_names.jobs) == [text]

    (body,) = receive_all(raw_client(azurite, queue_names.jobs), 1)
    assert body == text


def test_peek_decodes_without_receiving(repo: QueueRepository, queue_names: QueueNames) -> None:
    repo.send_raw(queue_names.jobs_poison, "not json at all: é")
    assert repo.peek(queue_names.jobs_poison) == ["not json at all: é"]
    assert repo.peek(queue_names.jobs_poison) == ["not json at all: é"]
    assert repo.approximate_counts()[queue_names.jobs_poison] == 1


def test_delay_hides_a_message_until_it_passes(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    msg = JobQueueMessage(job_id=JOB, stage=1)
    sent_at = time.monotonic()
    repo.send_job(msg, delay=timedelta(seconds=2))

    client = raw_client(azurite, queue_names.jobs)
    assert list(client.receive_messages(max_messages=32)) == []
    assert repo.approximate_counts()[queue_names.jobs] == 1  # there, but invisible

    (body,) = receive_all(client, 1, deadline_s=15)
    assert time.monotonic() - sent_at >= 1.5  # the service's clock has second resolution
    assert JobQueueMessage.model_validate_json(base64.b64decode(body)) == msg


def test_many_task_messages_in_one_call_all_arrive(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    msgs = [task_message(i) for i in range(FAN_OUT)]
    started = time.perf_counter()
    sent = repo.send_tasks(msgs)
    elapsed = time.perf_counter() - started
    print(f"\nsent {FAN_OUT} task messages in {elapsed:.2f} s: {FAN_OUT / elapsed:.0f} msg/s")

    assert sent == msgs
    assert repo.approximate_counts()[queue_names.tasks] == FAN_OUT
    bodies = receive_all(raw_client(azurite, queue_names.tasks), FAN_OUT)
    received = [TaskQueueMessage.model_validate_json(base64.b64decode(b)) for b in bodies]
    assert len(received) == FAN_OUT
    assert {task_ids(m) for m in received} == {task_ids(m) for m in msgs}


def test_sends_use_several_connections_at_once(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    # What the service sees of parallel sends: several connections from this process
    # (each send thread keeps its own alive after the batch).
    port = urlsplit(queue_endpoint(azurite)).port or 80
    before = established_connections(port)
    repo.send_tasks([task_message(i) for i in range(200)])
    assert established_connections(port) - before > 1
    assert repo.approximate_counts()[queue_names.tasks] == 200


def test_largest_message_that_fits_is_accepted_and_one_more_task_is_not(
    repo: QueueRepository, queue_names: QueueNames
) -> None:
    n = 1
    while wire_size(task_message(0, ids_per_message=n + 1).model_dump_json(), "base64") <= (
        MAX_MESSAGE_BYTES
    ):
        n += 1
    fits, too_big = task_message(0, ids_per_message=n), task_message(0, ids_per_message=n + 1)

    repo.send_tasks([fits])  # the service agrees with our size check at the limit
    with pytest.raises(MessageTooLarge):
        repo.send_tasks([too_big])
    assert repo.approximate_counts()[queue_names.tasks] == 1


def test_oversized_message_stops_the_batch_before_anything_is_sent(
    repo: QueueRepository, queue_names: QueueNames
) -> None:
    big = task_message(0, stage=2, ids_per_message=2048)
    batch = [task_message(i, stage=2) for i in range(1, 50)] + [big]

    with pytest.raises(MessageTooLarge) as caught:
        repo.send_tasks(batch)

    size = wire_size(big.model_dump_json(), "base64")
    assert f"job_id='{JOB}'" in str(caught.value)
    assert "stage=2" in str(caught.value)
    assert str(size) in str(caught.value)
    assert repo.approximate_counts()[queue_names.tasks] == 0


def test_oversized_raw_message_is_refused(repo: QueueRepository, queue_names: QueueNames) -> None:
    repo.send_raw(queue_names.jobs, "x" * (MAX_MESSAGE_BYTES * 3 // 4))  # exactly 64 KiB in base64
    with pytest.raises(MessageTooLarge, match=queue_names.jobs):
        repo.send_raw(queue_names.jobs, "x" * (MAX_MESSAGE_BYTES * 3 // 4 + 1))
    assert repo.approximate_counts()[queue_names.jobs] == 1


def test_dead_endpoint_fails_fast_and_health_names_it(queue_names: QueueNames) -> None:
    port = free_port()  # nothing listens there
    connection = azurite_connection_string(port)
    with QueueRepository(connection, queue_names.jobs, queue_names.tasks) as repo:
        with within_seconds(5), pytest.raises(QueueUnavailable, match="Connection refused"):
            repo.send_job(JobQueueMessage(job_id=JOB, stage=1))
        # Nothing was sent, so not PartialSend; the queued sends are cancelled, not retried.
        with within_seconds(5), pytest.raises(QueueUnavailable):
            repo.send_tasks([task_message(i) for i in range(500)])
        with within_seconds(1):
            reason = repo.health()

    assert reason is not None
    assert "unreachable" in reason
    assert f"127.0.0.1:{port}" in reason
    assert "Connection refused" in reason


def test_failure_mid_batch_names_the_messages_sent(
    repo: QueueRepository, azurite: str, queue_names: QueueNames
) -> None:
    msgs = [task_message(i) for i in range(FAN_OUT)]
    outcome: list[PartialSend] = []

    def send() -> None:
        try:
            repo.send_tasks(msgs)
        except PartialSend as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for_count(repo, queue_names.tasks, FAN_OUT // 10)
    raw_client(azurite, queue_names.tasks).delete_queue()  # later sends find no queue
    sender.join(timeout=60)

    (partial,) = outcome
    assert 0 < len(partial.sent) < FAN_OUT
    sent = {task_ids(m) for m in partial.sent}
    assert partial.sent == [m for m in msgs if task_ids(m) in sent]  # in the caller's order
    assert f"sent {len(partial.sent)} of {FAN_OUT}" in str(partial)
    assert "queue not found" in str(partial.__cause__)


@contextmanager
def within_seconds(limit: float) -> Iterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.1f} s, limit {limit} s"


def wait_for_count(repo: QueueRepository, queue: str, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while repo.approximate_counts()[queue] < at_least:
        assert time.monotonic() < deadline, f"{queue} never reached {at_least} messages"
        time.sleep(0.02)


def established_connections(port: int) -> int:
    """Count this machine's TCP connections to `port` (Linux /proc)."""
    rows: list[str] = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            pytest.skip("needs Linux /proc/net/tcp")
        rows += table.read_text().splitlines()[1:]
    target = f":{port:04X}"
    # Columns: sl local_address rem_address st ...; st 01 is ESTABLISHED.
    return sum(1 for row in rows if row.split()[2].endswith(target) and row.split()[3] == "01")
