"""Task queue shards against real Azurite and PostgreSQL: sends, triggers, poison, janitor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from azure.storage.queue import QueueClient

from controllers.jobtypes.noop_fanout import TASKS_PER_MESSAGE
from controllers.recovery import Timings
from repositories.queues import QueueRepository
from schemas.ids import JobId, make_task_id
from schemas.messages import TaskQueueMessage
from schemas.work import NewTask
from tests.fixtures_services import QueueNames
from tests.integration.test_triggers import call_http, deliver, queue_message, submitted, take
from triggers.runtime import Runtime, reset_runtime, runtime

pytestmark = pytest.mark.integration
Db = psycopg.Connection[dict[str, Any]]
SHARDS = 4
JOB = JobId("d1" * 32)
PER_MESSAGE = TASKS_PER_MESSAGE  # noop_fanout's


def shard(queues: QueueNames, k: int) -> str:
    return queues.tasks if k == 0 else f"{queues.tasks}-{k}"


def shard_function(k: int) -> str:
    return "tasks_queue" if k == 0 else f"tasks_queue_{k}"


@pytest.fixture
def rt(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The runtime of this test's settings with four task queue shards (its queues created)."""
    monkeypatch.setenv("LIGHTSOUT_TASK_QUEUE_SHARDS", str(SHARDS))
    reset_runtime()
    yield runtime()
    reset_runtime()


def message(index: int) -> TaskQueueMessage:
    return TaskQueueMessage(job_id=JOB, stage=1, task_ids=[make_task_id(JOB, 1, index)])


def named(texts: list[str]) -> list[str]:
    return [TaskQueueMessage.model_validate_json(t).task_ids[0] for t in texts]


def test_task_messages_go_round_robin_over_every_shard(
    azurite: str, queue_names: QueueNames
) -> None:
    with QueueRepository(azurite, queue_names.jobs, queue_names.tasks, task_shards=4) as repo:
        repo.ensure_queues()
        repo.send_tasks([message(i) for i in range(10)])
        repo.send_tasks([message(i) for i in range(10, 12)])  # goes on where the first ended

        for k in range(SHARDS):
            ids = named(repo.peek(shard(queue_names, k)))
            assert set(ids) == {make_task_id(JOB, 1, i) for i in range(k, 12, SHARDS)}
        counts = repo.approximate_counts()
    shards = [shard(queue_names, k) for k in range(SHARDS)]
    assert counts == {
        queue_names.jobs: 0,
        **dict.fromkeys(shards, 3),
        queue_names.jobs_poison: 0,
        **{f"{queue}-poison": 0 for queue in shards},
    }


def test_every_shard_queue_and_its_poison_queue_is_created(
    azurite: str, queue_names: QueueNames
) -> None:
    with QueueRepository(azurite, queue_names.jobs, queue_names.tasks, task_shards=4) as repo:
        assert repo.health() is not None
        repo.ensure_queues()
        assert repo.health() is None
    for k in range(SHARDS):
        for queue in (shard(queue_names, k), f"{shard(queue_names, k)}-poison"):
            with QueueClient.from_connection_string(azurite, queue) as client:
                assert client.get_queue_properties().name == queue


def test_one_shard_sends_everything_to_the_tasks_queue(
    azurite: str, queue_names: QueueNames
) -> None:
    with QueueRepository(azurite, queue_names.jobs, queue_names.tasks) as repo:
        repo.ensure_queues()
        repo.send_tasks([message(i) for i in range(3)])
        assert repo.task_queues == (queue_names.tasks,)
        assert sorted(named(repo.peek(queue_names.tasks))) == [
            make_task_id(JOB, 1, i) for i in range(3)
        ]


def test_a_job_runs_through_the_shard_triggers(
    rt: Runtime, db: Db, azurite: str, queue_names: QueueNames
) -> None:
    job_id = submitted("noop_fanout", {"tasks": 8 * PER_MESSAGE, "stages": 1})
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))

    per_shard = {k: take(azurite, shard(queue_names, k)) for k in range(SHARDS)}
    assert {k: len(texts) for k, texts in per_shard.items()} == dict.fromkeys(range(SHARDS), 2)
    for k, texts in per_shard.items():
        for text in texts:
            deliver(shard_function(k), queue_message(text))

    status, view = call_http("get_job", "GET", {"job_id": job_id})
    assert status == 200 and view["status"] == "completed", view
    rows = db.execute("SELECT status, attempt, count(*) AS n FROM tasks GROUP BY 1, 2").fetchall()
    assert [(r["status"], r["attempt"], r["n"]) for r in rows] == [
        ("completed", 1, 8 * PER_MESSAGE)
    ]


def test_a_poison_message_of_shard_two_is_recorded_and_its_tasks_failed(
    rt: Runtime, db: Db, azurite: str, queue_names: QueueNames
) -> None:
    job_id = JobId(submitted("noop_fanout", {"tasks": 3 * PER_MESSAGE, "stages": 1}))
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))
    (text,) = take(azurite, shard(queue_names, 2))
    poisoned = queue_message(text, dequeue_count=5)

    deliver("tasks_poison_2", poisoned)

    (row,) = db.execute("SELECT * FROM poison_messages").fetchall()
    assert (row["queue_name"], row["message_id"]) == (f"{queue_names.tasks}-2-poison", poisoned.id)
    assert row["task_ids"] == TaskQueueMessage.model_validate_json(text).task_ids
    failed = db.execute(
        "SELECT task_id FROM tasks WHERE status = 'failed' AND error->>'type' = 'PoisonMessage'"
    ).fetchall()
    assert sorted(r["task_id"] for r in failed) == sorted(row["task_ids"])
    for k in (0, 1):
        for other in take(azurite, shard(queue_names, k)):
            deliver(shard_function(k), queue_message(other))
    status, view = call_http("get_job", "GET", {"job_id": job_id})
    assert status == 200 and view["status"] == "failed", view
    assert sorted(view["error"]["failed_task_ids"]) == sorted(row["task_ids"])
    assert view["progress"]["completed"] == 2 * PER_MESSAGE


def test_a_poison_message_is_replayed_to_the_shard_it_came_from(
    rt: Runtime, queue_names: QueueNames
) -> None:
    body = message(0).model_dump_json()
    for queue in (f"{queue_names.tasks}-3-poison", f"{queue_names.tasks}-6-poison"):
        assert rt.poison.record(queue, f"m-{queue}", body, 5, "dequeued 5 times")
    status, listed = call_http("list_poison", "GET")
    assert status == 200, listed
    replayed = {}
    for record in listed["poison"]:
        status, answer = call_http("replay_poison", "POST", {"poison_id": str(record["poison_id"])})
        assert status == 202, answer
        replayed[record["queue_name"]] = answer["queue_name"]
    # Shard 6 is past the configured four: its message goes to shard 0, which hosts read.
    assert replayed == {
        f"{queue_names.tasks}-3-poison": shard(queue_names, 3),
        f"{queue_names.tasks}-6-poison": queue_names.tasks,
    }
    assert rt.queues.peek(shard(queue_names, 3)) == [body]
    assert rt.queues.peek(queue_names.tasks) == [body]


def test_the_janitor_records_what_a_shards_poison_trigger_could_not_read(
    rt: Runtime, db: Db, azurite: str, queue_names: QueueNames
) -> None:
    unread = f"{shard(queue_names, 2)}-poison-poison"
    client = QueueClient.from_connection_string(azurite, unread)
    client.create_queue()
    client.send_message("not base64 at all!")

    report = rt.recovery.run_janitor()

    assert report.undecodable == 1
    (row,) = db.execute("SELECT queue_name, body FROM poison_messages").fetchall()
    assert (row["queue_name"], row["body"]) == (
        f"{shard(queue_names, 2)}-poison",
        "not base64 at all!",
    )
    assert client.peek_messages() == []
    client.close()


def test_reopen_waits_on_the_oldest_message_still_queued_on_any_shard(rt: Runtime, db: Db) -> None:
    job_id = rt.engine.submit("noop_fanout", {"tasks": 5, "stages": 1}).job_id
    assert rt.tasks.start_stage(job_id, 1, [NewTask("noop_1") for _ in range(5)])
    ids = [make_task_id(job_id, 1, i) for i in range(5)]
    rt.queues.send_raw(rt.queues.task_queues[3], "{}")  # an older message waits on shard 3
    time.sleep(0.1)
    rt.tasks.mark_dispatched(ids)  # sent after the message waiting on shard 3
    quick = replace(rt.recovery, timings=replace(Timings(), stall=timedelta(0), lease=timedelta(0)))
    report = quick.run_janitor()
    assert (report.reopened, report.counts[rt.queues.task_queues[3]]) == (0, 1)
    db.execute(
        "UPDATE tasks SET dispatched_at = now() - interval '1 hour' WHERE task_id = ANY (%s)",
        (ids,),
    )
    assert quick.run_janitor().reopened == 5
