"""JobRepository, TaskRepository and PoisonRepository against real PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from repositories.db import SchemaPool, open_pool
from repositories.groupcommit import GroupCommit
from repositories.jobs import MAX_SUBMITS_PER_COMMIT, JobRepository
from repositories.poison import PoisonRepository
from repositories.tasks import TaskRepository
from schemas.exceptions import Conflict, ContractViolation, DatabaseError, NotFound
from schemas.ids import JobId, TaskId, make_task_id
from schemas.records import TaskError
from schemas.results import StageResultContract
from schemas.settings import Settings, load_settings
from schemas.status import JobStatus, StageStatus, TaskStatus
from schemas.work import NewJob, NewTask

SCHEMA = "lightsout"
ERROR = TaskError(type="ValueError", message="boom", attempt=1)


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("LIGHTSOUT_SCHEMA", SCHEMA)
    monkeypatch.setenv("LIGHTSOUT_POOL_MAX_SIZE", "4")
    return load_settings()


@pytest.fixture
def pool(settings: Settings) -> Iterator[SchemaPool]:
    with open_pool(settings) as pool:
        yield pool


@pytest.fixture
def jobs(pool: SchemaPool) -> JobRepository:
    return JobRepository(pool)


@pytest.fixture
def tasks(pool: SchemaPool) -> TaskRepository:
    return TaskRepository(pool)


def job_id(label: str) -> JobId:
    return JobId(hashlib.sha256(label.encode()).hexdigest())


def submitted(jobs: JobRepository, label: str, stages: int = 2) -> JobId:
    job = job_id(label)
    assert jobs.submit(job, "demo", {"label": label}, [f"s{n}" for n in range(1, stages + 1)])
    return job


def stage_result(stage: int, status: StageStatus = StageStatus.COMPLETED) -> StageResultContract:
    now = datetime.now(UTC)
    return StageResultContract(
        stage=stage,
        name=f"s{stage}",
        status=status,
        task_count=1,
        completed_count=1,
        failed_count=0,
        started_at=now,
        finished_at=now,
        duration_s=0.0,
        aggregate={"total": 42},
    )


def run_stage(tasks: TaskRepository, job: JobId, stage: int, count: int) -> None:
    assert tasks.start_stage(job, stage, [NewTask("noop", {"i": i}) for i in range(count)])
    claims = tasks.claim([make_task_id(job, stage, i) for i in range(count)], "w")
    for c in claims:
        tasks.complete(c.task_id, c.attempt, {"i": c.parameters["i"]})


def test_submit_is_idempotent(jobs: JobRepository) -> None:
    job = submitted(jobs, "submit")
    assert not jobs.submit(job, "demo", {"label": "other"}, ["x"])
    record = jobs.get(job)
    assert (record.status, record.stage, record.total_stages) == (JobStatus.QUEUED, 1, 2)
    assert record.parameters == {"label": "submit"}
    assert [s.status for s in jobs.stages(job)] == [StageStatus.PENDING] * 2
    assert len(jobs.events(job)) == 1


def test_one_batch_of_submissions_answers_each_in_its_place(jobs: JobRepository) -> None:
    existing = submitted(jobs, "before")
    a, b = job_id("batch-a"), job_id("batch-b")
    batch = [
        NewJob(b, "demo", {"label": "b"}, ["x", "y", "z"], None, "api-key:ops"),
        NewJob(existing, "demo", {"label": "other"}, ["x"], None, "api"),
        NewJob(a, "demo", {"label": "a"}, ["x"], existing, "api"),
        NewJob(b, "demo", {"label": "b again"}, ["x"], None, "api"),  # same id, later
    ]
    assert jobs._submit_batch(batch) == [True, False, True, False]
    assert jobs.get(b).parameters == {"label": "b"}
    assert [s.name for s in jobs.stages(b)] == ["x", "y", "z"]
    assert jobs.get(a).rerun_of == existing
    assert [(e.actor, e.to_status) for e in jobs.events(b)] == [("api-key:ops", "queued")]
    assert jobs.get(existing).parameters == {"label": "before"}


def merge_submissions(jobs: JobRepository, waiting: int) -> list[int]:
    """Hold the first write until `waiting` more callers queue behind it; record batch sizes."""
    sizes: list[int] = []
    write = jobs._submit_batch

    def held(batch: Sequence[NewJob]) -> list[bool]:
        if not sizes:
            deadline = time.monotonic() + 10
            while len(jobs._submits._queue) < waiting and time.monotonic() < deadline:
                time.sleep(0.005)
        sizes.append(len(batch))
        return write(batch)

    jobs._submits = GroupCommit(held, MAX_SUBMITS_PER_COMMIT)
    return sizes


def test_concurrent_submissions_share_a_commit_and_each_gets_its_answer(
    jobs: JobRepository,
) -> None:
    sizes = merge_submissions(jobs, waiting=7)
    labels = [f"c{n % 6}" for n in range(8)]  # 6 distinct jobs, two of them twice
    with ThreadPoolExecutor(8) as pool:
        created = list(
            pool.map(lambda label: jobs.submit(job_id(label), "demo", {"l": label}, ["x"]), labels)
        )
    assert sizes[0] == 1 and sizes[1] == 7  # the held first write, then everyone else at once
    per_job: dict[str, list[bool]] = {}
    for label, answer in zip(labels, created, strict=True):
        per_job.setdefault(label, []).append(answer)
    assert {label: sorted(a) for label, a in per_job.items()} == {
        "c0": [False, True],
        "c1": [False, True],
        "c2": [True],
        "c3": [True],
        "c4": [True],
        "c5": [True],
    }
    assert all(len(jobs.events(job_id(label))) == 1 for label in per_job)


def test_a_bad_submission_merged_with_others_fails_alone(jobs: JobRepository) -> None:
    sizes = merge_submissions(jobs, waiting=3)

    def submit(label: str) -> bool:
        return jobs.submit(job_id(label), "demo", {}, [] if label == "bad" else ["x"])

    with ThreadPoolExecutor(4) as pool:
        futures = {label: pool.submit(submit, label) for label in ("first", "g1", "bad", "g2")}
    assert sizes[:2] == [1, 3]  # the merged batch of three failed, then each went alone
    with pytest.raises(DatabaseError, match="declares no stage"):
        futures["bad"].result()
    assert [futures[label].result() for label in ("first", "g1", "g2")] == [True, True, True]
    with pytest.raises(NotFound):
        jobs.get(job_id("bad"))


def test_unknown_records_raise_not_found(jobs: JobRepository, tasks: TaskRepository) -> None:
    nobody = job_id("nobody")
    with pytest.raises(NotFound, match=nobody):
        jobs.get(nobody)
    with pytest.raises(NotFound):
        jobs.stage(nobody, 1)
    with pytest.raises(NotFound):
        tasks.get(make_task_id(nobody, 1, 0))
    with pytest.raises(NotFound, match="does not exist"):
        tasks.start_stage(nobody, 1, [NewTask("noop")])


def test_start_stage_is_idempotent(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "start")
    assert tasks.start_stage(job, 1, [NewTask("noop", {"i": i}) for i in range(3)])
    before = (jobs.stage(job, 1), jobs.events(job), tasks.find(job).items)
    assert not tasks.start_stage(job, 1, [NewTask("noop") for _ in range(7)])
    assert not tasks.start_stage(job, 2, [NewTask("noop")])
    assert (jobs.stage(job, 1), jobs.events(job), tasks.find(job).items) == before
    stage = jobs.stage(job, 1)
    assert (stage.status, stage.task_count, stage.remaining) == (StageStatus.PROCESSING, 3, 3)
    assert jobs.get(job).status is JobStatus.PROCESSING


def test_a_100000_task_stage_is_one_call(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "large")
    assert tasks.start_stage(job, 1, [NewTask("noop", {"i": i}) for i in range(100_000)])
    stage = jobs.stage(job, 1)
    assert (stage.task_count, stage.remaining, stage.completed_count) == (100_000, 100_000, 0)
    with psycopg.connect(str(tasks_dsn(jobs))) as conn:
        row = conn.execute(
            "SELECT count(*), min(task_index), max(task_index), count(DISTINCT task_id),"
            " count(*) FILTER (WHERE status = 'queued' AND parameters = jsonb_build_object("
            "'i', task_index))"
            " FROM lightsout.tasks WHERE job_id = %s AND stage = 1",
            (job,),
        ).fetchone()
    assert row == (100_000, 0, 99_999, 100_000, 100_000)
    assert len(tasks.undispatched(job, 1)) == 100_000


def tasks_dsn(jobs: JobRepository) -> str:
    return str(jobs._pool.conninfo)


def test_task_parameters_survive_the_copy(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "copy")
    awkward = {
        "text": "tab\there\nnewline \\ backslash \\N \"quote\" 'single' é 日本 \u2028",
        "nested": {"list": [1, 2.5, None, True, {"k": "\\."}], "empty": {}},
        "number": 10**15,
    }
    assert tasks.start_stage(job, 1, [NewTask("odd", awkward, max_attempts=5), NewTask("plain")])
    first = tasks.get(make_task_id(job, 1, 0))
    assert first.parameters == awkward
    assert (first.task_type, first.max_attempts, first.attempt) == ("odd", 5, 0)
    assert tasks.get(make_task_id(job, 1, 1)).parameters == {}


def test_a_stage_whose_copy_fails_is_not_started(
    jobs: JobRepository, tasks: TaskRepository
) -> None:
    job = submitted(jobs, "copy fails")
    # json.dumps writes NaN, which PostgreSQL's jsonb refuses: the COPY fails half-way.
    bad = [NewTask("ok"), NewTask("bad", {"x": float("nan")})]
    with pytest.raises(DatabaseError):
        tasks.start_stage(job, 1, bad)
    assert jobs.stage(job, 1).status is StageStatus.PENDING  # start_stage() rolled back too
    assert tasks.find(job, 1, None).items == []
    assert tasks.start_stage(job, 1, [NewTask("ok")])  # and the pool's connection is fine
    assert jobs.stage(job, 1).task_count == 1


def test_claim_complete_and_advance(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "flow")
    assert tasks.start_stage(job, 1, [NewTask("noop", {"i": i}) for i in range(3)])
    ids = [make_task_id(job, 1, i) for i in range(3)]
    claims = tasks.claim(list(reversed(ids)), "worker-1")
    assert [c.task_id for c in claims] == ids
    assert [c.parameters for c in claims] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert {c.attempt for c in claims} == {1}
    assert tasks.claim(ids, "worker-2") == []
    assert tasks.heartbeat(ids, "worker-1") == 3
    assert tasks.heartbeat(ids, "worker-2") == 0

    first = tasks.complete(ids[0], 1, {"out": 0})
    assert (first.applied, first.is_last_task, first.remaining) == (True, False, 2)
    stale = tasks.complete(ids[1], 2, {"out": 1})
    assert (stale.applied, stale.is_last_task, stale.remaining) == (False, False, 2)
    failed = tasks.fail(ids[1], 1, ERROR)
    assert (failed.applied, failed.failed_count) == (True, 1)
    last = tasks.complete(ids[2], 1, {"out": 2})
    assert (last.applied, last.is_last_task, last.completed_count) == (True, True, 2)
    assert tasks.complete(ids[2], 1, {"out": 2}).is_last_task is False

    assert tasks.get(ids[1]).error == ERROR
    assert [t.task_id for t in tasks.find(job, 1, TaskStatus.FAILED).items] == [ids[1]]
    pages = list(tasks.results(job, 1, page_size=1))
    assert pages == [[(0, {"out": 0})], [(2, {"out": 2})]]

    moved = jobs.advance(job, stage_result(1, StageStatus.COMPLETED_WITH_ERRORS))
    assert (moved.advanced, moved.status, moved.stage) == (True, JobStatus.PROCESSING, 2)
    again = jobs.advance(job, stage_result(1))
    assert (again.advanced, again.stage) == (False, 2)
    record = jobs.get(job)
    assert list(record.stage_results) == ["1"]
    stored = StageResultContract.model_validate(record.stage_results["1"])
    assert stored == stage_result(1, StageStatus.COMPLETED_WITH_ERRORS).model_copy(
        update={"started_at": stored.started_at, "finished_at": stored.finished_at}
    )

    run_stage(tasks, job, 2, 2)
    done = jobs.advance(job, stage_result(2), JobStatus.COMPLETED, result={"answer": 42})
    assert (done.advanced, done.status) == (True, JobStatus.COMPLETED)
    record = jobs.get(job)
    assert list(record.stage_results) == ["1", "2"]
    assert record.result == {"answer": 42}
    assert record.finished_at is not None


def test_advance_with_tasks_remaining_is_a_conflict(
    jobs: JobRepository, tasks: TaskRepository
) -> None:
    job = submitted(jobs, "conflict")
    assert tasks.start_stage(job, 1, [NewTask("noop"), NewTask("noop")])
    with pytest.raises(Conflict) as caught:
        jobs.advance(job, stage_result(1))
    assert caught.value.context == {"job_id": job, "stage": 1}
    assert "remaining" in str(caught.value)
    assert jobs.get(job).stage == 1


def test_advance_of_another_stage_is_refused(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "other-stage", stages=3)
    run_stage(tasks, job, 1, 1)
    refused = jobs.advance(job, stage_result(2))
    assert (refused.advanced, refused.status, refused.stage) == (False, JobStatus.PROCESSING, 1)
    assert jobs.get(job).stage_results == {}


def test_retry_and_reclaim(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "retry")
    assert tasks.start_stage(job, 1, [NewTask("noop", max_attempts=2)])
    task_id = make_task_id(job, 1, 0)
    (claim,) = tasks.claim([task_id], "w")
    tasks.mark_dispatched([task_id])
    assert tasks.retry(task_id, claim.attempt, ERROR, timedelta(seconds=30))
    record = tasks.get(task_id)
    assert record.status is TaskStatus.RETRYING
    assert record.dispatched_at is None
    assert record.next_attempt_at is not None
    assert tasks.undispatched(job, 1) == [task_id]
    # Before its backoff ends the retry is not claimed, and no attempt is used.
    assert tasks.claim([task_id], "early") == []
    (deferred,) = tasks.deferred([task_id])
    assert deferred.task_id == task_id and 25 < deferred.delay_s <= 30
    assert tasks.get(task_id).attempt == 1
    with psycopg.connect(tasks_dsn(jobs)) as conn:  # the backoff passes
        conn.execute(
            "UPDATE lightsout.tasks SET next_attempt_at = now() WHERE task_id = %s", (task_id,)
        )
    assert tasks.deferred([task_id]) == []
    (again,) = tasks.claim([task_id], "w2")
    assert again.attempt == 2
    assert tasks.complete(task_id, 1, {}).applied is False
    assert not tasks.retry(task_id, 2, ERROR, timedelta(0))
    assert tasks.complete(task_id, 2, {}).is_last_task
    kinds = [(e.kind, e.task_id) for e in jobs.events(job) if e.task_id is not None]
    assert kinds == [("task_retry", task_id)]


def test_fail_unclaimed_counts_the_task_off(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "poison")
    assert tasks.start_stage(job, 1, [NewTask("noop"), NewTask("noop")])
    first = tasks.fail_unclaimed(make_task_id(job, 1, 0), ERROR, "poison", "dequeued 5 times")
    second = tasks.fail_unclaimed(make_task_id(job, 1, 1), ERROR, "poison", "dequeued 5 times")
    assert (first.is_last_task, second.is_last_task, second.failed_count) == (False, True, 2)
    events = [e for e in jobs.events(job) if e.kind == "task_failed"]
    assert [(e.actor, e.reason) for e in events] == [("poison", "dequeued 5 times")] * 2


def test_cancel(jobs: JobRepository, tasks: TaskRepository) -> None:
    job = submitted(jobs, "cancel")
    assert tasks.start_stage(job, 1, [NewTask("noop") for _ in range(4)])
    ids = [make_task_id(job, 1, i) for i in range(4)]
    claims = tasks.claim(ids[:2], "w")
    assert jobs.cancel(job, "operator", "not needed") == (True, JobStatus.CANCELLED)
    assert jobs.cancel(job, "operator", "again") == (False, JobStatus.CANCELLED)
    assert tasks.claim(ids, "w") == []
    assert tasks.complete(claims[0].task_id, claims[0].attempt, {}).applied is False
    stage = jobs.stage(job, 1)
    assert (stage.status, stage.remaining, stage.cancelled_count) == (StageStatus.CANCELLED, 0, 4)
    with pytest.raises(NotFound):
        jobs.cancel(job_id("nobody"), "operator", "x")


def test_find_pages_newest_first(jobs: JobRepository, tasks: TaskRepository) -> None:
    made = [submitted(jobs, f"page-{n}") for n in range(5)]
    first = jobs.find(limit=2)
    second = jobs.find(limit=2, cursor=first.next_cursor)
    third = jobs.find(limit=2, cursor=second.next_cursor)
    listed = [j.job_id for page in (first, second, third) for j in page.items]
    assert sorted(listed) == sorted(made)
    assert third.next_cursor is None
    created = [j.created_at for page in (first, second, third) for j in page.items]
    assert created == sorted(created, reverse=True)
    assert jobs.find(status=JobStatus.COMPLETED).items == []
    assert len(jobs.find(job_type="demo", limit=10).items) == 5
    with pytest.raises(ContractViolation):
        jobs.find(cursor="!!not a cursor!!")

    run_stage(tasks, made[0], 1, 5)
    task_pages = [tasks.find(made[0], limit=3)]
    task_pages.append(tasks.find(made[0], limit=3, cursor=task_pages[0].next_cursor))
    assert [t.task_index for p in task_pages for t in p.items] == [0, 1, 2, 3, 4]
    assert task_pages[1].next_cursor is None
    assert len(tasks.find(made[0], stage=1, status=TaskStatus.COMPLETED).items) == 5


def test_poison_records(pool: SchemaPool) -> None:
    poison = PoisonRepository(pool)
    job = job_id("poisoned")
    task_ids = [TaskId(f"{job}-s1-t0")]
    assert poison.record("lightsout-tasks", "m1", "{bad", 5, "malformed", job, task_ids)
    assert not poison.record("lightsout-tasks", "m1", "{bad", 6, "malformed again")
    (record,) = poison.recent()
    assert (record.body, record.dequeue_count, record.task_ids) == ("{bad", 5, task_ids)
    first = poison.claim_replay(record.poison_id)
    assert (first.replayed, first.previous_at) == (True, None)
    assert poison.get(record.poison_id).replayed_at == first.replayed_at
    again = poison.claim_replay(record.poison_id)
    assert (again.replayed, again.replayed_at) == (False, first.replayed_at)
    forced = poison.claim_replay(record.poison_id, force=True)
    assert (forced.replayed, forced.previous_at) == (True, first.replayed_at)
    poison.release_replay(record.poison_id, forced.previous_at)
    assert poison.get(record.poison_id).replayed_at == first.replayed_at
    with pytest.raises(NotFound):
        poison.get(record.poison_id + 1)


@pytest.mark.parametrize(
    ("table", "constraint"),
    [
        ("jobs", "job_status_known"),
        ("job_stages", "stage_status_known"),
        ("tasks", "task_status_known"),
    ],
)
def test_unknown_status_from_the_database_fails_loud(
    jobs: JobRepository, tasks: TaskRepository, database_url: str, table: str, constraint: str
) -> None:
    job = submitted(jobs, f"exploded-{table}")
    assert tasks.start_stage(job, 1, [NewTask("noop")])
    with psycopg.connect(database_url) as conn:
        conn.execute(f"ALTER TABLE {SCHEMA}.{table} DROP CONSTRAINT {constraint}")
        where = "job_id = %s" + ("" if table == "jobs" else " AND stage = 1")
        conn.execute(f"UPDATE {SCHEMA}.{table} SET status = 'exploded' WHERE {where}", (job,))
    with pytest.raises(ContractViolation) as caught:
        if table == "jobs":
            jobs.get(job)
        elif table == "job_stages":
            jobs.stage(job, 1)
        else:
            tasks.get(make_task_id(job, 1, 0))
    cause = caught.value.__cause__
    assert isinstance(cause, ValidationError)
    assert [e["loc"] for e in cause.errors()] == [("status",)]
    assert "status:" in str(caught.value)
    assert "'exploded'" in str(caught.value)
    assert caught.value.context["job_id"] == job


def test_database_errors_are_translated(jobs: JobRepository, database_url: str) -> None:
    job = submitted(jobs, "broken")
    with psycopg.connect(database_url) as conn:
        conn.execute(f"DROP FUNCTION {SCHEMA}.cancel_job(text, text, text)")
    with pytest.raises(DatabaseError) as caught:
        jobs.cancel(job, "operator", "x")
    assert caught.value.context == {"job_id": job}
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_a_result_that_is_not_an_object_fails_loud(
    jobs: JobRepository, tasks: TaskRepository, database_url: str
) -> None:
    job = submitted(jobs, "result-not-an-object")
    run_stage(tasks, job, 1, 3)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            f"UPDATE {SCHEMA}.tasks SET result = '[1, 2]' WHERE task_id = %s",
            (make_task_id(job, 1, 1),),
        )
    with pytest.raises(ContractViolation) as caught:
        list(tasks.results(job, 1))
    assert "a page of results" in str(caught.value)
    assert "1.1" in str(caught.value)  # the second pair's result
    assert caught.value.context["job_id"] == job
