"""Read a chaos run's outcome straight from PostgreSQL, and check what every run must hold."""

from __future__ import annotations

import re
from collections import Counter
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from tests.chaos.hosts import say, wait_for

Row = dict[str, Any]
WORKER_LOST = re.compile(r"worker \S+ sent no heartbeat since .*")
SCHEMA = "lightsout"


class Probe:
    """An autocommit connection to the test's database, with the queries the checks need."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = self._connect()

    def _connect(self) -> psycopg.Connection[Row]:
        conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))
        return conn

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.conn.close()

    def rows(self, query: str, *params: object) -> list[Row]:
        try:
            return self.conn.execute(query, params).fetchall()
        except psycopg.OperationalError:
            if not self.conn.broken:
                raise
        self.conn = self._connect()  # the server was restarted since the last query
        return self.conn.execute(query, params).fetchall()

    def value(self, query: str, *params: object) -> Any:
        rows = self.rows(query, *params)
        assert rows, query
        return next(iter(rows[0].values()))

    def job(self, job_id: str) -> Row:
        rows = self.rows("SELECT * FROM jobs WHERE job_id = %s", job_id)
        assert rows, f"job {job_id} is not in the database"
        return rows[0]

    def status(self, job_id: str) -> str:
        return str(self.job(job_id)["status"])

    def wait_until_ended(self, job_id: str, timeout: float) -> str:
        """Wait until the job is no longer queued or processing; return its status."""

        def ended() -> str | None:
            status = self.status(job_id)
            return None if status in ("queued", "processing") else status

        try:
            return wait_for(ended, timeout, f"job {job_id[:12]} to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; where it stands: {self.stuck_state(job_id)}") from None

    def stuck_state(self, job_id: str) -> list[Row]:
        """The unfinished tasks of a job by stage, status, and whether sent and due."""
        return self.rows(
            "SELECT t.stage, t.status, t.dispatched_at IS NOT NULL AS sent,"
            " coalesce(t.next_attempt_at > now(), false) AS not_due, count(*) AS n,"
            " min(t.updated_at) AS oldest, s.status AS stage_status,"
            " s.dispatch_holder, s.dispatch_lease_until"
            " FROM tasks t JOIN job_stages s USING (job_id, stage)"
            " WHERE t.job_id = %s AND t.status NOT IN ('completed', 'failed', 'cancelled')"
            " GROUP BY 1, 2, 3, 4, 7, 8, 9",
            job_id,
        )

    def task_statuses(self, job_id: str) -> Counter[str]:
        rows = self.rows(
            "SELECT status, count(*) AS n FROM tasks WHERE job_id = %s GROUP BY status", job_id
        )
        return Counter({str(r["status"]): int(r["n"]) for r in rows})

    def task_statuses_where(self, job_id: str, condition: str, *params: object) -> Counter[str]:
        """Task statuses of the job's tasks that meet an SQL condition."""
        rows = self.rows(
            f"SELECT status, count(*) AS n FROM tasks WHERE job_id = %s AND {condition}"
            " GROUP BY status",
            job_id,
            *params,
        )
        return Counter({str(r["status"]): int(r["n"]) for r in rows})

    def attempts(self, job_id: str) -> Counter[int]:
        rows = self.rows(
            "SELECT attempt, count(*) AS n FROM tasks WHERE job_id = %s GROUP BY attempt", job_id
        )
        return Counter({int(r["attempt"]): int(r["n"]) for r in rows})

    def stage_transitions(self, job_id: str) -> Counter[tuple[int, str, str]]:
        rows = self.rows(
            "SELECT stage, from_status, to_status FROM job_events"
            " WHERE job_id = %s AND kind = 'stage_status'",
            job_id,
        )
        return Counter((int(r["stage"]), str(r["from_status"]), str(r["to_status"])) for r in rows)

    def events(self, job_id: str, kind: str) -> list[Row]:
        return self.rows(
            "SELECT * FROM job_events WHERE job_id = %s AND kind = %s ORDER BY event_id",
            job_id,
            kind,
        )

    def repairs(self, job_id: str) -> Counter[str]:
        """The janitor's repairs of the job, counted by their reason (worker names left out)."""
        rows = self.rows(
            "SELECT reason FROM job_events WHERE job_id = %s AND kind = 'repair'", job_id
        )
        reasons = (str(r["reason"]) for r in rows)
        return Counter(WORKER_LOST.sub("worker * sent no heartbeat", reason) for reason in reasons)

    def attempts_unexplained(self, job_id: str) -> list[Row]:
        """Tasks whose attempt is not 1 + the retries recorded for them (reaps, task retries)."""
        return self.rows(
            "SELECT t.task_id, t.attempt, count(e.event_id) AS retries FROM tasks t"
            " LEFT JOIN job_events e ON e.job_id = t.job_id AND e.task_id = t.task_id"
            "  AND e.to_status = 'retrying' AND e.kind IN ('repair', 'task_retry')"
            " WHERE t.job_id = %s GROUP BY t.task_id, t.attempt"
            " HAVING t.attempt <> 1 + count(e.event_id) LIMIT 5",
            job_id,
        )


def check_completed_once(probe: Probe, job_id: str, tasks: int, stages: int) -> Counter[int]:
    """Assert what every finished noop_fanout run must hold; return its attempts histogram.

    The job completed; each stage went processing -> completed exactly once (and never to
    anything else); stage_results has one key per stage; every task completed exactly once,
    and each task's attempt counter is 1 + the retries recorded for it (so no claim ran
    unrecorded).
    """
    job = probe.job(job_id)
    assert job["status"] == "completed", f"job ended {job['status']}: {job['error']}"
    assert sorted(job["stage_results"]) == [str(n) for n in range(1, stages + 1)]
    transitions = probe.stage_transitions(job_id)
    expected = {(n, "pending", "processing"): 1 for n in range(1, stages + 1)}
    expected |= {(n, "processing", "completed"): 1 for n in range(1, stages + 1)}
    assert dict(transitions) == expected, f"stage transitions: {dict(transitions)}"
    statuses = probe.task_statuses(job_id)
    assert dict(statuses) == {"completed": tasks * stages}, f"task statuses: {dict(statuses)}"
    assert job["result"] == {"stages": stages, "tasks": tasks * stages}
    unexplained = probe.attempts_unexplained(job_id)
    assert not unexplained, f"attempts without a recorded retry: {unexplained}"
    attempts = probe.attempts(job_id)
    say(
        f"job {job_id[:12]} completed: {stages} stages advanced once each, "
        f"{statuses['completed']} tasks completed once, attempts {dict(sorted(attempts.items()))}"
    )
    return attempts
