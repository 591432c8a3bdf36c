"""Two janitors at once (two hosts' timers firing together) repair each stuck item once.

Stuck work is made directly in PostgreSQL: 50 tasks whose worker vanished (heartbeats an
hour old) and 20 stages whose tasks all ended but which never advanced. Two Recovery
instances, each with its own pool and queue clients as two hosts would have, run the
janitor in lock-step from two threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

import controllers.jobtypes  # noqa: F401  (registers noop_fanout)
from controllers.engine import Engine
from controllers.recovery import JanitorReport, Recovery
from controllers.registry import registry
from repositories.db import open_pool
from repositories.jobs import JobRepository
from repositories.poison import PoisonRepository
from repositories.queues import QueueRepository, decode_wire_text
from repositories.recovery import RecoveryRepository
from repositories.tasks import TaskRepository
from schemas.canonical import job_id_for
from schemas.ids import JobId, TaskId, make_task_id
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.settings import load_settings
from schemas.work import NewTask
from tests.chaos.hosts import say, wait_for
from tests.chaos.probe import Probe

pytestmark = pytest.mark.chaos

EXPIRED_TASKS, STALLED_STAGES, ROUNDS = 50, 20, 3


@pytest.fixture
def janitors(settings_env: dict[str, str]) -> Iterator[list[Recovery]]:
    """Two janitors with default timings (60 s lease, 15 s grace), as two hosts have."""
    settings = load_settings()
    with ExitStack() as stack:
        pair = []
        for n in (1, 2):
            pool = stack.enter_context(open_pool(settings, name=f"janitor-{n}"))
            queues = stack.enter_context(QueueRepository.from_settings(settings))
            poison = PoisonRepository(pool)
            jobs, tasks = JobRepository(pool), TaskRepository(pool)
            engine = Engine(jobs, tasks, queues, poison, registry, worker=f"host-{n}")
            pair.append(Recovery(engine, RecoveryRepository(pool), queues, poison))
            queues.ensure_queues()
        yield pair


def new_job(janitor: Recovery, tasks: int, variant: int) -> tuple[JobId, list[TaskId]]:
    """A two-stage noop_fanout job with stage 1 started, sent, and all its tasks claimed."""
    params = registry.get("noop_fanout").parameters.model_validate(
        {"tasks": tasks, "stages": 2, "sleep_ms": variant}
    )
    job_id = job_id_for("noop_fanout", params)
    jobs, store = janitor.engine.jobs, janitor.engine.tasks
    jobs.submit(job_id, "noop_fanout", params.model_dump(mode="json"), ["noop_1", "noop_2"])
    assert store.start_stage(job_id, 1, [NewTask("noop_1", {}, 3)] * tasks)
    ids = [make_task_id(job_id, 1, n) for n in range(tasks)]
    store.mark_dispatched(ids)
    assert len(store.claim(ids, "vanished-worker")) == tasks
    return job_id, ids


def in_lock_step(janitors: list[Recovery], rounds: int) -> list[JanitorReport]:
    barrier = threading.Barrier(len(janitors))

    def run(janitor: Recovery) -> list[JanitorReport]:
        reports = []
        for _ in range(rounds):
            barrier.wait()
            reports.append(janitor.run_janitor())
        return reports

    with ThreadPoolExecutor(len(janitors)) as pool:
        return [r for reports in pool.map(run, janitors) for r in reports]


def drain(queues: QueueRepository, queue: str) -> list[str]:
    """Receive and delete every message, also those sent with a delay (the retries' backoff)."""
    texts: list[str] = []

    def empty() -> bool:
        for message in queues.receive_raw(queue):
            texts.append(decode_wire_text(message.text, queues.encoding))
            queues.delete_raw(queue, message)
        return queues.approximate_counts()[queue] == 0

    wait_for(empty, 30, f"queue {queue} to be drained")
    return texts


def total(reports: list[JanitorReport], field: Callable[[JanitorReport], int]) -> int:
    return sum(field(r) for r in reports)


def test_two_janitors_repair_each_item_once(janitors: list[Recovery], probe: Probe) -> None:
    one = janitors[0]
    lost_job, lost = new_job(one, EXPIRED_TASKS, 0)
    stalled = []
    for n in range(1, STALLED_STAGES + 1):
        job_id, [task] = new_job(one, 1, n)
        assert one.engine.tasks.complete(task, 1, {"attempt": 1}).is_last_task
        stalled.append(job_id)  # ... and whoever completed it died before advancing
    probe.rows(
        "UPDATE tasks SET heartbeat_at = now() - interval '1 hour' WHERE task_id = ANY (%s)"
        " RETURNING 1",
        lost,
    )
    probe.rows(
        "UPDATE jobs SET updated_at = now() - interval '1 hour' WHERE job_id = ANY (%s)"
        " RETURNING 1",
        stalled,
    )

    reports = in_lock_step(janitors, ROUNDS)
    reaped = total(reports, lambda r: r.reaped_retried)
    advanced = total(reports, lambda r: r.stalled_stages)
    say(
        f"{len(reports)} janitor runs, two at a time: {reaped} tasks reaped, {advanced} stages"
        f" advanced; per run: {[(r.reaped_retried, r.stalled_stages) for r in reports]}"
    )
    assert (reaped, advanced) == (EXPIRED_TASKS, STALLED_STAGES)
    reaps = Counter(
        str(e["task_id"]) for e in probe.events(lost_job, "repair") if e["to_status"] == "retrying"
    )
    assert reaps == Counter(lost), "each lost task reaped exactly once"
    assert dict(probe.task_statuses(lost_job)) == {"retrying": EXPIRED_TASKS}
    assert dict(probe.attempts(lost_job)) == {1: EXPIRED_TASKS}
    for job_id in stalled:
        repairs = [e["reason"] for e in probe.events(job_id, "repair")]
        assert repairs == ["all tasks had ended but the stage never advanced"], repairs
        assert probe.stage_transitions(job_id)[(1, "processing", "completed")] == 1
        assert probe.job(job_id)["stage"] == 2

    # The reaped tasks wait for the sweeper's grace; let it pass, and race the sweepers.
    probe.rows(
        "UPDATE tasks SET updated_at = now() - interval '1 hour' WHERE task_id = ANY (%s)"
        " RETURNING 1",
        lost,
    )
    reports = in_lock_step(janitors, ROUNDS)
    say(f"sweepers: {[r.resent_tasks for r in reports]} tasks re-sent per run")
    assert total(reports, lambda r: r.resent_tasks) == EXPIRED_TASKS
    queues = QueueRepository.from_settings(load_settings())
    sent_tasks = Counter(
        task_id
        for text in drain(queues, queues.tasks_queue)
        for task_id in TaskQueueMessage.model_validate_json(text).task_ids
    )
    sent_jobs = Counter(
        (msg.job_id, msg.stage)
        for msg in map(JobQueueMessage.model_validate_json, drain(queues, queues.jobs_queue))
    )
    say(
        f"on the queues: {sum(sent_tasks.values())} task ids for {len(sent_tasks)} tasks,"
        f" {sum(sent_jobs.values())} stage messages for {len(sent_jobs)} jobs"
    )
    # The janitor that advanced a stalled stage entered the next one itself: stage 2's task
    # was sent once, with no job message, and the job's outbox marker is set.
    entered = Counter(make_task_id(job_id, 2, 0) for job_id in stalled)
    assert sent_tasks == Counter(lost) + entered, "each reaped task and next stage sent once"
    assert sent_jobs == Counter(), "no next stage sent as a job message too"
    assert all(probe.job(job_id)["dispatched_at"] is not None for job_id in stalled)
