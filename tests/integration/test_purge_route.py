"""POST /api/jobs/purge through the registered function: what it deletes, what it refuses."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from schemas.http import PurgeResponse
from tests.fixtures_services import TEST_KEY_NAME
from tests.integration.test_triggers import KEY_HEADER, call_http, error, submitted
from triggers.runtime import Runtime, reset_runtime, runtime


@pytest.fixture
def rt(settings_env: dict[str, str]) -> Iterator[Runtime]:
    reset_runtime()
    yield runtime()
    reset_runtime()


def finish_long_ago(db: psycopg.Connection[dict[str, Any]], job_id: str, status: str) -> None:
    db.execute(
        "UPDATE jobs SET status = %s, finished_at = now() - interval '40 days',"
        " error = CASE WHEN %s = 'failed' THEN '{\"message\": \"x\"}'::jsonb END"
        " WHERE job_id = %s",
        (status, status, job_id),
    )


def test_purge_deletes_old_finished_jobs_of_the_statuses_given(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]]
) -> None:
    old_failed = submitted("hello_world", {"n": 1, "name": "old-failed"})
    old_done = submitted("hello_world", {"n": 1, "name": "old-done"})
    running = submitted("hello_world", {"n": 1, "name": "running"})
    finish_long_ago(db, old_failed, "failed")
    finish_long_ago(db, old_done, "completed")

    status, body = call_http("purge_jobs", "POST", params={"older_than": "30d", "status": "failed"})
    assert status == 200, body
    answer = PurgeResponse.model_validate(body)
    assert (answer.jobs, answer.statuses, answer.more) == (1, ["failed"], False)
    left = {r["job_id"] for r in db.execute("SELECT job_id FROM jobs").fetchall()}
    assert left == {old_done, running}

    status, body = call_http("purge_jobs", "POST", params={"older_than": "2026-01-01T00:00:00"})
    assert status == 200 and body["jobs"] == 0, body
    status, body = call_http("purge_jobs", "POST", params={"older_than": "1h"})
    assert status == 200 and body["jobs"] == 1, body
    assert {r["job_id"] for r in db.execute("SELECT job_id FROM jobs").fetchall()} == {running}
    events = db.execute("SELECT count(*) AS n FROM job_events WHERE job_id <> %s", (running,))
    assert events.fetchone() == {"n": 0}


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({}, "older_than"),
        ({"older_than": "yesterday"}, "older_than"),
        # Found by schemathesis: an age past datetime's range was an OverflowError (500).
        ({"older_than": "001794755302803529860h"}, "older_than"),
        ({"older_than": "30d", "status": "processing"}, "status"),
        ({"older_than": "30d", "status": "done,failed"}, "status"),
    ],
)
def test_purge_refuses_bad_parameters_naming_them(
    rt: Runtime, params: dict[str, str], names: str
) -> None:
    status, body = call_http("purge_jobs", "POST", params=params)
    parsed = error(status, body, 400, "bad_request")
    assert names in parsed.message


def test_purge_needs_the_admin_scope(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    submitter = "submitter-key-" + "s" * 24
    keys = {"submitter": {"key": submitter, "scopes": ["jobs:read", "jobs:submit"]}}
    monkeypatch.setenv("LIGHTSOUT_API_KEYS", json.dumps(keys))
    reset_runtime()
    try:
        status, body = call_http(
            "purge_jobs", "POST", params={"older_than": "30d"}, headers={KEY_HEADER: submitter}
        )
    finally:
        reset_runtime()
    assert "jobs:admin" in error(status, body, 403, "forbidden").message


def test_purge_logs_the_caller_as_actor(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    old = submitted("hello_world", {"n": 1, "name": "old-logged"})
    finish_long_ago(db, old, "completed")
    with caplog.at_level(logging.WARNING, logger="controllers.retention"):
        status, body = call_http("purge_jobs", "POST", params={"older_than": "30d"})
    assert (status, body["jobs"]) == (200, 1), body
    assert f"purge by api-key:{TEST_KEY_NAME}:" in caplog.text
