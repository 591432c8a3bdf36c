"""PostgreSQL, then Azurite, goes down mid-stage and comes back: the job completes unaided.

Each test has a server of its own (`private_postgres`, `private_azurite`) and holds it
down longer than the task lease, so heartbeats lapse too. While it is down /api/health
answers 503 naming it; once it is back, 200.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from lightsout.client import ApiError
from lightsout.devservices import AzuriteService, ClusterPostgres
from repositories.migrations import migrate
from repositories.queues import QueueRepository
from tests.chaos.hosts import Fleet, HostProcess, say, wait_for
from tests.chaos.probe import SCHEMA, Probe, check_completed_once
from tests.fixtures_services import QueueNames

pytestmark = pytest.mark.chaos

TASKS, STAGES = 1000, 2
PARAMS = {"tasks": TASKS, "stages": STAGES, "sleep_ms": 5}
OUTAGE_S = 8.0  # longer than the 6 s lease the hosts get


def app_settings(database_url: str, storage: str, queues: QueueNames) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "AzureWebJobsStorage": storage,
        "LIGHTSOUT_JOBS_QUEUE": queues.jobs,
        "LIGHTSOUT_TASKS_QUEUE": queues.tasks,
        "LIGHTSOUT_SCHEMA": SCHEMA,
    }


def health(host: HostProcess) -> tuple[int, dict[str, Any]]:
    try:
        return host.api.request("GET", "health")
    except ApiError as exc:
        return 0, {"error": str(exc)}


def mid_stage(probe: Probe, job_id: str) -> int:
    """Wait until stage 1 is about a third done; return how many of its tasks completed."""

    def done() -> int:
        row = probe.rows(
            "SELECT completed_count FROM job_stages WHERE job_id = %s AND stage = 1", job_id
        )
        return int(row[0]["completed_count"]) if row else 0

    return wait_for(lambda: done() if done() >= TASKS // 3 else 0, 60, "stage 1 to be a third done")


def outage(
    host: HostProcess, dependency: str, down: Callable[[], None], up: Callable[[], None]
) -> None:
    """Take `dependency` down for OUTAGE_S, polling health; bring it up; wait for 200."""
    down()
    started = time.monotonic()
    answers: Counter[int] = Counter()
    while time.monotonic() - started < OUTAGE_S:
        status, body = health(host)
        answers[status] += 1
        if status == 503 and answers[503] == 1:
            say(f"health while {dependency} is down: 503 {body}")
            assert body["checks"][dependency] != "ok", body
        time.sleep(0.5)
    say(f"{dependency} down for {time.monotonic() - started:.1f} s; health answers {dict(answers)}")
    assert answers[503] > 0 and answers[200] == 0, f"health during the outage: {dict(answers)}"
    up()
    back = time.monotonic()
    wait_for(lambda: health(host)[0] == 200, 60, "health to answer 200 again")
    say(f"{dependency} back; health 200 after {time.monotonic() - back:.1f} s: {health(host)[1]}")


def finish(probe: Probe, job_id: str, hosts: list[HostProcess]) -> None:
    probe.wait_until_ended(job_id, 120)
    check_completed_once(probe, job_id, TASKS, STAGES)
    say(f"janitor repairs by reason: {dict(probe.repairs(job_id))}")
    assert all(h.exit_code is None for h in hosts), "a host died"


def test_postgres_restart_mid_stage(
    private_postgres: ClusterPostgres,
    azurite: str,
    queue_names: QueueNames,
    fleets: Callable[[dict[str, str]], Fleet],
) -> None:
    migrate(private_postgres.dsn, SCHEMA)
    fleet = fleets(app_settings(private_postgres.dsn, azurite, queue_names))
    hosts = [fleet.start("pg-a"), fleet.start("pg-b")]
    with Probe(private_postgres.dsn) as probe:
        job_id = str(hosts[0].api.submit("noop_fanout", PARAMS)["job_id"])
        say(f"stage 1 at {mid_stage(probe, job_id)} of {TASKS} tasks: stopping PostgreSQL")

        def stop() -> None:
            # Only the server: ClusterPostgres.stop() would also delete its data directory.
            private_postgres._pg_ctl("-m", "fast", "-w", "stop")

        outage(hosts[0], "database", stop, private_postgres.start)
        finish(probe, job_id, hosts)


def test_azurite_restart_mid_stage(
    private_azurite: AzuriteService,
    database_url: str,
    queue_names: QueueNames,
    fleets: Callable[[dict[str, str]], Fleet],
    probe: Probe,
) -> None:
    settings = app_settings(database_url, private_azurite.connection_string, queue_names)
    fleet = fleets(settings)
    hosts = [fleet.start("az-a"), fleet.start("az-b")]
    job_id = str(hosts[0].api.submit("noop_fanout", PARAMS)["job_id"])
    say(f"stage 1 at {mid_stage(probe, job_id)} of {TASKS} tasks: stopping Azurite")
    storage = private_azurite.connection_string
    with QueueRepository(storage, queue_names.jobs, queue_names.tasks) as q:
        before = q.approximate_counts()[q.tasks_queue]
        # Only the process: the data folder stays for restart(), which starts it there again.
        outage(hosts[0], "queues", private_azurite._terminate, private_azurite.restart)
        after = q.approximate_counts()[q.tasks_queue]
    say(f"task messages in the queue: {before} before the stop, {after} after the restart")
    finish(probe, job_id, hosts)
