"""Diagnose against real jobs put in each state in PostgreSQL, through the registered route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from schemas.ids import JobId, TaskId, make_task_id
from schemas.operator import Diagnosis
from schemas.records import TaskError
from schemas.work import NewTask
from tests.fixtures_services import QueueNames
from tests.integration.test_triggers import (
    call_http,
    deliver,
    queue_message,
    submitted,
    take,
)
from triggers.runtime import Runtime, reset_runtime, runtime

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def rt(settings_env: dict[str, str]) -> Iterator[Runtime]:
    reset_runtime()
    yield runtime()
    reset_runtime()


def diagnose(job_id: str) -> Diagnosis:
    status, body = call_http("diagnose_job", "GET", {"job_id": job_id})
    assert status == 200, body
    return Diagnosis.model_validate(body)


def started(azurite: str, queues: QueueNames, tasks: int = 3, **params: Any) -> JobId:
    """A noop_fanout job whose stage 1 is built and whose task messages were taken away."""
    job_id = JobId(submitted("noop_fanout", {"tasks": tasks, "stages": 2, **params}))
    for text in take(azurite, queues.jobs):
        deliver("jobs_queue", queue_message(text))
    take(azurite, queues.tasks)
    return job_id


def task_ids(job_id: JobId, count: int, stage: int = 1) -> list[TaskId]:
    return [make_task_id(job_id, stage, i) for i in range(count)]


def pump(azurite: str, queues: QueueNames) -> None:
    """Deliver every message until both queues are empty."""
    for _ in range(30):
        jobs, tasks = take(azurite, queues.jobs), take(azurite, queues.tasks)
        if not jobs and not tasks:
            return
        for text in jobs:
            deliver("jobs_queue", queue_message(text))
        for text in tasks:
            deliver("tasks_queue", queue_message(text))


def test_running_normally(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    rt.tasks.claim(task_ids(job_id, 1), "host-a")

    found = diagnose(job_id)

    assert found.state == "running"
    expected = "stage 1 (noop_1) of 2 is running: 0 of 3 tasks ended, 1 running"
    assert found.verdict.startswith(expected)
    assert found.evidence.tasks_by_status == {"processing": 1, "queued": 2}
    assert [s.status for s in found.evidence.stages] == ["processing", "pending"]


def test_dispatch_pending(rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    db.execute("UPDATE tasks SET dispatched_at = NULL WHERE job_id = %s", (job_id,))

    found = diagnose(job_id)

    assert found.state == "dispatch_pending"
    assert found.evidence.unsent_messages == 3
    assert "3 messages are recorded but not sent yet" in found.verdict


def test_a_stage_whose_tasks_are_not_all_created_yet(
    rt: Runtime, azurite: str, queue_names: QueueNames
) -> None:
    # The process that started stage 1 created its first message's tasks, not the rest.
    job_id = JobId(submitted("noop_fanout", {"tasks": 250}))
    take(azurite, queue_names.jobs)
    assert rt.tasks.start_stage(job_id, 1, [NewTask("noop_1", {}, 3)] * 250, 100)

    found = diagnose(job_id)

    assert found.state == "dispatch_pending"
    assert found.evidence.stages[0].uncreated == 150
    assert found.verdict.startswith(
        "stage 1 (noop_1): 150 of its 250 tasks are not created yet; if the process"
        " creating them stopped, the sweeper sends the stage message"
    )


def test_a_submitted_job_whose_stage_message_is_not_sent_yet(rt: Runtime, db: Conn) -> None:
    # Submission answers before the dispatcher sends stage 1: dispatched_at is still NULL.
    job_id = JobId(submitted("noop_fanout", {"tasks": 2}))
    db.execute("UPDATE jobs SET dispatched_at = NULL WHERE job_id = %s", (job_id,))

    found = diagnose(job_id)

    assert found.state == "dispatch_pending"
    assert (found.evidence.unsent_messages, found.evidence.held_messages) == (1, 0)


def test_lost_stage_message(rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames) -> None:
    job_id = JobId(submitted("noop_fanout", {"tasks": 2}))
    take(azurite, queue_names.jobs)  # the message is lost
    db.execute(
        "UPDATE jobs SET dispatched_at = now() - interval '700 seconds' WHERE job_id = %s",
        (job_id,),
    )

    found = diagnose(job_id)

    assert found.state == "lost_message"
    assert found.evidence.waiting_since is not None
    assert found.evidence.waiting_since.kind == "job"
    assert re.search(r"the message for stage 1 \(noop_1\) was sent 70[0-4] s ago", found.verdict)
    assert "never started" in found.verdict


def test_lost_task_messages(rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    db.execute(
        "UPDATE tasks SET dispatched_at = now() - interval '5 minutes' WHERE job_id = %s",
        (job_id,),
    )

    found = diagnose(job_id)

    assert found.state == "lost_message"
    assert re.search(
        r"3 task messages of stage 1 \(noop_1\) were sent 30[0-4] s ago and none was claimed",
        found.verdict,
    ), found.verdict


def test_dead_worker(rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    rt.tasks.claim(task_ids(job_id, 2), "host-dead")
    db.execute(
        "UPDATE tasks SET heartbeat_at = now() - interval '95 seconds'"
        " WHERE job_id = %s AND status = 'processing'",
        (job_id,),
    )

    found = diagnose(job_id)

    assert found.state == "dead_worker"
    # The seconds are the database's now() at the read: 95 and whatever the test took since.
    assert re.search(
        r"waiting on 2 tasks whose worker host-dead stopped heartbeating 9[5-9] s ago",
        found.verdict,
    ), found.verdict
    assert "the janitor will retry them at its next run" in found.verdict
    assert [c.worker for c in found.evidence.expired_claims] == ["host-dead", "host-dead"]
    assert all(94 <= c.silent_s < 120 for c in found.evidence.expired_claims)


def test_silent_worker_before_its_lease_ends(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames
) -> None:
    job_id = started(azurite, queue_names)
    rt.tasks.claim(task_ids(job_id, 1), "host-quiet")
    # Three heartbeats (10 s) missed, the lease (60 s) not over yet.
    db.execute(
        "UPDATE tasks SET heartbeat_at = now() - interval '40 seconds'"
        " WHERE job_id = %s AND status = 'processing'",
        (job_id,),
    )

    found = diagnose(job_id)

    assert found.state == "dead_worker"
    assert found.evidence.expired_claims == []
    (claim,) = found.evidence.silent_claims
    lease_end = (claim.heartbeat_at + timedelta(seconds=60)).strftime("%H:%M:%S UTC")
    assert re.search(r"whose worker host-quiet stopped heartbeating 4[0-4] s ago", found.verdict)
    assert f"unless it comes back, the janitor will retry them at {lease_end}" in found.verdict


def test_poison(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names, tasks=2)
    ids = task_ids(job_id, 2)
    rt.poison.record(queue_names.tasks_poison, "m-1", "{}", 5, "failed 5 deliveries", job_id, ids)

    found = diagnose(job_id)

    assert found.state == "poison"
    (note,) = found.evidence.poison
    assert (note.open_tasks, note.task_ids) == (2, ids)
    assert f"named by poison message {note.poison_id} on {queue_names.tasks_poison}" in (
        found.verdict
    )


def test_paused(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    status, body = call_http("pause_job_type", "POST", {"job_type": "noop_fanout"})
    assert status == 202, body
    job_id = JobId(submitted("noop_fanout", {"tasks": 2}))
    for text in take(azurite, queue_names.jobs):
        deliver("jobs_queue", queue_message(text))

    found = diagnose(job_id)

    assert found.state == "paused"
    assert found.status == "queued"
    assert found.evidence.paused is True and found.evidence.held_messages == 1
    assert found.verdict.startswith(f"paused by {body['paused_by']} at ")
    assert "POST /api/job-types/noop_fanout/resume" in found.verdict


def test_stalled_stage(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names, tasks=2)
    for claim in rt.tasks.claim(task_ids(job_id, 2), "host-a"):
        rt.tasks.complete(claim.task_id, claim.attempt, {})  # the host dies before advancing

    found = diagnose(job_id)

    assert found.state == "stalled_stage"
    assert "all 2 tasks have ended but the stage never advanced" in found.verdict


def test_unknown_job_type(rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    db.execute("UPDATE jobs SET job_type = 'retired_type' WHERE job_id = %s", (job_id,))

    found = diagnose(job_id)

    assert found.state == "unknown_job_type"
    assert "job type 'retired_type' is not registered in this deployment" in found.verdict


def test_waiting_on_retries(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names, tasks=1)
    (claim,) = rt.tasks.claim(task_ids(job_id, 1), "host-a")
    error = TaskError(type="Timeout", message="downstream slow", attempt=1)
    assert rt.tasks.retry(claim.task_id, claim.attempt, error, timedelta(minutes=5))
    rt.tasks.mark_dispatched([claim.task_id])  # the delayed message is sent, as the runner does

    found = diagnose(job_id)

    assert found.state == "waiting_on_retries"
    assert "waiting on 1 retries; the next is due at " in found.verdict
    (retry,) = found.evidence.scheduled_retries
    assert (retry.attempt, retry.error) == (1, "downstream slow")


def test_finished_completed(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = submitted("hello_world", {"n": 2})
    pump(azurite, queue_names)

    found = diagnose(job_id)

    assert (found.state, found.status) == ("completed", "completed")
    assert found.verdict.startswith("finished: completed at ")


def test_finished_failed_says_why(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    rt.jobs.fail(job_id, {"message": "the input bucket is gone"}, "engine", "input missing")

    found = diagnose(job_id)

    assert found.state == "failed"
    assert found.verdict.startswith("finished: failed at ")
    assert found.verdict.endswith("because the input bucket is gone")


def test_finished_cancelled_names_who(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = started(azurite, queue_names)
    rt.engine.cancel(job_id, "alice", "wrong parameters")

    found = diagnose(job_id)

    assert found.state == "cancelled"
    assert found.verdict.startswith("finished: cancelled by alice at ")
    assert found.verdict.endswith("(wrong parameters)")
    assert found.evidence.ended_by is not None and found.evidence.ended_by.actor == "alice"


def test_last_janitor_action_is_evidence(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames
) -> None:
    job_id = started(azurite, queue_names)
    db.execute("UPDATE tasks SET dispatched_at = NULL, updated_at = now() - interval '1 hour'")
    rt.recovery.run_janitor()

    found = diagnose(job_id)

    action = found.evidence.last_janitor_action
    assert action is not None and action.kind == "repair"
    assert action.reason == "task message never sent: the sweeper sends it"


def test_unknown_and_malformed_jobs(rt: Runtime) -> None:
    assert call_http("diagnose_job", "GET", {"job_id": "ab" * 32})[0] == 404
    assert call_http("diagnose_job", "GET", {"job_id": "nope"})[0] == 400
