"""kill -9 of hosts at random moments of a run: the job completes, nothing runs twice.

One host (the anchor) stays up all along; twenty others are started one after the other
and each is killed -9 at a random moment. Why an anchor: it is the failure a scaled-out
app sees (one instance of several dies and the platform starts another), and since its
claims never lapse, every janitor reap must name a killed worker, which makes a false
reap of a live worker's task (a lease too short for its heartbeats) visible.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from tests.chaos.hosts import Fleet, HostProcess, say
from tests.chaos.probe import Probe, check_completed_once

pytestmark = pytest.mark.chaos

TASKS, STAGES, SLEEP_MS = 2000, 3, 10
KILLS = int(os.environ.get("CHAOS_KILLS", "20"))
# Few messages in flight per host keep the run long enough for twenty kills.
ANCHOR_CONCURRENCY, VICTIM_CONCURRENCY = 1, 1
SETTLE_S = 0.2


def held(probe: Probe, worker: str, last_attempt_only: bool = False) -> int:
    """Tasks `worker` holds claimed right now (only those on their last attempt, if asked)."""
    return int(
        probe.value(
            "SELECT count(*) FROM tasks WHERE claimed_by = %s AND status = 'processing'"
            " AND (NOT %s OR attempt >= max_attempts)",
            worker,
            last_attempt_only,
        )
    )


def kill_at_random(probe: Probe, victim: HostProcess, rng: random.Random) -> tuple[int, int]:
    """Freeze the victim at a random moment and kill -9 it; return (deferrals, stranded).

    A third lost claim of the same task fails that task by design (DESIGN invariant 8: a
    task past its attempts is failed), and with it the job. So a victim frozen while it
    holds a task on its last attempt is thawed and frozen again a moment later.
    """
    time.sleep(rng.uniform(0.2, 1.0))
    deferrals = 0
    while True:
        victim.pause()
        time.sleep(SETTLE_S)  # statements already sent finish; nothing new can start
        if held(probe, victim.name, last_attempt_only=True) == 0:
            break
        deferrals += 1
        victim.resume()
        time.sleep(rng.uniform(0.1, 0.5))
    victim.kill()
    time.sleep(SETTLE_S)  # the server rolls back what the dead connections left open
    return deferrals, held(probe, victim.name)


def test_job_survives_twenty_kills(fleet: Fleet, probe: Probe, seed: int) -> None:
    rng = random.Random(seed)
    anchor = fleet.start("anchor", concurrency=ANCHOR_CONCURRENCY, LIGHTSOUT_TASK_CONCURRENCY="1")
    started = time.monotonic()
    job_id = str(anchor.api.submit("noop_fanout", _params())["job_id"])
    say(f"submitted {job_id[:12]}: noop_fanout tasks={TASKS} stages={STAGES} sleep_ms={SLEEP_MS}")
    stranded: dict[str, int] = {}
    deferred = 0
    for n in range(1, KILLS + 1):
        assert probe.status(job_id) in ("queued", "processing"), (
            f"the job ended before kill {n}: make the run longer"
        )
        victim = fleet.start(
            f"victim-{n}", concurrency=VICTIM_CONCURRENCY, LIGHTSOUT_TASK_CONCURRENCY="2"
        )
        deferrals, stranded[victim.name] = kill_at_random(probe, victim, rng)
        deferred += deferrals
        job = probe.job(job_id)
        done = probe.task_statuses(job_id)["completed"]
        say(
            f"kill {n:2d} at {time.monotonic() - started:5.1f} s: {victim.name} (pid {victim.pid})"
            f" lived {time.monotonic() - victim.started:.1f} s, stranded"
            f" {stranded[victim.name]} claimed tasks, job at stage {job['stage']},"
            f" {done} tasks completed, {deferrals} deferrals"
        )
    probe.wait_until_ended(job_id, 180)
    took = time.monotonic() - started
    say(f"job ended after {took:.1f} s, {KILLS} kills, {deferred} kill deferrals")

    check_completed_once(probe, job_id, TASKS, STAGES)
    say(f"janitor repairs by reason: {dict(probe.repairs(job_id))}")
    reaped = Counter(
        str(e["detail"]["message"]).split()[1]
        for e in probe.events(job_id, "repair")
        if e["to_status"] == "retrying"
    )
    say(f"reaped per killed worker: {sum(reaped.values())} in all, {dict(reaped)}")
    assert anchor.exit_code is None, "the anchor host died"
    assert reaped == Counter({k: v for k, v in stranded.items() if v}), (
        "each task a killed worker held is reaped exactly once, and no live worker's task"
    )
    assert sum(stranded.values()) > 0, "no kill caught a running task: the test proved nothing"


def _params() -> dict[str, int]:
    return {"tasks": TASKS, "stages": STAGES, "sleep_ms": SLEEP_MS}
