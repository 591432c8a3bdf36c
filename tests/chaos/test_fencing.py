"""A worker that lost its claim cannot complete the task: the attempt is its fencing token.

Real PostgreSQL and Azurite, the real repositories and the real janitor; no host.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import controllers.jobtypes  # noqa: F401  (registers noop_fanout)
from controllers.engine import Engine
from controllers.recovery import Recovery, Timings
from controllers.registry import registry
from repositories.db import SchemaPool, open_pool
from repositories.jobs import JobRepository
from repositories.poison import PoisonRepository
from repositories.queues import QueueRepository
from repositories.recovery import RecoveryRepository
from repositories.tasks import TaskRepository
from schemas.canonical import job_id_for
from schemas.ids import JobId, TaskId, make_task_id
from schemas.settings import load_settings
from schemas.work import NewTask
from tests.chaos.hosts import say, wait_for
from tests.chaos.probe import Probe

pytestmark = pytest.mark.chaos

LEASE = timedelta(seconds=1)


@pytest.fixture
def pool(settings_env: dict[str, str]) -> Iterator[SchemaPool]:
    with open_pool(load_settings()) as opened:
        yield opened


@pytest.fixture
def janitor(pool: SchemaPool) -> Iterator[Recovery]:
    with QueueRepository.from_settings(load_settings()) as queues:
        queues.ensure_queues()
        poison = PoisonRepository(pool)
        engine = Engine(JobRepository(pool), TaskRepository(pool), queues, poison, registry)
        timings = Timings(lease=LEASE, sweep_grace=timedelta(0))
        yield Recovery(engine, RecoveryRepository(pool), queues, poison, timings)


def start_job(jobs: JobRepository, tasks: TaskRepository, count: int) -> tuple[JobId, list[TaskId]]:
    """A noop_fanout job whose stage 1 was started and dispatched with `count` tasks."""
    controller = registry.get("noop_fanout")
    params = controller.parameters.model_validate({"tasks": count, "stages": 1})
    job_id = job_id_for("noop_fanout", params)
    jobs.submit(job_id, "noop_fanout", params.model_dump(mode="json"), ["noop_1"])
    assert tasks.start_stage(job_id, 1, [NewTask("noop_1", {}, 3) for _ in range(count)])
    ids = [make_task_id(job_id, 1, n) for n in range(count)]
    tasks.mark_dispatched(ids)  # as if their messages were sent
    return job_id, ids


def snapshot(probe: Probe, task_id: TaskId) -> tuple[dict[str, Any], dict[str, Any]]:
    task = probe.rows("SELECT * FROM tasks WHERE task_id = %s", task_id)[0]
    stage = probe.rows(
        "SELECT * FROM job_stages WHERE job_id = %s AND stage = %s", task["job_id"], task["stage"]
    )[0]
    return task, stage


def test_lost_claim_cannot_complete(pool: SchemaPool, janitor: Recovery, probe: Probe) -> None:
    jobs, tasks = JobRepository(pool), TaskRepository(pool)
    job_id, (task, other) = start_job(jobs, tasks, 2)
    [w1] = tasks.claim([task], "w1")
    say(f"w1 claimed {task[-6:]} for attempt {w1.attempt}; it stops sending heartbeats")

    wait_for(lambda: janitor.repo.expired_tasks(LEASE), 10, "the lease to expire")
    report = janitor.run_janitor()
    # The sweeper also re-sends the other task: marked sent, yet the queue is empty.
    say(f"janitor: reaped {report.reaped_retried} task, re-sent {report.resent_tasks}")
    assert report.reaped_retried == 1
    before = snapshot(probe, task)
    assert before[0]["status"] == "retrying"

    late = tasks.complete(task, w1.attempt, {"by": "w1"})
    say(f"w1 completes after the reap: applied={late.applied}")
    assert not late.applied and not late.is_last_task
    assert snapshot(probe, task) == before, "a refused completion changed something"

    # A claim waits out the retry's backoff (next_attempt_at), as a redelivery would.
    [w2] = wait_for(lambda: tasks.claim([task], "w2") or None, 10, "the retry's backoff to end")
    say(f"w2 claimed {task[-6:]} for attempt {w2.attempt}")
    assert w2.attempt == w1.attempt + 1
    assert tasks.heartbeat([task], "w1") == 0, "w1's heartbeat must not renew w2's claim"
    before = snapshot(probe, task)

    late = tasks.complete(task, w1.attempt, {"by": "w1"})
    say(f"w1 completes after w2's claim: applied={late.applied}")
    assert not late.applied and not late.is_last_task
    assert snapshot(probe, task) == before, "a refused completion changed something"

    done = tasks.complete(task, w2.attempt, {"by": "w2"})
    say(f"w2 completes: applied={done.applied}, remaining={done.remaining}")
    assert done.applied and not done.is_last_task and done.remaining == 1
    row, stage = snapshot(probe, task)
    assert (row["status"], row["attempt"], row["claimed_by"], row["result"]) == (
        "completed",
        2,
        "w2",
        {"by": "w2"},
    )
    assert (stage["completed_count"], stage["remaining"]) == (1, 1)
    assert not tasks.complete(task, w2.attempt, {"by": "w2 again"}).applied

    [c] = tasks.claim([other], "w1")
    last = tasks.complete(other, c.attempt, {"by": "w1"})
    assert last.applied and last.is_last_task
    retries = [e for e in probe.events(job_id, "repair") if e["task_id"] == task]
    say(f"job_events hold {len(retries)} reap of {task[-6:]}: {retries[0]['reason']}")
    assert len(retries) == 1
