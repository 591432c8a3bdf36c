"""A host dies in the gap between a database commit and the queue send (LIGHTSOUT_CRASH_AT).

The commit is there, the message is not: a normal host started afterwards must find the
gap (the sweeper for unsent messages, the janitor for a stage that never advanced), close
it, record the repair in job_events, and the job completes as if nothing had happened.
"""

from __future__ import annotations

import time

import pytest

from controllers.faults import CRASH_EXIT_CODE
from lightsout.client import ApiError
from tests.chaos.hosts import Fleet, HostProcess, say
from tests.chaos.probe import Probe, check_completed_once

pytestmark = pytest.mark.chaos

TASKS, STAGES = 100, 2
PARAMS = {"tasks": TASKS, "stages": STAGES, "sleep_ms": 2}


def crash(fleet: Fleet, point: str, params: dict[str, int] = PARAMS) -> HostProcess:
    """Start a host that dies at `point`, and make it get there."""
    crasher = fleet.start(f"crash-{point}", LIGHTSOUT_CRASH_AT=point)
    try:
        status, body = crasher.api.request("POST", "jobs/noop_fanout", params)
        say(f"submit to {crasher.name} answered {status} {body.get('status')}")
    except ApiError as exc:
        say(f"submit to {crasher.name} got no answer, as the host died: {exc}")
    code = crasher.wait_exit(30)
    say(f"{crasher.name} exited with {code}")
    assert code == CRASH_EXIT_CODE
    return crasher


def only_job(probe: Probe) -> str:
    rows = probe.rows("SELECT job_id FROM jobs")
    assert len(rows) == 1, rows
    return str(rows[0]["job_id"])


def heal(fleet: Fleet, probe: Probe, job_id: str) -> float:
    """Start a normal host; return the seconds until the job ended."""
    started = time.monotonic()
    fleet.start("healer")
    probe.wait_until_ended(job_id, 60)
    took = time.monotonic() - started
    say(f"a normal host finished the job {took:.1f} s after it started")
    return took


def repairs(probe: Probe, job_id: str) -> list[str]:
    found = [
        f"stage {e['stage']} by {e['actor']}: {e['reason']}" for e in probe.events(job_id, "repair")
    ]
    say("repairs in job_events:\n  " + "\n  ".join(found or ["(none)"]))
    return found


def test_crash_after_submit_commit(fleet: Fleet, probe: Probe) -> None:
    crash(fleet, "after_submit_commit")
    job_id = only_job(probe)
    job = probe.job(job_id)
    say(f"left behind: job {job['status']}, dispatched_at {job['dispatched_at']}")
    assert (job["status"], job["dispatched_at"]) == ("queued", None)

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, TASKS, STAGES)
    assert repairs(probe, job_id) == [
        "stage 1 by janitor: stage message never sent: the sweeper sends it"
    ]


def test_crash_after_stage_commit(fleet: Fleet, probe: Probe) -> None:
    crash(fleet, "after_stage_commit")
    job_id = only_job(probe)
    unsent = probe.value(
        "SELECT count(*) FROM tasks WHERE job_id = %s AND dispatched_at IS NULL", job_id
    )
    say(f"left behind: stage 1 started with {unsent} tasks, none of them sent")
    assert unsent == TASKS

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, TASKS, STAGES)
    found = repairs(probe, job_id)
    assert set(found) == {"stage 1 by janitor: task message never sent: the sweeper sends it"}
    resent = sum(int(e["detail"]["tasks"]) for e in probe.events(job_id, "repair"))
    say(f"the sweeper re-sent {resent} tasks")
    assert resent == TASKS


def test_crash_before_advance(fleet: Fleet, probe: Probe) -> None:
    crash(fleet, "before_advance")
    job_id = only_job(probe)
    stage = probe.rows(
        "SELECT s.status, s.remaining, j.stage FROM job_stages s JOIN jobs j USING (job_id)"
        " WHERE s.job_id = %s AND s.stage = 1",
        job_id,
    )[0]
    say(
        f"left behind: stage 1 {stage['status']} with {stage['remaining']} remaining, job at"
        f" stage {stage['stage']}"
    )
    assert (stage["status"], stage["remaining"], stage["stage"]) == ("processing", 0, 1)

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, TASKS, STAGES)
    found = repairs(probe, job_id)
    assert found == ["stage 1 by janitor: all tasks had ended but the stage never advanced"]
    advanced_by = probe.rows(
        "SELECT actor FROM job_events WHERE job_id = %s AND kind = 'stage_status'"
        " AND stage = 1 AND to_status = 'completed'",
        job_id,
    )
    assert [r["actor"] for r in advanced_by] == ["janitor"]


def test_crash_while_entering_the_next_stage(fleet: Fleet, probe: Probe) -> None:
    # The host that counted off stage 1's last task builds stage 2 itself (no job
    # message, no poll) and dies doing it: the job's outbox marker is still unset.
    crash(fleet, "while_entering_stage")
    job_id = only_job(probe)
    job = probe.job(job_id)
    stage2 = probe.value("SELECT status FROM job_stages WHERE job_id = %s AND stage = 2", job_id)
    say(f"left behind: job at stage {job['stage']}, dispatched_at {job['dispatched_at']},"
        f" stage 2 {stage2}")  # fmt: skip
    assert (job["stage"], job["dispatched_at"], stage2) == (2, None, "pending")

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, TASKS, STAGES)
    assert repairs(probe, job_id) == [
        "stage 2 by janitor: stage message never sent: the sweeper sends it"
    ]


def test_crash_between_the_202_and_the_batched_send(fleet: Fleet, probe: Probe) -> None:
    # The submission commits and answers; the dispatcher thread dies before sending the
    # stage-1 job message. Whether the 202 reached the client first is up to the
    # scheduler; either way the job is committed and must run.
    crash(fleet, "before_batched_send")
    job_id = only_job(probe)
    job = probe.job(job_id)
    say(f"left behind: job {job['status']}, dispatched_at {job['dispatched_at']}")
    assert (job["status"], job["dispatched_at"]) == ("queued", None)

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, TASKS, STAGES)
    assert repairs(probe, job_id) == [
        "stage 1 by janitor: stage message never sent: the sweeper sends it"
    ]


def test_crash_before_the_local_run_claims_the_first_message(fleet: Fleet, probe: Probe) -> None:
    # The host that built stage 1 keeps its first message (25 tasks) to run on a thread
    # of its own, unsent, and dies before that thread claims them. Whether it sent the
    # stage's other messages first is up to the scheduler.
    crash(fleet, "before_local_claim")
    job_id = only_job(probe)
    unsent = probe.rows(
        "SELECT task_index, status FROM tasks WHERE job_id = %s AND stage = 1"
        " AND dispatched_at IS NULL ORDER BY task_index",
        job_id,
    )
    say(f"left behind: {len(unsent)} tasks of stage 1 never sent")
    assert {r["status"] for r in unsent} == {"queued"}
    assert {r["task_index"] for r in unsent} >= set(range(25))

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, TASKS, STAGES)
    assert set(repairs(probe, job_id)) == {
        "stage 1 by janitor: task message never sent: the sweeper sends it"
    }
    resent = sum(int(e["detail"]["tasks"]) for e in probe.events(job_id, "repair"))
    say(f"the sweeper sent {resent} tasks")
    assert resent == len(unsent)


def test_crash_between_the_two_parts_of_a_stage(fleet: Fleet, probe: Probe) -> None:
    # The host that built stage 1 (300 tasks) started it with its first message's 100
    # tasks, to run them on a thread of its own, and died before it created the other 200.
    tasks = 300
    crash(fleet, "between_stage_parts", {**PARAMS, "tasks": tasks})
    job_id = only_job(probe)
    stage = probe.rows(
        "SELECT s.status, s.uncreated, j.dispatched_at, (SELECT count(*) FROM tasks t"
        " WHERE t.job_id = s.job_id AND t.stage = 1) AS created"
        " FROM job_stages s JOIN jobs j USING (job_id) WHERE s.job_id = %s AND s.stage = 1",
        job_id,
    )[0]
    say(f"left behind: stage 1 {stage['status']} with {stage['created']} tasks created,"
        f" {stage['uncreated']} not, dispatched_at {stage['dispatched_at']}")  # fmt: skip
    assert (stage["status"], stage["created"], stage["uncreated"]) == ("processing", 100, 200)
    assert stage["dispatched_at"] is None

    heal(fleet, probe, job_id)
    check_completed_once(probe, job_id, tasks, STAGES)
    found = set(repairs(probe, job_id))
    stage_message = "stage 1 by janitor: stage message never sent: the sweeper sends it"
    assert stage_message in found
    # The first 100 were claimed by the dying host's local thread (reaped once their
    # heartbeat lapsed, and run again), or never claimed (sent by the sweeper).
    reaped = "stage 1 by janitor: worker crash-between_stage_parts sent no heartbeat since "
    swept = "stage 1 by janitor: task message never sent: the sweeper sends it"
    others = found - {stage_message}
    assert all(r == swept or r.startswith(reaped) for r in others), others
