"""Hosts meeting trouble: malformed messages from a foreign producer, a host stopped mid-stage."""

from __future__ import annotations

import pytest

from controllers.jobtypes.noop_fanout import TASKS_PER_MESSAGE
from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import finished, peek, queue_exists, rows, send_raw, wait_for
from tests.fixtures_services import QueueNames

pytestmark = pytest.mark.e2e


def test_malformed_task_messages_end_in_the_poison_path_and_the_host_keeps_working(
    start_hosts: StartHosts, database_url: str, azurite: str, queue_names: QueueNames
) -> None:
    (host,) = start_hosts()
    bad_json, not_base64 = '{"job_id": "nope"}', "this is not base64 !!"

    send_raw(azurite, queue_names.tasks, bad_json)
    send_raw(azurite, queue_names.tasks, not_base64, encode=False)
    answer = host.api.submit("hello_world", {"n": 10})

    recorded = wait_for(
        lambda: rows(database_url, "SELECT * FROM poison_messages WHERE body = %s", bad_json),
        timeout=20,
        what="the malformed message's poison record",
    )
    assert [(r["queue_name"], r["job_id"], r["task_ids"]) for r in recorded] == [
        (queue_names.tasks, None, [])
    ]
    assert recorded[0]["reason"].startswith("malformed TaskQueueMessage: job_id: ")
    assert "64 lowercase hexadecimal" in recorded[0]["reason"]
    # A message the host cannot decode reaches no task function: the host moves it to the
    # poison queue unread (as the Functions host does), whose trigger records it at once.
    (undecodable,) = wait_for(
        lambda: rows(database_url, "SELECT * FROM poison_messages WHERE body = %s", not_base64),
        timeout=30,
        what="the non-base64 message's poison record",
    )
    assert (undecodable["queue_name"], undecodable["job_id"], undecodable["task_ids"]) == (
        queue_names.tasks_poison,
        None,
        [],
    )
    assert undecodable["reason"] == (
        "not base64 as host.json messageEncoding says; moved here unread"
    )
    assert not queue_exists(azurite, f"{queue_names.tasks_poison}-poison")
    assert not_base64 not in peek(azurite, queue_names.tasks)
    assert "is not base64" in host.log

    job = finished(host.api, answer["job_id"])
    assert job["status"] == "completed", job["error"]
    assert job["result"] == {"greetings": 10, "replies": 10, "summary": "10 hellos, 10 replies"}
    assert host.api.request("GET", "health")[0] == 200
    assert host.proc.poll() is None


def test_a_host_stopped_mid_stage_leaves_the_rest_to_the_next_host(
    start_hosts: StartHosts, database_url: str
) -> None:
    # Two messages in flight (and the stage's first, run locally), 100 tasks of 100 ms
    # each per message on 8 threads: a stage of 8 messages takes ~4 s.
    (first,) = start_hosts(args=["--concurrency", "2"])
    params = {"tasks": 800, "stages": 2, "sleep_ms": 100}
    job_id = first.api.submit("noop_fanout", params)["job_id"]
    wait_for(
        lambda: first.api.job(job_id)["stages"][0]["completed"] >= TASKS_PER_MESSAGE,
        timeout=30,
        what="the first task message of stage 1 to complete",
    )

    assert first.terminate() == 0
    midway = rows(
        database_url,
        "SELECT j.status, j.stage, s.completed_count, s.remaining FROM jobs j"
        " JOIN job_stages s ON s.job_id = j.job_id AND s.stage = 1 WHERE j.job_id = %s",
        job_id,
    )
    assert [(r["status"], r["stage"]) for r in midway] == [("processing", 1)]
    assert midway[0]["remaining"] > 0, "the stage ended before the host was stopped"
    assert "Stopped with functions still running" not in first.log

    (second,) = start_hosts()
    job = finished(second.api, job_id, timeout=60)

    assert job["status"] == "completed", job["error"]
    tasks = rows(
        database_url,
        "SELECT stage, claimed_by, status, attempt, count(*) AS n FROM tasks WHERE job_id = %s"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2",
        job_id,
    )
    # Every task ran once: the stopped host finished what it had taken, the next one the rest.
    assert {(r["status"], r["attempt"]) for r in tasks} == {("completed", 1)}
    by_stage = {(r["stage"], r["claimed_by"]): r["n"] for r in tasks}
    assert by_stage[(1, first.name)] == midway[0]["completed_count"]
    assert by_stage[(1, first.name)] + by_stage[(1, second.name)] == 800
    assert by_stage[(2, second.name)] == 800
