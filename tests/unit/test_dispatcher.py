"""The batched dispatcher sends each submitted job's stage-1 message once and marks it sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from controllers.dispatcher import BatchDispatcher
from schemas.exceptions import QueueUnavailable
from schemas.ids import JobId
from schemas.messages import MAX_JOBS_PER_MESSAGE, JobQueueMessage, TaskQueueMessage
from tests.fakes import FakeBus


class Marks:
    def __init__(self) -> None:
        self.marked: list[JobId] = []
        self.lock = threading.Lock()

    def mark_many_dispatched(self, job_ids: Sequence[JobId], stage: int) -> None:
        assert stage == 1
        with self.lock:
            self.marked += job_ids


class FailingBus(FakeBus):
    def send_job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None:
        if msg.job_id.startswith("f"):
            raise QueueUnavailable("the queue is down")
        super().send_job(msg, delay)

    def send_tasks(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]:
        raise AssertionError("not used")


def ids(prefix: str, n: int) -> list[JobId]:
    return [JobId(f"{prefix}{i:063x}"[:64]) for i in range(n)]


def test_every_enqueued_job_is_sent_once_and_marked() -> None:
    bus, marks = FakeBus(), Marks()
    dispatcher = BatchDispatcher(bus, marks, senders=4)
    jobs = ids("a", 300)

    def enqueue(part: list[JobId]) -> None:
        for job_id in part:
            dispatcher.enqueue(job_id)

    threads = [
        threading.Thread(target=enqueue, args=(part,))
        for part in (jobs[:150], jobs[150:], jobs[:10])  # ten enqueued twice
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dispatcher.wait_idle(30)
    sent = [JobQueueMessage.model_validate_json(e.body) for e in bus.sent]
    assert {m.stage for m in sent} == {1}
    named = [job_id for m in sent for job_id in m.job_ids]
    # A job enqueued twice within one batch is sent once; in two batches, twice (harmless).
    assert set(named) == set(jobs) and len(named) <= 310
    # Batched: a message per up to MAX_JOBS_PER_MESSAGE jobs, not one per job.
    assert all(len(m.job_ids) <= MAX_JOBS_PER_MESSAGE for m in sent)
    assert len(sent) < len(named)
    assert set(marks.marked) == set(jobs)


def test_a_job_whose_send_failed_is_left_unmarked_for_the_sweeper() -> None:
    bus, marks = FailingBus(), Marks()
    dispatcher = BatchDispatcher(bus, marks, senders=2)
    good, bad = ids("a", 5), ids("f", 3)
    for batch in (good, bad):  # two batches: the second one's message is refused
        for job_id in batch:
            dispatcher.enqueue(job_id)
        assert dispatcher.wait_idle(30)
    assert set(marks.marked) == set(good)
    sent = [JobQueueMessage.model_validate_json(e.body) for e in bus.sent]
    assert {job_id for m in sent for job_id in m.job_ids} == set(good)


def test_under_load_a_burst_waits_to_share_one_message() -> None:
    bus, marks = FakeBus(), Marks()
    dispatcher = BatchDispatcher(bus, marks, senders=2, linger_s=30)
    first, burst = ids("a", 1), ids("b", MAX_JOBS_PER_MESSAGE)
    dispatcher.enqueue(first[0])
    assert dispatcher.wait_idle(10)  # idle: sent at once, without waiting for company
    for job_id in burst:  # right after a send, the dispatcher waits for a full message
        dispatcher.enqueue(job_id)
        time.sleep(0.002)  # a trickle, as submissions arrive
    assert dispatcher.wait_idle(10)
    sent = [JobQueueMessage.model_validate_json(e.body) for e in bus.sent]
    assert [m.job_ids for m in sent] == [first, burst]
    assert set(marks.marked) == {*first, *burst}
