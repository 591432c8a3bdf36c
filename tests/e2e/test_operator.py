"""The operator's API through a local host, over HTTP only: pause and resume end to end, and
each operator route answering for a real job."""

from __future__ import annotations

from typing import Any

import pytest

from lightsout.client import ApiClient
from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import finished, rows, wait_for

pytestmark = pytest.mark.e2e
Json = dict[str, Any]


def call(api: ApiClient, method: str, path: str, expected: int = 200) -> Json:
    status, body = api.request(method, path)
    assert status == expected, (path, body)
    return body


def diagnosis(api: ApiClient, job_id: str) -> Json:
    return call(api, "GET", f"jobs/{job_id}/diagnose")


def test_pause_keeps_new_jobs_queued_and_resume_finishes_them_with_attempts_unchanged(
    start_hosts: StartHosts, database_url: str
) -> None:
    (host,) = start_hosts()
    api = host.api
    # Stage 1 runs when the pause comes; stage 2 must not start until the resume.
    early = api.submit("noop_fanout", {"tasks": 4, "stages": 2, "sleep_ms": 1500})["job_id"]
    wait_for(
        lambda: len(call(api, "GET", f"jobs/{early}/tasks?status=processing")["tasks"]) == 4,
        30,
        "stage 1's tasks to be claimed",
        every=0.05,
    )

    paused = call(api, "POST", "job-types/noop_fanout/pause", 202)
    assert paused["paused"] is True and paused["paused_by"]
    late = api.submit("noop_fanout", {"tasks": 3, "stages": 1})["job_id"]

    held = wait_for(
        lambda: (d := diagnosis(api, late))["evidence"]["held_messages"] and d, 30, "late held"
    )
    assert (held["state"], held["status"]) == ("paused", "queued")
    early_held = wait_for(
        lambda: (d := diagnosis(api, early))["evidence"]["held_messages"] and d, 60, "stage 2 held"
    )
    assert early_held["state"] == "paused"
    assert [s["status"] for s in early_held["evidence"]["stages"]] == ["completed", "pending"]
    types = {t["job_type"]: t for t in call(api, "GET", "job-types")["job_types"]}
    assert types["noop_fanout"]["paused"] is True
    assert api.job(late)["status"] == "queued"

    resumed = call(api, "POST", "job-types/noop_fanout/resume", 202)
    assert resumed["paused"] is False

    assert finished(api, early)["status"] == "completed"
    assert finished(api, late)["status"] == "completed"
    attempts = rows(database_url, "SELECT DISTINCT attempt FROM tasks")
    assert attempts == [{"attempt": 1}]
    actions = [
        e["detail"]["action"]
        for e in call(api, "GET", f"jobs/{early}/events")["events"]
        if e["kind"] == "operator"
    ]
    assert actions == ["pause", "hold", "resume"]


def test_operator_routes_answer_for_a_real_job(start_hosts: StartHosts) -> None:
    (host,) = start_hosts()
    api = host.api
    slow = api.submit("noop_fanout", {"tasks": 2, "stages": 1, "sleep_ms": 6000})["job_id"]

    # A running task's report shows in the job's progress, and its worker in /workers.
    moving = wait_for(
        lambda: (j := api.job(slow))["progress"]["fraction"] > 0 and j, 60, "progress"
    )
    assert moving["progress"]["fraction"] < 1
    workers = call(api, "GET", "workers")["workers"]
    assert [(w["worker"], w["jobs"]) for w in workers] == [(host.name, [slow])]
    assert workers[0]["tasks_in_hand"] == 2
    assert diagnosis(api, slow)["state"] == "running"

    done = finished(api, slow)
    assert done["status"] == "completed" and done["progress"]["fraction"] == 1.0
    found = diagnosis(api, slow)
    assert (found["state"], found["verdict"][:21]) == ("completed", "finished: completed a")
    history = call(api, "GET", f"jobs/{slow}/events?limit=1")
    assert len(history["events"]) == 1 and history["next_cursor"]

    queued = api.submit("hello_world", {"n": 1, "name": "bulk"})["job_id"]
    assert call(api, "POST", "jobs/cancel", 400)["error"] == "bad_request"
    cancelled = call(api, "POST", "jobs/cancel?job_type=hello_world&status=queued", 202)
    assert cancelled["matched"] == cancelled["cancelled"] <= 1
    retried = call(api, "POST", "jobs/retry?status=failed", 202)
    assert retried == {"matched": 0, "retried": 0}
    assert finished(api, queued)["status"] in ("cancelled", "completed")
