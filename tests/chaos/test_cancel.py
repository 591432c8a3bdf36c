"""Cancel mid-stage: the job ends cancelled and none of its tasks is claimed or completed later."""

from __future__ import annotations

import time

import pytest

from repositories.queues import QueueRepository
from schemas.settings import load_settings
from tests.chaos.hosts import Fleet, say, wait_for
from tests.chaos.probe import Probe

pytestmark = pytest.mark.chaos

TASKS, STAGES = 2000, 2
PARAMS = {"tasks": TASKS, "stages": STAGES, "sleep_ms": 5}


def test_cancel_mid_stage(fleet: Fleet, probe: Probe) -> None:
    hosts = [fleet.start("cancel-a"), fleet.start("cancel-b")]
    job_id = str(hosts[0].api.submit("noop_fanout", PARAMS)["job_id"])
    wait_for(
        lambda: probe.task_statuses(job_id)["completed"] >= TASKS // 4, 60, "a quarter of stage 1"
    )
    status, body = hosts[1].api.request("POST", f"jobs/{job_id}/cancel")
    # now() in PostgreSQL is when a transaction began: the cancel's finished_at is when it
    # began, and it took effect (committed) before this answer, so before `answered`.
    answered = probe.value("SELECT clock_timestamp()")
    job = probe.job(job_id)
    began = job["finished_at"]
    say(
        f"cancel answered {status} {body.get('status')}; its transaction began {began:%T.%f},"
        f" the answer came by {answered:%T.%f}: {dict(probe.task_statuses(job_id))}"
    )
    assert status == 202 and job["status"] == "cancelled", body

    # Every message still queued or running gets delivered and settled; none may run a task.
    with QueueRepository.from_settings(load_settings()) as queues:
        drained = time.monotonic()
        wait_for(lambda: queues.approximate_counts()[queues.tasks_queue] == 0, 60, "the queue")
        say(f"tasks queue drained {time.monotonic() - drained:.1f} s after the cancel")
    late = probe.rows(
        "SELECT task_id, status, claimed_at, finished_at FROM tasks WHERE job_id = %s"
        " AND (claimed_at > %s OR (status = 'completed' AND finished_at > %s))",
        job_id,
        answered,
        answered,
    )
    # Claims that committed while the cancel waited for the stage's fan-in lock: the
    # cancel found them running and cancelled them, so none may have completed.
    raced = probe.task_statuses_where(job_id, "claimed_at > %s", began)
    say(f"claims that raced the cancel: {dict(raced)}")
    assert set(raced) <= {"cancelled"}
    statuses = probe.task_statuses(job_id)
    stages = probe.rows(
        "SELECT stage, status, task_count, completed_count, cancelled_count, remaining"
        " FROM job_stages WHERE job_id = %s ORDER BY stage",
        job_id,
    )
    say(f"after the drain: tasks {dict(statuses)}; stages {stages}")
    say(f"tasks claimed or completed after the cancel: {len(late)}")
    assert not late, late[:5]
    assert probe.status(job_id) == "cancelled"
    assert set(statuses) == {"completed", "cancelled"}
    assert sum(statuses.values()) == TASKS, "stage 2 must never have been built"
    assert [(s["status"], s["remaining"]) for s in stages] == [("cancelled", 0), ("cancelled", 0)]
    assert stages[0]["completed_count"] == statuses["completed"]
    assert stages[0]["cancelled_count"] == statuses["cancelled"]
    assert all(h.exit_code is None for h in hosts)
