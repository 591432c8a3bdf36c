"""The operator's recovery actions through a local host, over HTTP, across the real queues."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import finished, rows, send_raw, wait_for
from tests.fixtures_services import QueueNames

pytestmark = pytest.mark.e2e


def test_operator_retry_runs_the_failed_tasks_again_and_the_job_completes(
    start_hosts: StartHosts, database_url: str
) -> None:
    (host,) = start_hosts()
    # Task 2 fails its three attempts; the operator's retry gives it the fourth it needs.
    params = {"tasks": 4, "stages": 1, "fail_until_attempt": {"2": 4}}
    job_id = host.api.submit("noop_fanout", params)["job_id"]
    job = finished(host.api, job_id)
    assert job["status"] == "failed", job
    assert job["error"]["failed_task_ids"] == [f"{job_id}-s1-t2"]

    status, answer = host.api.request("POST", f"jobs/{job_id}/retry")
    assert status == 202, answer
    assert (answer["stage"], answer["retried_tasks"]) == (1, 1)
    job = finished(host.api, job_id)

    assert job["status"] == "completed", job["error"]
    attempts = rows(
        database_url, "SELECT task_index, attempt FROM tasks WHERE job_id = %s ORDER BY 1", job_id
    )
    assert [r["attempt"] for r in attempts] == [1, 1, 4, 1]
    status, refused = host.api.request("POST", f"jobs/{job_id}/retry")
    assert status == 409, refused


def test_poison_is_listed_and_replayed_once_unless_forced(
    start_hosts: StartHosts, database_url: str, azurite: str, queue_names: QueueNames
) -> None:
    (host,) = start_hosts()
    body = '{"job_id": "not-an-id", "stage": 1}'
    send_raw(azurite, queue_names.jobs, body)

    def records() -> list[dict[str, object]]:
        return rows(database_url, "SELECT * FROM poison_messages WHERE body = %s", body)

    (first,) = wait_for(records, 20, "the malformed job message's poison record")
    status, listed = host.api.request("GET", "poison")
    assert status == 200
    assert [p["poison_id"] for p in listed["poison"]] == [first["poison_id"]]

    status, replay = host.api.request("POST", f"poison/{first['poison_id']}/replay")
    assert status == 202, replay
    assert replay["queue_name"] == queue_names.jobs
    # The replayed message crossed the jobs queue again and came back as poison once more.
    wait_for(lambda: len(records()) == 2, 20, "the replayed message's own poison record")

    status, refused = host.api.request("POST", f"poison/{first['poison_id']}/replay")
    assert status == 409, refused
    assert "replayed already at" in refused["message"]
    status, forced = host.api.request("POST", f"poison/{first['poison_id']}/replay?force=true")
    assert status == 202, forced
    wait_for(lambda: len(records()) == 3, 20, "the forced replay's poison record")
