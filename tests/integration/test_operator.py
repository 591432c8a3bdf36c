"""The operator's routes and procedures against real PostgreSQL and Azurite, called in-process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from controllers.stages import UserCodeError
from controllers.transitions import enter_stage
from schemas.ids import JobId
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.operator import EventList, PauseResponse, WorkerList
from tests.fixtures_services import TEST_API_KEYS, QueueNames
from tests.integration.test_diagnose import pump, started, task_ids
from tests.integration.test_triggers import (
    KEY_HEADER,
    call_http,
    deliver,
    job,
    queue_message,
    submitted,
    take,
)
from triggers.runtime import Runtime, reset_runtime, runtime

Conn = psycopg.Connection[dict[str, Any]]


READER = "reader-" + "r" * 24


@pytest.fixture
def rt(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    keys = {**json.loads(TEST_API_KEYS), "reader": {"key": READER, "scopes": ["jobs:read"]}}
    monkeypatch.setenv("LIGHTSOUT_API_KEYS", json.dumps(keys))
    reset_runtime()
    yield runtime()
    reset_runtime()


def pause(job_type: str, reason: str | None = None) -> PauseResponse:
    body = json.dumps({"reason": reason}).encode() if reason else b""
    status, answer = call_http("pause_job_type", "POST", {"job_type": job_type}, body=body)
    assert status == 202, answer
    return PauseResponse.model_validate(answer)


def resume(job_type: str) -> PauseResponse:
    status, answer = call_http("resume_job_type", "POST", {"job_type": job_type})
    assert status == 202, answer
    return PauseResponse.model_validate(answer)


def events(job_id: str, **params: str) -> EventList:
    status, body = call_http("job_events", "GET", {"job_id": job_id}, params=params)
    assert status == 200, body
    return EventList.model_validate(body)


def test_events_are_the_history_oldest_first_in_pages(
    rt: Runtime, azurite: str, queue_names: QueueNames
) -> None:
    job_id = submitted("hello_world", {"n": 2})
    pump(azurite, queue_names)

    everything = events(job_id).events
    pages, cursor = [], None
    while True:
        page = events(job_id, limit="2", **({"cursor": cursor} if cursor else {}))
        pages.append(page.events)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert [e for p in pages for e in p] == everything
    assert all(len(p) <= 2 for p in pages)
    ids = [e.event_id for e in everything]
    assert ids == sorted(ids)
    assert (everything[0].kind, everything[0].to_status, everything[0].reason) == (
        "job_status",
        "queued",
        "submitted",
    )
    assert (everything[-1].kind, everything[-1].to_status) == ("job_status", "completed")


def test_events_refuse_unknown_jobs_and_forged_cursors(rt: Runtime) -> None:
    job_id = submitted("hello_world", {"n": 1})
    assert call_http("job_events", "GET", {"job_id": "ab" * 32})[0] == 404
    assert call_http("job_events", "GET", {"job_id": job_id}, params={"cursor": "x!"})[0] == 400
    assert call_http("job_events", "GET", {"job_id": job_id}, params={"limit": "0"})[0] == 400


def test_pause_holds_stage_starts_and_task_messages_and_resume_sends_them(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames
) -> None:
    running = started(azurite, queue_names, tasks=3)  # stage 1 built, its messages taken
    answer = pause("noop_fanout", "downstream is down")
    assert answer.paused is True and answer.paused_by  # the caller's identity
    who = answer.paused_by
    assert pause("noop_fanout").paused_at == answer.paused_at  # pausing again changes nothing
    waiting = JobId(submitted("noop_fanout", {"tasks": 2, "stages": 1}))

    # The messages already in flight arrive while paused: held, nothing claimed.
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))
    message = TaskQueueMessage(job_id=running, stage=1, task_ids=task_ids(running, 3))
    deliver("tasks_queue", queue_message(message.model_dump_json()))
    rt.recovery.run_janitor()  # the sweeper and the idle re-opener leave held rows alone

    assert job(waiting).status == "queued"
    assert db.execute("SELECT count(*) AS n FROM tasks WHERE job_id = %s", (waiting,)).fetchone()
    tasks = db.execute("SELECT status, attempt FROM tasks WHERE job_id = %s", (running,)).fetchall()
    assert tasks == [{"status": "queued", "attempt": 0}] * 3
    assert take(azurite, queue_names.jobs) == [] and take(azurite, queue_names.tasks) == []
    held = db.execute(
        "SELECT count(*) AS n FROM tasks WHERE dispatched_at = pause_hold()"
    ).fetchone()
    assert held == {"n": 3}

    assert resume("noop_fanout").paused is False
    sent_jobs = [JobQueueMessage.model_validate_json(t) for t in take(azurite, queue_names.jobs)]
    sent_tasks = [TaskQueueMessage.model_validate_json(t) for t in take(azurite, queue_names.tasks)]
    assert sent_jobs == [JobQueueMessage(job_id=waiting, stage=1)]
    assert [sorted(m.task_ids) for m in sent_tasks] == [sorted(task_ids(running, 3))]
    for msg in sent_jobs:
        deliver("jobs_queue", queue_message(msg.model_dump_json()))
    for task_msg in sent_tasks:
        deliver("tasks_queue", queue_message(task_msg.model_dump_json()))
    pump(azurite, queue_names)

    assert job(running).status == "completed" and job(waiting).status == "completed"
    attempts = db.execute("SELECT DISTINCT attempt FROM tasks").fetchall()
    assert attempts == [{"attempt": 1}]
    actions = [
        (e.actor, (e.detail or {}).get("action"))
        for e in events(running).events
        if e.kind == "operator"
    ]
    assert actions == [(who, "pause"), (who, "resume")]
    held_events = [e.reason for e in events(waiting).events if e.kind == "operator"]
    assert held_events == [
        "stage 1 held: job type noop_fanout is paused",
        "job type noop_fanout resumed",
    ]


def test_a_stage_entered_in_process_while_paused_stays_held_until_resume(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames
) -> None:
    pause("noop_fanout")
    waiting = JobId(submitted("noop_fanout", {"tasks": 2, "stages": 1}))
    take(azurite, queue_names.jobs)  # its stage-1 message, sent before anyone processed it

    # The process that would enter the stage itself (after the previous stage's last task)
    # finds the type paused: the hold must survive its "marked sent" afterwards.
    enter_stage(rt.engine.driver, waiting, 1)
    held = db.execute(
        "SELECT dispatched_at = pause_hold() AS held FROM jobs WHERE job_id = %s", (waiting,)
    ).fetchone()
    assert held == {"held": True}

    resume("noop_fanout")
    sent = [JobQueueMessage.model_validate_json(t) for t in take(azurite, queue_names.jobs)]
    assert sent == [JobQueueMessage(job_id=waiting, stage=1)]


def test_a_pause_made_while_a_stage_is_built_holds_its_start(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTSOUT_LOCAL_RUNS", "2")  # the hosts' default: no check of its own
    reset_runtime()
    here = runtime()
    local = here.engine.driver.local
    assert local is not None
    waiting = JobId(submitted("noop_fanout", {"tasks": 2, "stages": 1}))
    (text,) = take(azurite, queue_names.jobs)
    build = here.engine.driver._build

    def paused_while_building(*args: Any) -> Any:
        pause("noop_fanout")
        return build(*args)

    monkeypatch.setattr(here.engine.driver, "_build", paused_while_building)
    deliver("jobs_queue", queue_message(text))
    local.drain()

    # Not started, so nothing to run here or to send: the job waits, held, for the resume.
    assert job(waiting).status == "queued"
    assert db.execute("SELECT count(*) AS n FROM tasks").fetchone() == {"n": 0}
    assert take(azurite, queue_names.tasks) == []
    held = db.execute(
        "SELECT dispatched_at = pause_hold() AS held FROM jobs WHERE job_id = %s", (waiting,)
    ).fetchone()
    assert held == {"held": True}

    monkeypatch.setattr(here.engine.driver, "_build", build)
    resume("noop_fanout")
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))
    local.drain()
    assert job(waiting).status == "completed"


def test_a_build_that_raises_while_paused_holds_the_job_rather_than_failing_it(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = JobId(submitted("noop_fanout", {"tasks": 2, "stages": 1}))
    (text,) = take(azurite, queue_names.jobs)
    pause("noop_fanout")

    def raises(*args: Any) -> Any:
        raise UserCodeError("build", 1, RuntimeError("downstream is down"))

    monkeypatch.setattr(rt.engine.driver, "_build", raises)
    deliver("jobs_queue", queue_message(text))

    assert job(waiting).status == "queued"  # the pause decides: built again on resume
    held = db.execute(
        "SELECT dispatched_at = pause_hold() AS held FROM jobs WHERE job_id = %s", (waiting,)
    ).fetchone()
    assert held == {"held": True}


def test_the_janitor_does_not_reap_a_paused_types_tasks(
    rt: Runtime, db: Conn, azurite: str, queue_names: QueueNames
) -> None:
    job_id = started(azurite, queue_names, tasks=1)
    rt.tasks.claim(task_ids(job_id, 1), "host-dead")
    db.execute("UPDATE tasks SET heartbeat_at = now() - interval '10 minutes'")
    pause("noop_fanout")

    assert rt.recovery.run_janitor().reaped_retried == 0
    assert db.execute("SELECT status FROM tasks").fetchall() == [{"status": "processing"}]

    resume("noop_fanout")
    assert rt.recovery.run_janitor().reaped_retried == 1


def test_job_types_show_the_pause(rt: Runtime) -> None:
    who = pause("hello_world").paused_by
    status, body = call_http("job_types", "GET")
    assert status == 200
    shown = {t["job_type"]: (t["paused"], t["paused_by"]) for t in body["job_types"]}
    assert shown["hello_world"] == (True, who)
    assert shown["noop_fanout"] == (False, None)


def test_pausing_an_unknown_job_type_is_400(rt: Runtime) -> None:
    status, body = call_http("pause_job_type", "POST", {"job_type": "no_such_type"})
    assert (status, body["error"]) == (400, "unknown_job_type")


def test_bulk_cancel_by_type_and_status(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    first = started(azurite, queue_names, tasks=1)
    second = JobId(submitted("noop_fanout", {"tasks": 2}))
    other = JobId(submitted("hello_world", {"n": 1}))

    status, body = call_http(
        "cancel_jobs", "POST", params={"job_type": "noop_fanout", "status": "queued"}
    )
    assert (status, body) == (202, {"matched": 1, "cancelled": 1})
    status, body = call_http("cancel_jobs", "POST", params={"job_type": "noop_fanout"})
    assert (status, body) == (202, {"matched": 2, "cancelled": 1})

    assert (job(first).status, job(second).status, job(other).status) == (
        "cancelled",
        "cancelled",
        "queued",
    )
    cancel_event = [e for e in events(first).events if e.to_status == "cancelled"][-1]
    assert cancel_event.actor not in ("engine", "api", "janitor")  # the caller's identity
    assert cancel_event.reason == "bulk cancel: job_type=noop_fanout"


def test_bulk_retry_reruns_failed_jobs(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    failing = JobId(submitted("noop_fanout", {"tasks": 2, "stages": 1, "fail_task_indices": [1]}))
    fine = JobId(submitted("noop_fanout", {"tasks": 1, "stages": 1}))
    for _ in range(40):  # three attempts of the failing task, each after its backoff
        pump(azurite, queue_names)
        if job(failing).status == "failed":
            break
        time.sleep(0.5)  # the retry's message becomes visible after its backoff
    assert job(failing).status == "failed" and job(fine).status == "completed"

    status, body = call_http("retry_jobs", "POST", params={"job_type": "noop_fanout"})

    assert (status, body) == (202, {"matched": 2, "retried": 1})
    assert job(failing).status == "processing"


@pytest.mark.parametrize("name", ["cancel_jobs", "retry_jobs"])
def test_bulk_actions_need_a_filter(rt: Runtime, name: str) -> None:
    status, body = call_http(name, "POST")
    assert status == 400 and "at least one filter" in body["message"]
    status, body = call_http(name, "POST", params={"status": "sleeping"})
    assert status == 400 and "status" in body["message"]
    status, body = call_http(name, "POST", params={"job_type": "no\x00such"})
    assert status == 400 and "job_type" in body["message"]


def test_workers_from_claims_and_heartbeats(
    rt: Runtime, azurite: str, queue_names: QueueNames
) -> None:
    job_id = started(azurite, queue_names, tasks=3)
    rt.tasks.claim(task_ids(job_id, 3)[:2], "host-a")
    (claim,) = rt.tasks.claim(task_ids(job_id, 3)[2:], "host-b")
    rt.tasks.complete(claim.task_id, claim.attempt, {})

    status, body = call_http("list_workers", "GET")

    assert status == 200, body
    workers = {w.worker: w for w in WorkerList.model_validate(body).workers}
    assert set(workers) == {"host-a", "host-b"}
    assert (workers["host-a"].tasks_in_hand, workers["host-a"].jobs) == (2, [job_id])
    assert workers["host-a"].last_heartbeat_at is not None
    assert (workers["host-b"].tasks_in_hand, workers["host-b"].last_heartbeat_at) == (0, None)
    assert workers["host-b"].last_claim_at is not None


def test_progress_is_kept_per_attempt_and_summed_into_the_job(
    rt: Runtime, azurite: str, queue_names: QueueNames
) -> None:
    job_id = started(azurite, queue_names, tasks=4)
    claims = rt.tasks.claim(task_ids(job_id, 4)[:2], "host-a")
    assert rt.tasks.report_progress(claims[0].task_id, claims[0].attempt, 0.5, "half")
    assert not rt.tasks.report_progress(claims[1].task_id, claims[1].attempt + 1, 0.9, "stale")
    rt.tasks.complete(claims[1].task_id, claims[1].attempt, {})

    view = job(job_id)

    # Stage 1: one task ended, one half way, of four: 1.5 / 4; stage 2 not started.
    assert view.stages[0].fraction == pytest.approx(0.375)
    assert view.progress.fraction == pytest.approx(0.1875)
    status, body = call_http("list_tasks", "GET", {"job_id": job_id}, params={"stage": "1"})
    assert status == 200, body
    shown = {t["task_index"]: (t["progress"], t["progress_message"]) for t in body["tasks"]}
    assert shown[0] == (0.5, "half") and shown[1] == (None, None)


@pytest.mark.parametrize(
    ("name", "method", "route", "scope"),
    [
        ("job_events", "GET", {"job_id": "ab" * 32}, "jobs:read"),
        ("diagnose_job", "GET", {"job_id": "ab" * 32}, "jobs:read"),
        ("list_workers", "GET", {}, "jobs:read"),
        ("pause_job_type", "POST", {"job_type": "hello_world"}, "jobs:admin"),
        ("resume_job_type", "POST", {"job_type": "hello_world"}, "jobs:admin"),
        ("cancel_jobs", "POST", {}, "jobs:admin"),
        ("retry_jobs", "POST", {}, "jobs:admin"),
    ],
)
def test_reads_need_jobs_read_and_actions_jobs_admin(
    rt: Runtime, name: str, method: str, route: dict[str, str], scope: str
) -> None:
    status, body = call_http(name, method, route, headers={KEY_HEADER: READER})
    if scope == "jobs:admin":
        assert (status, body["error"]) == (403, "forbidden")
        assert "jobs:admin" in body["message"]
    else:
        assert status in (200, 404), body  # past the scope check
    assert call_http(name, method, route, headers={KEY_HEADER: ""})[0] == 401
