"""The stored procedures against real PostgreSQL: fencing, compare-and-set, events, guards."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.status import JobStatus, StageStatus, TaskStatus, can_transition

Conn = psycopg.Connection[dict[str, Any]]
SCHEMA = "lightsout"
ERROR = {"type": "ValueError", "message": "boom", "attempt": 1}


def connect(dsn: str) -> Conn:
    conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
    conn.execute(f"SET search_path TO {SCHEMA}")
    return conn


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with connect(database_url) as conn:
        yield conn


def new_job_id(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def submit(conn: Conn, label: str, stages: int = 2) -> str:
    job = new_job_id(label)
    names = [f"stage{n}" for n in range(1, stages + 1)]
    row = conn.execute(
        "SELECT submit_job(%s, 'demo', '{}', %s) AS created", (job, names)
    ).fetchone()
    assert row == {"created": True}
    return job


def start(conn: Conn, job: str, stage: int, tasks: int, max_attempts: int = 3) -> list[str]:
    """Start the stage with `tasks` task rows, as the repository does, in one transaction."""
    with conn.transaction():
        row = conn.execute(
            "SELECT start_stage(%s, %s, %s) AS started", (job, stage, tasks)
        ).fetchone()
        assert row == {"started": True}
        insert_tasks(conn, job, stage, 0, tasks, max_attempts)
    return [f"{job}-s{stage}-t{i}" for i in range(tasks)]


def insert_tasks(
    conn: Conn, job: str, stage: int, first: int, stop: int, max_attempts: int = 3
) -> None:
    """Insert the stage's tasks first..stop-1, as the repository's COPY does."""
    conn.execute(
        "INSERT INTO tasks (task_id, job_id, stage, task_index, task_type, max_attempts)"
        " SELECT %(job)s || '-s' || %(stage)s || '-t' || i, %(job)s, %(stage)s, i, 'noop',"
        " %(m)s FROM generate_series(%(first)s, %(stop)s - 1) AS i",
        {"job": job, "stage": stage, "first": first, "stop": stop, "m": max_attempts},
    )


def new_stage(conn: Conn, label: str, tasks: int, stages: int = 2, **kw: int) -> list[str]:
    return start(conn, submit(conn, label, stages), 1, tasks, **kw)


def claim(conn: Conn, task_ids: list[str], worker: str = "w1") -> dict[str, int]:
    rows = conn.execute(
        "SELECT task_id, attempt FROM claim_tasks(%s, %s)", (task_ids, worker)
    ).fetchall()
    return {str(r["task_id"]): int(r["attempt"]) for r in rows}


def complete(
    conn: Conn, task_id: str, attempt: int, status: str = "completed", error: Any = None
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT * FROM complete_task_and_check_stage(%s, %s, %s, %s, %s)",
        (task_id, attempt, status, Jsonb({"ok": task_id}), Jsonb(error) if error else None),
    ).fetchone()
    assert row is not None
    return row


def fail_unclaimed(conn: Conn, task_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT * FROM fail_task_and_check_stage(%s, %s, 'poison', 'poisoned')",
        (task_id, Jsonb(ERROR)),
    ).fetchone()
    assert row is not None
    return row


def retry(conn: Conn, task_id: str, attempt: int) -> bool:
    row = conn.execute(
        "SELECT retry_task(%s, %s, %s, interval '0') AS retried", (task_id, attempt, Jsonb(ERROR))
    ).fetchone()
    return bool(row and row["retried"])


def advance(
    conn: Conn, job: str, stage: int, stage_status: str = "completed", job_status: str | None = None
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT * FROM advance_job_stage(%s, %s, %s, %s, %s, NULL, %s)",
        (
            job,
            stage,
            stage_status,
            Jsonb({"stage": stage}),
            job_status,
            Jsonb(ERROR) if job_status == "failed" else None,
        ),
    ).fetchone()
    assert row is not None
    return row


def cancel(conn: Conn, job: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM cancel_job(%s, 'operator', 'test')", (job,)).fetchone()
    assert row is not None
    return row


def task(conn: Conn, task_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM tasks WHERE task_id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def stage_row(conn: Conn, job: str, stage: int = 1) -> dict[str, Any]:
    row = conn.execute(
        "SELECT * FROM job_stages WHERE job_id = %s AND stage = %s", (job, stage)
    ).fetchone()
    assert row is not None
    return row


def job_row(conn: Conn, job: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM jobs WHERE job_id = %s", (job,)).fetchone()
    assert row is not None
    return row


def events(conn: Conn, job: str) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT kind, stage, task_id, from_status, to_status FROM job_events"
        " WHERE job_id = %s ORDER BY event_id",
        (job,),
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def job_of(task_id: str) -> str:
    return task_id[:64]


def test_stale_attempt_is_refused_and_changes_nothing(conn: Conn) -> None:
    first, _ = new_stage(conn, "stale", 2)
    assert claim(conn, [first]) == {first: 1}
    task_before, stage_before = task(conn, first), stage_row(conn, job_of(first))
    for stale in (0, 2, 7):
        answer = complete(conn, first, stale)
        assert answer["applied"] is False
        assert answer["is_last_task"] is False
        assert answer["remaining"] == 2
        assert not retry(conn, first, stale)
    assert task(conn, first) == task_before
    assert stage_row(conn, job_of(first)) == stage_before
    assert events(conn, job_of(first))[-1][0] != "task_retry"


def test_old_attempt_after_retry_and_reclaim_is_refused(conn: Conn) -> None:
    (only,) = new_stage(conn, "reclaim", 1)
    assert claim(conn, [only]) == {only: 1}
    assert retry(conn, only, 1)
    assert task(conn, only)["status"] == "retrying"
    assert claim(conn, [only], "w2") == {only: 2}
    before = task(conn, only)
    late = complete(conn, only, 1)
    assert (late["applied"], late["is_last_task"], late["remaining"]) == (False, False, 1)
    assert task(conn, only) == before
    assert not retry(conn, only, 1)
    assert task(conn, only) == before
    current = complete(conn, only, 2)
    assert (current["applied"], current["is_last_task"], current["remaining"]) == (True, True, 0)
    assert task(conn, only)["status"] == "completed"
    assert task(conn, only)["result"] == {"ok": only}


def test_completing_a_terminal_task_is_a_no_op(conn: Conn) -> None:
    first, second = new_stage(conn, "terminal", 2)
    attempts = claim(conn, [first, second])
    assert complete(conn, first, attempts[first])["is_last_task"] is False
    last = complete(conn, second, attempts[second], "failed", ERROR)
    assert (last["applied"], last["is_last_task"]) == (True, True)
    job = job_of(first)
    tasks_before = [task(conn, first), task(conn, second)]
    stage_before, events_before = stage_row(conn, job), events(conn, job)
    for task_id in (first, second):
        again = complete(conn, task_id, attempts[task_id])
        assert (again["applied"], again["is_last_task"]) == (False, False)
        failed = complete(conn, task_id, attempts[task_id], "failed", ERROR)
        assert (failed["applied"], failed["is_last_task"]) == (False, False)
        poisoned = fail_unclaimed(conn, task_id)
        assert (poisoned["applied"], poisoned["is_last_task"]) == (False, False)
        assert claim(conn, [task_id]) == {}
        assert not retry(conn, task_id, attempts[task_id])
    assert [task(conn, first), task(conn, second)] == tasks_before
    assert stage_row(conn, job) == stage_before
    assert events(conn, job) == events_before
    counts = stage_before
    assert (counts["remaining"], counts["completed_count"], counts["failed_count"]) == (0, 1, 1)


def test_claim_is_compare_and_set(conn: Conn) -> None:
    ids = new_stage(conn, "claim", 5)
    assert claim(conn, ids[:2], "w1") == {ids[0]: 1, ids[1]: 1}
    assert claim(conn, ids[:2], "w2") == {}
    assert claim(conn, ids, "w2") == {t: 1 for t in ids[2:]}
    assert claim(conn, ids, "w3") == {}
    assert [task(conn, t)["claimed_by"] for t in ids] == ["w1", "w1", "w2", "w2", "w2"]
    assert claim(conn, [f"{job_of(ids[0])}-s1-t99", "nonsense"], "w4") == {}


def test_claim_counts_attempts_up_to_the_limit(conn: Conn) -> None:
    (only,) = new_stage(conn, "attempts", 1, max_attempts=2)
    assert claim(conn, [only]) == {only: 1}
    assert retry(conn, only, 1)
    assert claim(conn, [only]) == {only: 2}
    assert not retry(conn, only, 2), "the last attempt cannot be retried"
    assert task(conn, only)["status"] == "processing"
    assert complete(conn, only, 2, "failed", ERROR)["is_last_task"] is True
    assert task(conn, only)["error"] == ERROR


@pytest.mark.parametrize("round_", range(5))
def test_racing_claims_are_disjoint_and_cover_all(database_url: str, round_: int) -> None:
    with connect(database_url) as setup:
        ids = new_stage(setup, f"race-claim-{round_}", 100)
    barrier = threading.Barrier(2)
    won: dict[str, dict[str, int]] = {}

    def claimer(worker: str) -> None:
        mine = ids[:]
        random.Random(worker).shuffle(mine)
        with connect(database_url) as conn:
            barrier.wait()
            won[worker] = claim(conn, mine, worker)

    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(won["w1"]).isdisjoint(won["w2"])
    assert set(won["w1"]) | set(won["w2"]) == set(ids)
    assert set(won["w1"].values()) | set(won["w2"].values()) == {1}


def test_cancelled_job_counts_its_tasks_off_and_they_cannot_be_claimed(conn: Conn) -> None:
    ids = new_stage(conn, "cancel", 10)
    job = job_of(ids[0])
    attempts = claim(conn, ids[:3])
    assert complete(conn, ids[0], attempts[ids[0]])["applied"]
    assert cancel(conn, job) == {"cancelled": True, "status": "cancelled"}
    counts = stage_row(conn, job)
    assert counts["status"] == "cancelled"
    assert (counts["remaining"], counts["completed_count"], counts["cancelled_count"]) == (0, 1, 9)
    assert stage_row(conn, job, 2)["status"] == "cancelled"
    assert [task(conn, t)["status"] for t in ids] == ["completed"] + ["cancelled"] * 9
    assert claim(conn, ids) == {}
    late = complete(conn, ids[1], attempts[ids[1]])
    assert (late["applied"], late["is_last_task"]) == (False, False)
    assert cancel(conn, job) == {"cancelled": False, "status": "cancelled"}
    assert job_row(conn, job)["finished_at"] is not None


def test_cancelling_a_queued_job(conn: Conn) -> None:
    job = submit(conn, "cancel-queued")
    assert cancel(conn, job) == {"cancelled": True, "status": "cancelled"}
    assert [stage_row(conn, job, s)["status"] for s in (1, 2)] == ["cancelled", "cancelled"]
    row = conn.execute("SELECT start_stage(%s, 1, 3) AS started", (job,)).fetchone()
    assert row == {"started": False}


def test_tasks_of_a_job_that_is_not_processing_cannot_be_claimed(conn: Conn) -> None:
    (only,) = new_stage(conn, "not-processing", 1, stages=1)
    conn.execute(
        "UPDATE jobs SET status = 'failed', error = '{}', finished_at = now() WHERE job_id = %s",
        (job_of(only),),
    )
    assert claim(conn, [only]) == {}


def test_advance_refuses_while_tasks_remain(conn: Conn) -> None:
    first, _ = new_stage(conn, "early", 2)
    job = job_of(first)
    complete(conn, first, claim(conn, [first])[first])
    with pytest.raises(pg_errors.ObjectNotInPrerequisiteState, match="no task remaining"):
        advance(conn, job, 1)
    assert job_row(conn, job)["stage"] == 1
    assert stage_row(conn, job)["status"] == "processing"


def test_advance_with_a_wrong_stage_does_not_move_the_job(conn: Conn) -> None:
    (only,) = new_stage(conn, "wrong-stage", 1, stages=3)
    job = job_of(only)
    complete(conn, only, claim(conn, [only])[only])
    before = job_row(conn, job)
    for stage in (2, 3, 4):
        assert advance(conn, job, stage) == {"advanced": False, "status": "processing", "stage": 1}
    assert job_row(conn, job) == before
    assert advance(conn, job, 1) == {"advanced": True, "status": "processing", "stage": 2}
    assert advance(conn, job, 1) == {"advanced": False, "status": "processing", "stage": 2}
    row = job_row(conn, job)
    assert list(row["stage_results"]) == ["1"]
    assert row["dispatched_at"] is None


def test_advance_past_the_last_stage_needs_a_final_status(conn: Conn) -> None:
    (only,) = new_stage(conn, "last-stage", 1, stages=1)
    job = job_of(only)
    complete(conn, only, claim(conn, [only])[only])
    with pytest.raises(pg_errors.InvalidParameterValue, match="last of job"):
        advance(conn, job, 1)
    finished = advance(conn, job, 1, "completed", "completed")
    assert finished == {"advanced": True, "status": "completed", "stage": 1}
    assert job_row(conn, job)["finished_at"] is not None


def test_a_stage_without_tasks_can_advance_at_once(conn: Conn) -> None:
    job = submit(conn, "empty-stage")
    start(conn, job, 1, 0)
    counts = stage_row(conn, job)
    assert (counts["task_count"], counts["remaining"]) == (0, 0)
    assert advance(conn, job, 1)["advanced"] is True


def test_start_stage_is_idempotent(conn: Conn) -> None:
    job = submit(conn, "start-twice")
    start(conn, job, 1, 3)
    before = (stage_row(conn, job), events(conn, job), job_row(conn, job))
    for stage, count in ((1, 3), (1, 5), (2, 3)):
        row = conn.execute(
            "SELECT start_stage(%s, %s, %s) AS started", (job, stage, count)
        ).fetchone()
        assert row == {"started": False}
    assert (stage_row(conn, job), events(conn, job), job_row(conn, job)) == before
    with pytest.raises(pg_errors.NoDataFound, match="does not exist"):
        conn.execute("SELECT start_stage(%s, 1, 1)", (new_job_id("nobody"),))


def test_submit_is_idempotent(conn: Conn) -> None:
    job = submit(conn, "submit-twice")
    row = conn.execute(
        "SELECT submit_job(%s, 'other', '{\"x\": 1}', ARRAY['a', 'b', 'c']) AS created", (job,)
    ).fetchone()
    assert row == {"created": False}
    assert job_row(conn, job)["job_type"] == "demo"
    assert job_row(conn, job)["total_stages"] == 2
    assert len(events(conn, job)) == 1
    with pytest.raises(pg_errors.InvalidParameterValue, match="declares no stage"):
        conn.execute("SELECT submit_job(%s, 'demo', '{}', ARRAY[]::text[])", (new_job_id("x"),))


def test_finish_checks_its_arguments(conn: Conn) -> None:
    (only,) = new_stage(conn, "arguments", 1)
    attempt = claim(conn, [only])[only]
    with pytest.raises(pg_errors.InvalidParameterValue, match="not a finishing status"):
        complete(conn, only, attempt, "cancelled")
    with pytest.raises(pg_errors.InvalidParameterValue, match="needs an error"):
        complete(conn, only, attempt, "failed")
    with pytest.raises(pg_errors.NoDataFound, match="does not exist"):
        complete(conn, f"{job_of(only)}-s1-t5", 1)
    assert task(conn, only)["status"] == "processing"


def test_exactly_one_last_among_completions_failures_and_poison(conn: Conn) -> None:
    ids = new_stage(conn, "mixed", 30)
    job = job_of(ids[0])
    attempts = claim(conn, ids[:20])
    outcomes = []
    for n, task_id in enumerate(ids):
        if n >= 20:
            outcomes.append(fail_unclaimed(conn, task_id))
        elif n % 3 == 0:
            outcomes.append(complete(conn, task_id, attempts[task_id], "failed", ERROR))
        else:
            outcomes.append(complete(conn, task_id, attempts[task_id]))
    assert [o["is_last_task"] for o in outcomes] == [False] * 29 + [True]
    assert [o["remaining"] for o in outcomes] == list(range(29, -1, -1))
    counts = stage_row(conn, job)
    assert (counts["completed_count"], counts["failed_count"]) == (13, 17)


def kinds(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Drop the task ids: (kind, stage, from, to)."""
    return [(k, s, f, t) for k, s, _, f, t in rows]


def test_every_status_change_writes_one_event(conn: Conn) -> None:
    ids = new_stage(conn, "events", 3)
    job = job_of(ids[0])
    attempts = claim(conn, ids)
    assert retry(conn, ids[0], attempts[ids[0]])
    assert complete(conn, ids[0], claim(conn, [ids[0]])[ids[0]])["applied"]
    assert complete(conn, ids[1], attempts[ids[1]], "failed", ERROR)["applied"]
    assert complete(conn, ids[2], attempts[ids[2]])["is_last_task"]
    assert advance(conn, job, 1, "completed_with_errors")["advanced"]
    (second,) = start(conn, job, 2, 1)
    assert fail_unclaimed(conn, second)["is_last_task"]
    assert advance(conn, job, 2, "failed", "failed")["advanced"]
    assert kinds(events(conn, job)) == [
        ("job_status", None, None, "queued"),
        ("stage_status", 1, "pending", "processing"),
        ("job_status", 1, "queued", "processing"),
        ("task_retry", 1, "processing", "retrying"),
        ("task_failed", 1, "processing", "failed"),
        ("stage_status", 1, "processing", "completed_with_errors"),
        ("stage_status", 2, "pending", "processing"),
        ("task_failed", 2, "queued", "failed"),
        ("stage_status", 2, "processing", "failed"),
        ("job_status", 2, "processing", "failed"),
    ]
    task_events = [e for e in events(conn, job) if e[2] is not None]
    assert [e[2] for e in task_events] == [ids[0], ids[1], second]


def test_cancel_writes_one_event_per_status_change(conn: Conn) -> None:
    ids = new_stage(conn, "cancel-events", 2, stages=3)
    job = job_of(ids[0])
    claim(conn, ids[:1])
    assert cancel(conn, job)["cancelled"]
    assert kinds(events(conn, job))[3:] == [
        ("stage_status", 1, "processing", "cancelled"),
        ("stage_status", 2, "pending", "cancelled"),
        ("stage_status", 3, "pending", "cancelled"),
        ("job_status", 1, "processing", "cancelled"),
    ]


def test_a_clean_stage_writes_no_task_events(conn: Conn) -> None:
    ids = new_stage(conn, "clean", 1000, stages=1)
    job = job_of(ids[0])
    attempts = claim(conn, ids)
    assert len(attempts) == 1000
    lasts = [complete(conn, t, attempts[t])["is_last_task"] for t in ids]
    assert lasts.count(True) == 1 and lasts[-1]
    assert advance(conn, job, 1, "completed", "completed")["advanced"]
    assert kinds(events(conn, job)) == [
        ("job_status", None, None, "queued"),
        ("stage_status", 1, "pending", "processing"),
        ("job_status", 1, "queued", "processing"),
        ("stage_status", 1, "processing", "completed"),
        ("job_status", 1, "processing", "completed"),
    ]


TASK_OPERATIONS = {
    TaskStatus.PROCESSING: "claim",
    TaskStatus.COMPLETED: "complete",
    TaskStatus.FAILED: "fail",
    TaskStatus.RETRYING: "retry",
    TaskStatus.CANCELLED: "cancel",
}


def put_task_in(conn: Conn, label: str, status: TaskStatus) -> str:
    """Return a task in `status`, reached through the procedures."""
    (only,) = new_stage(conn, label, 1)
    if status is TaskStatus.QUEUED:
        return only
    attempt = claim(conn, [only])[only]
    if status is TaskStatus.RETRYING:
        assert retry(conn, only, attempt)
    elif status is TaskStatus.COMPLETED:
        complete(conn, only, attempt)
    elif status is TaskStatus.FAILED:
        complete(conn, only, attempt, "failed", ERROR)
    elif status is TaskStatus.CANCELLED:
        cancel(conn, job_of(only))
    assert task(conn, only)["status"] == status.value
    return only


def apply_task_operation(conn: Conn, task_id: str, target: TaskStatus) -> bool:
    """Try to move the task to `target` the way the engine would; return whether it moved."""
    attempt = int(task(conn, task_id)["attempt"])
    if target is TaskStatus.PROCESSING:
        claim(conn, [task_id])
    elif target is TaskStatus.COMPLETED:
        complete(conn, task_id, attempt)
    elif target is TaskStatus.FAILED:
        complete(conn, task_id, attempt, "failed", ERROR)
        fail_unclaimed(conn, task_id)
    elif target is TaskStatus.RETRYING:
        retry(conn, task_id, attempt)
    elif target is TaskStatus.CANCELLED:
        cancel(conn, job_of(task_id))
    return bool(task(conn, task_id)["status"] == target.value)


@pytest.mark.parametrize("source", list(TaskStatus))
@pytest.mark.parametrize("target", list(TASK_OPERATIONS))
def test_task_procedures_follow_the_transition_table(
    conn: Conn, source: TaskStatus, target: TaskStatus
) -> None:
    task_id = put_task_in(conn, f"table-{source}-{target}", source)
    moved = apply_task_operation(conn, task_id, target)
    if source is not target:
        assert moved == can_transition(source, target), f"{source} -> {target}"


def statuses(conn: Conn, job: str) -> tuple[JobStatus, tuple[StageStatus, ...]]:
    rows = conn.execute(
        "SELECT status FROM job_stages WHERE job_id = %s ORDER BY stage", (job,)
    ).fetchall()
    return JobStatus(job_row(conn, job)["status"]), tuple(StageStatus(r["status"]) for r in rows)


def complete_stage_tasks(conn: Conn, job: str, stage: int, tasks: int) -> None:
    ids = start(conn, job, stage, tasks)
    attempts = claim(conn, ids)
    for task_id in ids:
        complete(conn, task_id, attempts[task_id])


SCENARIOS: dict[str, list[str]] = {
    "straight through": ["start1", "finish1", "advance1", "start2", "finish2", "complete2"],
    "early failure": ["start1", "finish1", "advance1-failed", "cancel", "fail"],
    "cancel while queued": ["cancel", "start1", "advance1", "fail"],
    "cancel while running": ["start1", "cancel", "finish1", "advance1", "cancel"],
    "fail while running": ["start1", "fail", "advance1", "start1", "cancel"],
    "fail while queued": ["fail", "start1", "cancel"],
    "repeats": ["start1", "start1", "finish1", "advance1", "advance1", "start2", "start1"],
}


def run_step(conn: Conn, job: str, step: str) -> None:
    if step.startswith("start"):
        conn.execute("SELECT start_stage(%s, %s, 0)", (job, int(step[5])))
    elif step.startswith("finish"):
        stage = int(step[6])
        if stage_row(conn, job, stage)["status"] == "pending":
            complete_stage_tasks(conn, job, stage, 2)
    elif step == "advance1":
        advance(conn, job, 1)
    elif step == "advance1-failed":
        advance(conn, job, 1, "failed", "failed")
    elif step == "complete2":
        advance(conn, job, 2, "completed", "completed")
    elif step == "cancel":
        cancel(conn, job)
    elif step == "fail":
        conn.execute("SELECT * FROM fail_job(%s, %s, 'janitor', 'test')", (job, Jsonb(ERROR)))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_job_and_stage_procedures_follow_the_transition_table(conn: Conn, scenario: str) -> None:
    job = submit(conn, f"scenario-{scenario}")
    seen = [statuses(conn, job)]
    for step in SCENARIOS[scenario]:
        # A refused step must leave the statuses as they were; checked below.
        with contextlib.suppress(psycopg.Error):
            run_step(conn, job, step)
        seen.append(statuses(conn, job))
    for (job_before, stages_before), (job_after, stages_after) in itertools.pairwise(seen):
        if job_after is not job_before:
            assert can_transition(job_before, job_after), f"job {job_before} -> {job_after}"
        for before, after in zip(stages_before, stages_after, strict=True):
            if after is not before:
                assert can_transition(before, after), f"stage {before} -> {after}"
    job_status = seen[-1][0]
    changes = {
        "job_status": sum(a[0] is not b[0] for a, b in itertools.pairwise(seen)),
        "stage_status": sum(
            x is not y for a, b in itertools.pairwise(seen) for x, y in zip(a[1], b[1], strict=True)
        ),
    }
    written = [e[0] for e in events(conn, job)]
    assert written.count("job_status") == changes["job_status"] + 1, job_status
    assert written.count("stage_status") == changes["stage_status"]


def test_tasks_of_a_stage_without_its_row_are_refused(conn: Conn) -> None:
    job = submit(conn, "no-stage-row", stages=2)
    start(conn, job, 1, 2)
    # Stage 2 has its row, stage 3 has none: the statement is refused as a whole.
    with pytest.raises(pg_errors.ForeignKeyViolation, match=f"job {job} name stage 3,"):
        conn.execute(
            "INSERT INTO tasks (task_id, job_id, stage, task_index, task_type)"
            " SELECT %(job)s || '-s' || s || '-t0', %(job)s, s, 0, 'noop'"
            " FROM unnest(ARRAY[2, 3]) AS s",
            {"job": job},
        )
    rows = conn.execute("SELECT count(*) AS n FROM tasks WHERE job_id = %s", (job,)).fetchone()
    assert rows == {"n": 2}


def test_a_stage_is_created_in_two_parts_once(conn: Conn) -> None:
    job = submit(conn, "two parts", stages=1)
    with conn.transaction():
        row = conn.execute("SELECT start_stage_in_parts(%s, 1, 250, 100) AS ok", (job,))
        assert row.fetchone() == {"ok": True}
        insert_tasks(conn, job, 1, 0, 100)
    stage = conn.execute(
        "SELECT s.remaining, s.uncreated, j.dispatched_at FROM job_stages s"
        " JOIN jobs j USING (job_id) WHERE s.job_id = %s",
        (job,),
    ).fetchone()
    assert stage == {"remaining": 250, "uncreated": 150, "dispatched_at": None}
    with pytest.raises(pg_errors.DataException, match="started with 250 tasks"):
        conn.execute("SELECT create_rest_of_stage(%s, 1, 240)", (job,))
    rest = "SELECT create_rest_of_stage(%s, 1, 250) AS first"
    with conn.transaction():
        assert conn.execute(rest, (job,)).fetchone() == {"first": 100}
        insert_tasks(conn, job, 1, 100, 250)
    assert conn.execute(rest, (job,)).fetchone() == {"first": None}  # nothing left to take


def test_a_cancel_waits_for_the_rest_of_a_stage_being_created(database_url: str) -> None:
    # Without the job row's lock, the cancel cancelled the tasks it saw (the first 100) and
    # the 150 committed meanwhile stayed queued in a cancelled job.
    with connect(database_url) as creator, connect(database_url) as operator:
        job = submit(creator, "cancelled while created", stages=1)
        with creator.transaction():
            creator.execute("SELECT start_stage_in_parts(%s, 1, 250, 100)", (job,))
            insert_tasks(creator, job, 1, 0, 100)
        answer: list[dict[str, Any] | None] = []
        cancel = threading.Thread(
            target=lambda: answer.append(
                operator.execute("SELECT * FROM cancel_job(%s, 'op', 'stop')", (job,)).fetchone()
            )
        )
        with creator.transaction():
            row = creator.execute("SELECT create_rest_of_stage(%s, 1, 250) AS first", (job,))
            assert row.fetchone() == {"first": 100}
            insert_tasks(creator, job, 1, 100, 250)
            cancel.start()
            waiting = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
            pid = operator.info.backend_pid
            for _ in range(500):  # until the cancel waits on a lock this transaction holds
                seen = creator.execute(waiting, (pid,)).fetchone()
                if seen and seen["wait_event_type"] == "Lock":
                    break
                threading.Event().wait(0.01)
            else:
                raise AssertionError("the cancel never waited for the stage's creation")
        cancel.join()
        assert answer == [{"cancelled": True, "status": "cancelled"}]
        statuses = creator.execute(
            "SELECT status, count(*)::integer AS n FROM tasks WHERE job_id = %s GROUP BY status",
            (job,),
        ).fetchall()
        assert statuses == [{"status": "cancelled", "n": 250}]
        stage = creator.execute(
            "SELECT status, remaining, cancelled_count FROM job_stages WHERE job_id = %s", (job,)
        ).fetchone()
        assert stage == {"status": "cancelled", "remaining": 0, "cancelled_count": 250}
