"""A new stage's first message runs on a thread of the process that built the stage.

Against real PostgreSQL and Azurite, through the registered queue triggers: the message
is never sent, its tasks are claimed by this process, and the queue holds the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from controllers.jobtypes.noop_fanout import TASKS_PER_MESSAGE
from schemas.ids import JobId, make_task_id
from schemas.messages import TaskQueueMessage
from tests.fixtures_services import QueueNames
from tests.integration.test_triggers import deliver, job, queue_message, submitted, take
from triggers.runtime import Runtime, reset_runtime, runtime

pytestmark = pytest.mark.integration


@pytest.fixture
def rt(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("LIGHTSOUT_LOCAL_RUNS", "2")  # the hosts' default
    reset_runtime()
    yield runtime()
    reset_runtime()


def test_the_first_message_of_a_new_stage_runs_here_unsent(
    rt: Runtime, azurite: str, queue_names: QueueNames, db: psycopg.Connection[dict[str, Any]]
) -> None:
    assert rt.engine.driver.local is not None
    job_id = JobId(submitted("noop_fanout", {"tasks": 250, "stages": 1}))
    (text,) = take(azurite, queue_names.jobs)
    deliver("jobs_queue", queue_message(text))
    rt.engine.driver.local.drain()

    sent = [TaskQueueMessage.model_validate_json(t) for t in take(azurite, queue_names.tasks)]
    named = sorted(t for m in sent for t in m.task_ids)
    assert named == sorted(make_task_id(job_id, 1, i) for i in range(TASKS_PER_MESSAGE, 250))
    here = db.execute(
        "SELECT task_index, status, attempt, claimed_by, dispatched_at FROM tasks"
        " WHERE job_id = %s AND task_index < %s ORDER BY task_index",
        (job_id, TASKS_PER_MESSAGE),
    ).fetchall()
    assert [r["task_index"] for r in here] == list(range(TASKS_PER_MESSAGE))
    assert {(r["status"], r["attempt"], r["claimed_by"], r["dispatched_at"]) for r in here} == {
        ("completed", 1, rt.engine.worker, None)
    }

    for msg in sent:
        deliver("tasks_queue", queue_message(msg.model_dump_json()))
    final = job(job_id)
    assert (final.status, final.stage_results["1"]["completed_count"]) == ("completed", 250)
    assert db.execute(
        "SELECT count(*) AS n FROM tasks WHERE job_id = %s AND attempt <> 1", (job_id,)
    ).fetchone() == {"n": 0}


def test_with_every_slot_busy_the_first_message_is_sent(
    rt: Runtime, azurite: str, queue_names: QueueNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = rt.engine.driver.local
    assert local is not None
    monkeypatch.setattr(local, "offer", lambda msg: False)
    job_id = JobId(submitted("noop_fanout", {"tasks": 30, "stages": 1}))
    (text,) = take(azurite, queue_names.jobs)
    deliver("jobs_queue", queue_message(text))

    sent = [TaskQueueMessage.model_validate_json(t) for t in take(azurite, queue_names.tasks)]
    assert sorted(t for m in sent for t in m.task_ids) == sorted(
        make_task_id(job_id, 1, i) for i in range(30)
    )
