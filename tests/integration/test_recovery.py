"""The janitor's repairs and the operator's actions against real PostgreSQL and Azurite.

Each test gets its own migrated database and queues; the runtime is made from them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controllers.faults import RefusingSends
from controllers.recovery import Recovery, Timings
from controllers.stages import StageDriver
from repositories.queues import decode_wire_text
from schemas.exceptions import QueueUnavailable
from schemas.ids import JobId, TaskId, make_task_id
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import TaskError
from schemas.status import JobStatus, TaskStatus
from schemas.work import NewTask, TaskEnd
from tests.integration.test_triggers import call_http
from triggers.runtime import Runtime, reset_runtime, runtime

pytestmark = pytest.mark.integration
Db = psycopg.Connection[dict[str, Any]]
ERROR = TaskError(type="RuntimeError", message="boom", attempt=1)
HOUR_AGO = "now() - interval '1 hour'"


@pytest.fixture
def rt(settings_env: dict[str, str]) -> Iterator[Runtime]:
    """The runtime made from this test's settings (making it creates the queues)."""
    reset_runtime()
    yield runtime()
    reset_runtime()


def started_stage(rt: Runtime, tasks: int, label: str = "") -> tuple[JobId, list[TaskId]]:
    """A noop_fanout job whose stage 1 has `tasks` task rows, none of them sent yet."""
    params = {"tasks": tasks, "stages": 1, "sleep_ms": len(label)}
    job_id = rt.engine.submit("noop_fanout", params).job_id
    assert rt.tasks.start_stage(job_id, 1, [NewTask("noop_1") for _ in range(tasks)])
    return job_id, [make_task_id(job_id, 1, i) for i in range(tasks)]


def age(db: Db, table: str, column: str, ids: Sequence[str]) -> None:
    key = "task_id" if table == "tasks" else "job_id"
    db.execute(f"UPDATE {table} SET {column} = {HOUR_AGO} WHERE {key} = ANY (%s)", (list(ids),))


def sent_task_ids(rt: Runtime) -> list[str]:
    """Receive and delete every visible task message; return the task ids they name."""
    queue, ids = rt.queues.tasks_queue, list[str]()
    while received := rt.queues.receive_raw(queue):
        for message in received:
            body = decode_wire_text(message.text, rt.queues.encoding)
            ids += TaskQueueMessage.model_validate_json(body).task_ids
            rt.queues.delete_raw(queue, message)
    return ids


def janitor(rt: Runtime, **timings: timedelta) -> Recovery:
    return replace(rt.recovery, timings=replace(Timings(), **timings))


def test_the_reaper_backs_off_by_the_attempt_the_worker_was_lost_in(rt: Runtime, db: Db) -> None:
    _, [task_id] = started_stage(rt, 1)
    (first,) = rt.tasks.claim([task_id], "w1")
    assert rt.tasks.retry(task_id, first.attempt, ERROR, timedelta(0))
    (second,) = rt.tasks.claim([task_id], "w2")
    assert second.attempt == 2
    age(db, "tasks", "heartbeat_at", [task_id])  # w2 died
    report = janitor(rt).run_janitor()
    assert report.reaped_retried == 1
    row = db.execute(
        "SELECT status, attempt, extract(epoch FROM next_attempt_at - updated_at) AS delay_s"
        " FROM tasks WHERE task_id = %s",
        (task_id,),
    ).fetchone()
    assert row is not None and (row["status"], row["attempt"]) == ("retrying", 2)
    # noop_fanout backs off 0.25-0.5 s after attempt 1 and 0.5-1 s after attempt 2.
    assert 0.5 <= float(row["delay_s"]) <= 1.0


def test_the_sweeper_marks_only_what_it_sent(rt: Runtime, db: Db, tmp_path: Path) -> None:
    job_id, ids = started_stage(rt, 3)
    age(db, "tasks", "updated_at", ids)  # the dispatcher died before sending
    switch = tmp_path / "refuse"
    switch.touch()
    refusing = replace(rt.recovery, queues=RefusingSends(rt.queues, switch))
    with pytest.raises(QueueUnavailable):
        refusing.run_janitor()
    assert sorted(rt.tasks.undispatched(job_id, 1)) == sorted(ids), "a failed send marks none"
    assert sent_task_ids(rt) == []
    switch.unlink()
    assert refusing.run_janitor().resent_tasks == 3
    assert rt.tasks.undispatched(job_id, 1) == []
    assert sorted(sent_task_ids(rt)) == sorted(ids)


def test_the_sweeper_leaves_a_live_dispatch_alone_and_takes_over_a_stopped_one(
    rt: Runtime, db: Db
) -> None:
    job_id, ids = started_stage(rt, 4)
    age(db, "tasks", "updated_at", ids)
    assert rt.jobs.take_dispatch_lease(job_id, 1, "dispatcher", timedelta(minutes=1))
    assert janitor(rt).run_janitor().resent_tasks == 0  # still being sent by its dispatcher
    assert sent_task_ids(rt) == []
    db.execute(
        f"UPDATE job_stages SET dispatch_lease_until = {HOUR_AGO} WHERE job_id = %s", (job_id,)
    )  # ... which stopped renewing its lease
    assert janitor(rt).run_janitor().resent_tasks == 4
    assert sorted(sent_task_ids(rt)) == sorted(ids)
    assert rt.tasks.undispatched(job_id, 1) == []


def test_a_dispatch_sends_nothing_while_another_holds_the_stage(rt: Runtime) -> None:
    job_id, ids = started_stage(rt, 2)
    assert rt.jobs.take_dispatch_lease(job_id, 1, "other-host", timedelta(minutes=1))
    assert rt.engine.driver.dispatch(job_id, 1, 25) == 0
    assert sent_task_ids(rt) == []
    rt.jobs.release_dispatch_lease(job_id, 1, "other-host")
    assert rt.engine.driver.dispatch(job_id, 1, 25) == 2
    assert sorted(sent_task_ids(rt)) == sorted(ids)


def test_reopen_is_bounded_per_stage_and_per_run(rt: Runtime, db: Db) -> None:
    big, big_ids = started_stage(rt, 150, "big")
    small, small_ids = started_stage(rt, 30, "small")
    rt.tasks.mark_dispatched(big_ids + small_ids)  # sent, and the messages lost since
    age(db, "tasks", "dispatched_at", big_ids + small_ids)
    bounds = replace(rt.recovery.bounds, reopen_per_run=120, reopen_per_stage=100)
    report = replace(rt.recovery, bounds=bounds).run_janitor()
    assert report.reopened == 120
    reopened = {job: len(rt.tasks.undispatched(job, 1)) for job in (big, small)}
    assert reopened[big] <= 100 and sum(reopened.values()) == 120
    report = replace(rt.recovery, bounds=bounds).run_janitor()
    assert sum(len(rt.tasks.undispatched(job, 1)) for job in (big, small)) == 180


def test_reopen_spares_messages_sent_after_the_oldest_one_still_queued(rt: Runtime, db: Db) -> None:
    _, ids = started_stage(rt, 5)
    rt.queues.send_raw(rt.queues.tasks_queue, "{}")  # an older message waits in the queue
    time.sleep(0.1)
    rt.tasks.mark_dispatched(ids)  # sent after it: still behind it in the queue
    time.sleep(0.1)
    quick = janitor(rt, stall=timedelta(0), lease=timedelta(0))
    assert quick.run_janitor().reopened == 0
    age(db, "tasks", "dispatched_at", ids)  # sent before it: delivered (and lost) long ago
    assert quick.run_janitor().reopened == 5


def test_reopen_resends_a_message_held_by_a_receiver_that_died(rt: Runtime, db: Db) -> None:
    job_id, ids = started_stage(rt, 3)
    assert rt.engine.driver.dispatch(job_id, 1, 25) == 3
    # A host received it (invisible for its 10-minute lease) and was killed before claiming.
    assert len(rt.queues.receive_raw(rt.queues.tasks_queue, lease=timedelta(minutes=10))) == 1
    assert rt.queues.approximate_counts()[rt.queues.tasks_queue] == 1  # there, but invisible
    slow = janitor(rt, stall=timedelta(seconds=30), lease=timedelta(0))
    assert slow.run_janitor().reopened == 0  # a live receiver would claim within seconds
    age(db, "tasks", "dispatched_at", ids)
    assert slow.run_janitor().reopened == 3
    assert sorted(rt.tasks.undispatched(job_id, 1)) == sorted(ids)  # for the sweeper to send


def test_poison_replays_once_then_409_naming_when_unless_forced(rt: Runtime) -> None:
    body = JobQueueMessage(job_id=JobId("ab" * 32), stage=1).model_dump_json()
    assert rt.poison.record(rt.queues.jobs_poison_queue, "m-1", body, 5, "dequeued 5 times")
    status, listed = call_http("list_poison", "GET")
    assert status == 200, listed
    (record,) = listed["poison"]
    assert (record["body"], record["replayed_at"]) == (body, None)
    route = {"poison_id": str(record["poison_id"])}

    status, first = call_http("replay_poison", "POST", route)
    assert status == 202, first
    assert first["queue_name"] == rt.queues.jobs_queue
    assert rt.queues.peek(rt.queues.jobs_queue) == [body]
    replayed_at = rt.poison.get(record["poison_id"]).replayed_at
    assert replayed_at is not None

    status, again = call_http("replay_poison", "POST", route)
    assert status == 409, again
    assert replayed_at.isoformat() in again["message"]
    assert len(rt.queues.peek(rt.queues.jobs_queue)) == 1

    status, forced = call_http("replay_poison", "POST", route, params={"force": "true"})
    assert status == 202, forced
    assert len(rt.queues.peek(rt.queues.jobs_queue)) == 2
    status, bad = call_http("replay_poison", "POST", route, params={"force": "yes"})
    assert status == 400, bad


def test_the_janitor_fails_jobs_of_a_job_type_this_deployment_lacks(rt: Runtime, db: Db) -> None:
    job_id = JobId("cd" * 32)
    assert rt.jobs.submit(job_id, "retired_type", {}, ["only"])
    report = janitor(rt).run_janitor()
    assert report.unknown_type_jobs == 1
    job = rt.jobs.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == {"message": "job type 'retired_type' is not registered in this deployment"}
    assert janitor(rt).run_janitor().unknown_type_jobs == 0


def test_operator_retry_reruns_the_failed_tasks_and_the_job_completes(rt: Runtime) -> None:
    params = {"tasks": 3, "stages": 1, "fail_until_attempt": {"1": 4}}
    job_id = rt.engine.submit("noop_fanout", params).job_id
    pump(rt)
    job = rt.jobs.get(job_id)
    assert job.status is JobStatus.FAILED
    assert rt.tasks.get(make_task_id(job_id, 1, 1)).attempt == 3
    status, body = call_http("retry_job", "POST", {"job_id": job_id})
    assert status == 202, body
    assert (body["stage"], body["retried_tasks"]) == (1, 1)
    pump(rt)
    job = rt.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    task = rt.tasks.get(make_task_id(job_id, 1, 1))
    assert (task.status, task.attempt) == (TaskStatus.COMPLETED, 4)
    status, body = call_http("retry_job", "POST", {"job_id": job_id})
    assert status == 409, body


def test_operator_retry_creates_the_tasks_a_stop_found_uncreated(rt: Runtime) -> None:
    # The process that started stage 1 created its first 100 tasks and died before the rest;
    # one of those failed for good, and the janitor failed the job meanwhile.
    job_id = rt.engine.submit("noop_fanout", {"tasks": 250, "stages": 1}).job_id
    for message in rt.queues.receive_raw(rt.queues.jobs_queue):
        rt.queues.delete_raw(rt.queues.jobs_queue, message)
    assert rt.tasks.start_stage(job_id, 1, [NewTask("noop_1", {}, 3)] * 250, 100)
    first = make_task_id(job_id, 1, 0)
    (claim,) = rt.tasks.claim([first], "w1")
    rt.tasks.end_many([TaskEnd(first, claim.attempt, TaskStatus.FAILED, error=ERROR)])
    assert rt.jobs.fail(job_id, {"message": "stalled"}, "janitor", "stalled")
    row = rt.jobs.stage(job_id, 1)
    assert (row.remaining, row.failed_count, row.cancelled_count, row.uncreated) == (0, 1, 249, 150)

    status, body = call_http("retry_job", "POST", {"job_id": job_id})
    assert status == 202, body
    row = rt.jobs.stage(job_id, 1)
    assert (row.remaining, row.failed_count, row.cancelled_count, row.uncreated) == (151, 0, 99, 0)
    pump(rt)
    assert rt.jobs.get(job_id).status is JobStatus.COMPLETED
    ran = [t for t in rt.tasks.find(job_id, 1, TaskStatus.COMPLETED, limit=300).items]
    assert sorted(t.task_index for t in ran) == [0, *range(100, 250)]
    assert {(t.task_index, t.attempt) for t in ran if t.attempt != 1} == {(0, 2)}


def pump(rt: Runtime, rounds: int = 200) -> None:
    """Deliver the jobs and tasks queues' messages to the engine until both stay empty."""
    idle = 0
    for _ in range(rounds):
        moved = False
        for queue in (rt.queues.jobs_queue, rt.queues.tasks_queue):
            for message in rt.queues.receive_raw(queue):
                body = decode_wire_text(message.text, rt.queues.encoding)
                if queue == rt.queues.jobs_queue:
                    rt.engine.handle_job_message(JobQueueMessage.model_validate_json(body))
                else:
                    rt.engine.handle_task_message(TaskQueueMessage.model_validate_json(body))
                rt.queues.delete_raw(queue, message)
                moved = True
        idle = 0 if moved else idle + 1
        if idle >= 3 and not rt.queues.approximate_counts()[rt.queues.tasks_queue]:
            return
        if not moved:
            time.sleep(0.3)
    raise AssertionError("the queues did not settle")


class SlowSends:
    """The queues, taking `pause_s` over each batch of sends: a dispatcher on a loaded host."""

    def __init__(self, rt: Runtime, pause_s: float) -> None:
        self.rt, self.pause_s = rt, pause_s

    def send_job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None:
        self.rt.queues.send_job(msg, delay)

    def send_tasks(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]:
        time.sleep(self.pause_s)
        return self.rt.queues.send_tasks(msgs, delay)


def test_a_janitor_sweeping_during_a_slow_dispatch_sends_no_task_twice(rt: Runtime) -> None:
    tasks = 300  # two chunks of one-task messages
    job_id, ids = started_stage(rt, tasks)
    slow = StageDriver(rt.jobs, rt.tasks, SlowSends(rt, 1.0), rt.engine.registry, "dispatcher")
    dispatching = threading.Thread(target=slow.dispatch, args=(job_id, 1, 1))
    dispatching.start()
    eager = janitor(rt, sweep_grace=timedelta(0))  # every unsent task is due for the sweeper
    while dispatching.is_alive():
        eager.run_janitor()
        time.sleep(0.1)
    dispatching.join()
    assert rt.tasks.undispatched(job_id, 1) == []
    sent = Counter(sent_task_ids(rt))
    assert sent == Counter(ids), f"sent twice: {[t for t, n in sent.items() if n > 1][:5]}"


def test_the_sweeper_sends_no_job_message_for_a_stage_being_entered(rt: Runtime, db: Db) -> None:
    # The process that ended the previous stage holds the next one's lease while it builds
    # it (controllers/transitions.py): its job message is not "never sent" until the lease
    # expires, as the process entering it may have died.
    job_id = rt.engine.submit("noop_fanout", {"tasks": 2, "stages": 1}).job_id
    assert rt.engine.dispatcher is None or rt.engine.dispatcher.wait_idle(30)
    db.execute("UPDATE jobs SET dispatched_at = NULL WHERE job_id = %s", (job_id,))
    age(db, "jobs", "updated_at", [job_id])
    assert rt.jobs.take_dispatch_lease(job_id, 1, "entering", timedelta(minutes=1))  # pending

    assert janitor(rt).run_janitor().resent_jobs == 0

    db.execute(
        f"UPDATE job_stages SET dispatch_lease_until = {HOUR_AGO} WHERE job_id = %s", (job_id,)
    )
    assert janitor(rt).run_janitor().resent_jobs == 1
    repairs = db.execute(
        "SELECT stage, reason FROM job_events WHERE job_id = %s AND kind = 'repair'", (job_id,)
    ).fetchall()
    assert repairs == [{"stage": 1, "reason": "stage message never sent: the sweeper sends it"}]
