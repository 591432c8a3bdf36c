"""Queue triggers against a real Azurite: delivery, retries, poison, batches, leases."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import timedelta

from azure.storage.queue import QueueServiceClient

from lightsout.host import Host
from tests.host.conftest import Json, SampleApp, wait_for


def ends(app: SampleApp) -> list[Json]:
    return [r for r in app.read("work") if r["event"] == "end"]


def test_message_is_delivered_and_deleted(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host()
    sample_app.send(sample_app.work_queue, {"id": "m1", "action": "ok"})
    record = wait_for(lambda: ends(sample_app), message="the message to be handled")[0]
    assert record["id"] == "m1" and record["dequeue_count"] == 1
    wait_for(
        lambda: not sample_app.queue(sample_app.work_queue).peek_messages(),
        message="the message to be deleted",
    )
    time.sleep(0.5)
    assert len(sample_app.read("work")) == 2  # one start, one end: delivered once


def test_failing_message_ends_on_poison_queue_with_its_original_text(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host()
    payload = {"id": "bad", "action": "fail"}
    sample_app.send(sample_app.work_queue, payload)
    poison = f"{sample_app.work_queue}-poison"
    texts = wait_for(lambda: sample_app.peek_all(poison), message="a poison message")
    assert texts == [base64.b64encode(json.dumps(payload).encode()).decode()]
    starts = [r["dequeue_count"] for r in sample_app.read("work") if r["event"] == "start"]
    assert starts == [1, 2, 3]  # maxDequeueCount 3 in the sample host.json
    assert sample_app.peek_all(sample_app.work_queue) == []


def test_non_base64_message_goes_to_poison_without_calling_the_function(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host()
    sample_app.send(sample_app.work_queue, "not base64 at all!", encode=False)
    poison = f"{sample_app.work_queue}-poison"
    assert wait_for(lambda: sample_app.peek_all(poison)) == ["not base64 at all!"]
    assert sample_app.read("work") == []


def test_undecodable_message_reaches_the_poison_function_as_stored(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host()
    poison = f"{sample_app.inbox_queue}-poison"
    sample_app.send(sample_app.inbox_queue, "not base64 at all!", encode=False)
    sample_app.send(poison, "a decodable poison message")
    wait_for(lambda: len(sample_app.read("inbox_poison")) == 2, message="two poison calls")
    by_body = {r["body"]: r for r in sample_app.read("inbox_poison")}
    # Moved unread from the inbox, then handed over as stored, saying why.
    undecoded = by_body["not base64 at all!"]
    assert (undecoded["kind"], undecoded["dequeue_count"]) == ("UndecodedMessage", 1)
    assert undecoded["reason"] == "not base64 as host.json messageEncoding says"
    decoded = by_body["a decodable poison message"]
    assert (decoded["kind"], decoded["reason"]) == ("QueueMessage", None)
    assert sample_app.read("inbox") == []
    wait_for(lambda: sample_app.peek_all(poison) == [], message="the poison queue to be empty")
    assert not sample_app.exists(f"{poison}-poison")  # no second poison queue is invented


def test_message_encoding_none_passes_the_text_as_it_is(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    sample_app.set_queues(messageEncoding="none")
    start_host()
    sample_app.send(sample_app.work_queue, {"id": "raw", "action": "ok"}, encode=False)
    assert wait_for(lambda: ends(sample_app))[0]["id"] == "raw"


def test_async_queue_function(sample_app: SampleApp, start_host: Callable[..., Host]) -> None:
    start_host()
    sample_app.send(sample_app.async_queue, "hello async")
    record = wait_for(lambda: sample_app.read("async_work"))[0]
    assert record["body"] == "hello async" and record["dequeue_count"] == 1
    assert record["insertion_time"] and record["pop_receipt"]


def max_overlap(app: SampleApp) -> int:
    """The most invocations of `work` that ran at the same moment."""
    events = sorted(
        [(float(r["started"]), 1) for r in ends(app)] + [(float(r["at"]), -1) for r in ends(app)]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def send_sleepers(app: SampleApp, count: int, seconds: float) -> None:
    for i in range(count):
        app.send(app.work_queue, {"id": i, "action": "sleep", "seconds": seconds})


def test_in_flight_is_bounded_by_batch_size_plus_threshold(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    send_sleepers(sample_app, 12, 0.6)
    start_host()  # batchSize 4 + newBatchThreshold 2
    wait_for(lambda: len(ends(sample_app)) == 12, timeout=30, message="12 messages")
    assert 4 <= max_overlap(sample_app) <= 6


def test_concurrency_option_caps_in_flight(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    send_sleepers(sample_app, 6, 0.3)
    start_host(concurrency=2)
    wait_for(lambda: len(ends(sample_app)) == 6, timeout=30, message="6 messages")
    assert max_overlap(sample_app) == 2


def test_lease_is_renewed_while_the_function_runs(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host(lease_time=timedelta(seconds=2))
    sample_app.send(sample_app.work_queue, {"id": "long", "action": "sleep", "seconds": 4})
    wait_for(lambda: ends(sample_app), timeout=20)
    starts = [r for r in sample_app.read("work") if r["event"] == "start"]
    assert [r["dequeue_count"] for r in starts] == [1]  # never visible to a second receive


def test_function_timeout_counts_as_a_failed_delivery(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    sample_app.host_json(functionTimeout="00:00:01")
    start_host()
    sample_app.send(sample_app.work_queue, {"id": "slow", "action": "sleep", "seconds": 2.5})
    second = wait_for(
        lambda: [r for r in sample_app.read("work") if r["dequeue_count"] == 2],
        timeout=20,
        message="a second delivery after the timeout",
    )
    assert second[0]["id"] == "slow"


def test_queues_are_created_when_missing(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host()
    service = QueueServiceClient.from_connection_string(sample_app.connection)
    wanted = {sample_app.work_queue, sample_app.async_queue}
    wait_for(lambda: wanted <= {q.name for q in service.list_queues()}, message="the queues")


def test_message_dequeued_past_the_limit_goes_to_poison_uncalled(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    """As when the process running it died on each of its maxDequeueCount deliveries."""
    sample_app.send(sample_app.work_queue, {"id": "crashy", "action": "ok"})
    queue = sample_app.queue(sample_app.work_queue)
    for _ in range(3):  # maxDequeueCount 3: three deliveries that never settled
        message = queue.receive_message(visibility_timeout=30)
        assert message is not None
        queue.update_message(message.id, pop_receipt=message.pop_receipt, visibility_timeout=0)
    start_host()
    poison = f"{sample_app.work_queue}-poison"
    assert len(wait_for(lambda: sample_app.peek_all(poison))) == 1
    assert sample_app.read("work") == []
