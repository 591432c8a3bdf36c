"""Every message delivered twice: the same result as a clean run, and one run per attempt.

The local host runs in this process so that its queue sends can be doubled: each job and
task message the engine sends (stage driver, retries, sweeper) is put on the queue twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from controllers.jobtypes.noop_fanout import TASKS_PER_MESSAGE
from lightsout.client import ApiClient
from lightsout.host import Host
from repositories.queues import QueueRepository
from schemas.messages import JobQueueMessage, TaskQueueMessage
from tests.chaos.hosts import FAST_RECOVERY, REPO_ROOT, say, wait_for
from tests.chaos.probe import Probe, check_completed_once
from tests.fixtures_services import TEST_KEY
from triggers.runtime import reset_runtime, runtime

pytestmark = pytest.mark.chaos

TASKS, STAGES = 400, 3
PARAMS = {"tasks": TASKS, "stages": STAGES, "sleep_ms": 1}
STAGE_FIELDS = ("stage", "name", "status", "task_count", "completed_count", "failed_count")


class Doubler:
    """Send every job and task message twice through the real queue repository."""

    def __init__(self, queues: QueueRepository) -> None:
        self.queues = queues
        self.send_job, self.send_tasks = queues.send_job, queues.send_tasks
        self.jobs = self.tasks = 0

    def job(self, msg: JobQueueMessage, delay: timedelta | None = None) -> None:
        self.send_job(msg, delay)
        self.send_job(msg, delay)
        self.jobs += 1

    def task_batch(
        self, msgs: Sequence[TaskQueueMessage], delay: timedelta | None = None
    ) -> list[TaskQueueMessage]:
        sent = self.send_tasks(msgs, delay)
        self.send_tasks(msgs, delay)
        self.tasks += len(msgs)
        return sent


@pytest.fixture
def in_process_host(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Host]:
    """The app's own function_app.py served by a Host in this process, on a free port."""
    for key, value in FAST_RECOVERY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIGHTSOUT_WORKER_NAME", "in-process")
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = sys.modules.pop("function_app", None)
    reset_runtime()
    host = Host(REPO_ROOT, port=0, grace_seconds=10)
    host.start()
    try:
        yield host
    finally:
        host.stop()
        reset_runtime()
        if module is not None:
            sys.modules["function_app"] = module


def run(api: ApiClient, probe: Probe, query: str = "") -> str:
    status, body = api.request("POST", f"jobs/noop_fanout{query}", PARAMS)
    assert status == 202, body
    job_id = str(body["job_id"])
    probe.wait_until_ended(job_id, 120)
    return job_id


def outcome(probe: Probe, job_id: str) -> tuple[Any, ...]:
    """What must not depend on how often messages arrived: results, counts, every task."""
    job = probe.job(job_id)
    stages = {
        k: {f: v[f] for f in STAGE_FIELDS} | {"agg": v["aggregate"]}
        for k, v in job["stage_results"].items()
    }
    tasks = probe.rows(
        "SELECT stage, task_index, status, result, attempt FROM tasks WHERE job_id = %s"
        " ORDER BY stage, task_index",
        job_id,
    )
    return job["status"], job["result"], stages, [tuple(t.values()) for t in tasks]


def test_every_message_twice(
    in_process_host: Host,
    probe: Probe,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = ApiClient(f"http://127.0.0.1:{in_process_host.port}", key=TEST_KEY)
    started = time.monotonic()
    clean = run(api, probe)
    say(f"clean run took {time.monotonic() - started:.1f} s")

    queues = runtime().queues
    doubler = Doubler(queues)
    monkeypatch.setattr(queues, "send_job", doubler.job)
    monkeypatch.setattr(queues, "send_tasks", doubler.task_batch)
    caplog.set_level(logging.INFO, logger="controllers")
    started = time.monotonic()
    doubled = run(api, probe, "?force=true")  # the same parameters, run again under a new id
    say(f"doubled run took {time.monotonic() - started:.1f} s")
    wait_for(lambda: _drained(queues), 30, "both queues to be empty")
    no_claim = sum("nothing to claim" in r.getMessage() for r in caplog.records)
    ignored = sum("message for stage" in r.getMessage() for r in caplog.records)
    say(
        f"sent {doubler.jobs} job and {doubler.tasks} task messages twice each;"
        f" {no_claim} task deliveries found nothing to claim, {ignored} job deliveries ignored"
    )

    assert doubled != clean
    assert outcome(probe, doubled) == outcome(probe, clean)
    attempts = check_completed_once(probe, doubled, TASKS, STAGES)
    assert attempts == {1: TASKS * STAGES}, "one claim, so one run, per task"
    assert not probe.events(doubled, "task_retry")
    # Only stage 1 has a job message: the process that ends a stage enters the next itself.
    # Each stage's first message runs on a thread of the process that built the stage,
    # unsent (controllers/localrun.py), unless that process had no slot free.
    assert doubler.tasks >= STAGES * (TASKS // TASKS_PER_MESSAGE - 1) and doubler.jobs >= 1
    assert no_claim > 0, "no duplicate was delivered"


def _drained(queues: QueueRepository) -> bool:
    counts = queues.approximate_counts()
    return counts[queues.jobs_queue] == 0 and counts[queues.tasks_queue] == 0
