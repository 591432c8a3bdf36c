"""The queue refuses every send for 5 s in the middle of a stage of failing-then-succeeding
tasks: no finished attempt is lost, none is run twice, no task ends WorkerLost.

The hosts run with LIGHTSOUT_REFUSE_SENDS_WHILE (controllers/faults.py): while the switch
file exists every send fails as an unreachable queue does, and receives go on, so the
retries that fall due in those seconds meet a queue that takes nothing. noop_fanout
appends a line per real run to LIGHTSOUT_NOOP_RUN_LOG, which counts each task's runs.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from controllers.faults import REFUSE_SENDS_ENV
from controllers.jobtypes.noop_fanout import RUN_LOG_ENV
from tests.chaos.hosts import Fleet, say, wait_for
from tests.chaos.probe import Probe, check_completed_once

pytestmark = pytest.mark.chaos

TASKS = 200
REFUSED_S = 5.0
# Task i succeeds on attempt 1 + i % 3: a third at once, a third on each retry.
PARAMS = {
    "tasks": TASKS,
    "stages": 1,
    "sleep_ms": 500,  # a 100-task message runs ~6 s: the outage meets messages mid-run
    "fail_until_attempt": {str(i): 1 + i % 3 for i in range(TASKS)},
}


def test_refused_sends_mid_stage_lose_no_attempt(
    fleet: Fleet, probe: Probe, tmp_path: Path
) -> None:
    switch, run_log = tmp_path / "refuse-sends", tmp_path / "runs.log"
    fleet.env |= {REFUSE_SENDS_ENV: str(switch), RUN_LOG_ENV: str(run_log)}
    hosts = [fleet.start("refused-a"), fleet.start("refused-b")]
    job_id = str(hosts[0].api.submit("noop_fanout", PARAMS)["job_id"])

    def running() -> int:
        query = "SELECT count(*) FROM tasks WHERE job_id = %s AND status = 'processing'"
        return int(probe.value(query, job_id))

    # Once the first attempts run: their retries then fall due while sends are refused,
    # next to siblings of the same message that complete.
    wait_for(running, 60, "the stage's first attempts to run")
    switch.touch()
    time.sleep(REFUSED_S)
    switch.unlink()
    say(f"sends refused for {REFUSED_S} s from the stage's first attempts on")

    probe.wait_until_ended(job_id, 180)
    attempts = check_completed_once(probe, job_id, TASKS, 1)
    runs = Counter(line.split()[0] for line in run_log.read_text().splitlines())
    rows = probe.rows(
        "SELECT task_id, task_index, attempt, error ->> 'type' AS error FROM tasks"
        " WHERE job_id = %s ORDER BY task_index",
        job_id,
    )
    lost = [r["task_id"] for r in rows if r["error"] == "WorkerLost"]
    assert lost == [], f"tasks that lost an attempt to the outage: {lost[:5]}"
    miscounted = [
        (r["task_index"], r["attempt"], runs[r["task_id"]])
        for r in rows
        if r["attempt"] != runs[r["task_id"]]
    ]
    assert miscounted == [], f"(index, attempt, real runs) that differ: {miscounted[:5]}"
    early = [
        (r["task_index"], r["attempt"]) for r in rows if r["attempt"] != 1 + r["task_index"] % 3
    ]
    assert early == [], f"tasks that did not end on the attempt they succeed on: {early[:5]}"
    refused = sum(host.log_count("refused while") for host in hosts)
    say(f"attempts {dict(sorted(attempts.items()))}; {refused} log lines of refused sends")
    assert refused > 0, "no send met the refusing queue: the outage missed the stage"
    assert all(h.exit_code is None for h in hosts), "a host died"
