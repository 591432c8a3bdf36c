"""The engine and BaseController against the in-memory fakes.

Each case is written once against a World; tests/integration/test_engine_conformance.py
runs the same CASES against real PostgreSQL, so the fakes cannot drift from the SQL.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol, cast

import pytest
from pydantic import BaseModel, ConfigDict, Field

from controllers.base import (
    AggregateContext,
    BaseController,
    BuildContext,
    FailurePolicy,
    FinalizeContext,
    RetryPolicy,
    Stage,
    TaskContext,
)
from controllers.engine import Engine
from controllers.jobtypes.hello_world import HelloWorld
from controllers.jobtypes.noop_fanout import TASKS_PER_MESSAGE, NoopFanout
from controllers.jobtypes.prime_count import PrimeCount
from controllers.ports import JobStore, PoisonStore, TaskStore
from controllers.registry import Registry
from schemas.exceptions import InvalidParameters, JobTypeError, PermanentTaskError
from schemas.ids import JobId, TaskId, make_task_id
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import JobEvent, JobRecord, Json, PoisonRecord, TaskRecord
from schemas.results import StageResultContract
from schemas.status import JobStatus, StageStatus, TaskStatus
from schemas.work import NewTask
from tests.fakes import FakeBus, FakeDatabase, FakeJobStore, FakePoisonStore, FakeTaskStore


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(default=2, ge=0, le=50, description="tasks of stage 2; 0 builds none")
    fail: list[int] = Field(default_factory=list, description="fail on every attempt")
    permanent: list[int] = Field(default_factory=list, description="raise PermanentTaskError")
    non_dict: list[int] = Field(default_factory=list, description="return a list")
    build_raises: bool = False
    finalize_raises: bool = False


class Probe(BaseController[ProbeParams]):
    """Three stages; the middle one fans out and misbehaves as its parameters ask."""

    job_type = "probe"
    parameters = ProbeParams
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=2.0)

    def define_stages(self) -> list[Stage[ProbeParams]]:
        return [
            Stage("first", build=lambda ctx: [{}], run=lambda ctx: {"first": True}),
            Stage("second", build=self.fan_out, run=self.work, aggregate=self.count),
            Stage("third", build=lambda ctx: [{}], run=lambda ctx: {"third": True}),
        ]

    def fan_out(self, ctx: BuildContext[ProbeParams]) -> list[Json]:
        if ctx.params.build_raises:
            raise ValueError("no plan for stage 2")
        return [{"i": i} for i in range(ctx.params.tasks)]

    def work(self, ctx: TaskContext[ProbeParams]) -> Json:
        if ctx.index in ctx.params.fail:
            raise RuntimeError(f"task {ctx.index} fails on every attempt")
        if ctx.index in ctx.params.permanent:
            raise PermanentTaskError(f"task {ctx.index} can never succeed")
        if ctx.index in ctx.params.non_dict:
            return cast(Json, ["not", "a", "dict"])
        return {"i": ctx.task["i"]}

    def count(self, ctx: AggregateContext[ProbeParams]) -> Json:
        return {"done": sum(1 for _ in ctx.results())}

    def finalize(self, ctx: FinalizeContext[ProbeParams]) -> Json:
        if ctx.params.finalize_raises:
            raise RuntimeError("cannot sum up")
        return {"second": ctx.stage_results["2"].aggregate["done"]}


class TolerantProbe(Probe):
    job_type = "tolerant_probe"
    failure_policy = FailurePolicy(max_failed_fraction=0.5)


class PatientProbe(Probe):
    """A retry waits 10 to 20 s: long enough to deliver its message early on purpose."""

    job_type = "patient_probe"
    retry = RetryPolicy(max_attempts=3, base_delay_s=20.0, max_delay_s=20.0)


class Jobs(JobStore, Protocol):
    def events(self, job_id: JobId) -> list[JobEvent]: ...


class Tasks(TaskStore, Protocol):
    def get(self, task_id: TaskId) -> TaskRecord: ...


class Poison(PoisonStore, Protocol):
    def recent(self, limit: int = 100) -> list[PoisonRecord]: ...


def job_types() -> Registry:
    """Return a registry of its own, so the tests leave the default one alone."""
    registry = Registry()
    for cls in (HelloWorld, PrimeCount, NoopFanout, Probe, TolerantProbe, PatientProbe):
        registry.register(cls)
    return registry


@dataclass
class World:
    """The stores under test, the fake bus and an engine wired to them."""

    jobs: Jobs
    tasks: Tasks
    poison: Poison
    bus: FakeBus
    registry: Registry = field(default_factory=job_types)

    def __post_init__(self) -> None:
        self.engine = Engine(
            self.jobs, self.tasks, self.bus, self.poison, self.registry, worker="test-worker"
        )

    def run(self, job_type: str, params: Json, twice: bool = False) -> JobRecord:
        """Submit a job and deliver messages until none is left; return the job."""
        job_id = self.engine.submit(job_type, params).job_id
        self.bus.drain(self.engine, twice=twice)
        return self.jobs.get(job_id)

    def task_rows(self, job_id: JobId, stage: int | None = None) -> list[TaskRecord]:
        rows, cursor = [], None
        while True:
            page = self.tasks.find(job_id, stage, limit=4, cursor=cursor)  # pages are read
            rows += page.items
            if (cursor := page.next_cursor) is None:
                return rows


Case = Callable[[World], None]
CASES: list[Case] = []


def case(fn: Case) -> Case:
    """Mark a test as an engine case, run here on the fakes and in the conformance test."""
    CASES.append(fn)
    return fn


@pytest.fixture
def world() -> World:
    db = FakeDatabase()
    return World(FakeJobStore(db), FakeTaskStore(db), FakePoisonStore(db), FakeBus())


def stage_result(job: JobRecord, key: str) -> StageResultContract:
    return StageResultContract.model_validate(job.stage_results[key])


def task_messages(bus: FakeBus, stage: int) -> list[TaskQueueMessage]:
    msgs = [TaskQueueMessage.model_validate_json(e.body) for e in bus.sent if e.queue == "tasks"]
    return [m for m in msgs if m.stage == stage]


def assert_hello_completed(world: World, job: JobRecord, n: int) -> None:
    assert job.status is JobStatus.COMPLETED, job.error
    assert sorted(job.stage_results) == ["1", "2"]
    for key in ("1", "2"):
        result = stage_result(job, key)
        assert result.status is StageStatus.COMPLETED
        assert (result.task_count, result.completed_count, result.failed_count) == (n, n, 0)
        assert result.aggregate == {"messages": n}
    assert job.result == {"greetings": n, "replies": n, "summary": f"{n} hellos, {n} replies"}
    tasks = world.task_rows(job.job_id)
    assert len(tasks) == 2 * n
    assert {(t.status, t.attempt) for t in tasks} == {(TaskStatus.COMPLETED, 1)}
    assert tasks[-1].result == {"reply": f"and hello back to 'hello world #{n - 1}'"}


@case
def test_hello_world_completes_with_both_stage_results(world: World) -> None:
    job = world.run("hello_world", {"n": 5})
    assert_hello_completed(world, job, 5)
    assert job.error is None and job.finished_at is not None
    assert [s.status for s in world.jobs.stages(job.job_id)] == [StageStatus.COMPLETED] * 2


@case
def test_events_record_every_status_change(world: World) -> None:
    job = world.run("hello_world", {"n": 1})
    events = world.jobs.events(job.job_id)
    assert [(e.kind, e.stage, e.from_status, e.to_status, e.actor) for e in events] == [
        ("job_status", None, None, "queued", "api"),
        ("stage_status", 1, "pending", "processing", "engine"),
        ("job_status", 1, "queued", "processing", "engine"),
        ("stage_status", 1, "processing", "completed", "engine"),
        ("stage_status", 2, "pending", "processing", "engine"),
        ("stage_status", 2, "processing", "completed", "engine"),
        ("job_status", 2, "processing", "completed", "engine"),
    ]


@case
def test_prime_count_stage_one_decides_how_many_tasks_stage_two_gets(world: World) -> None:
    for chunk_size, ranges in ((100, 10), (250, 4)):
        job = world.run("prime_count", {"limit": 1000, "chunk_size": chunk_size})
        assert job.status is JobStatus.COMPLETED, job.error
        assert stage_result(job, "2").task_count == ranges
        assert len(world.task_rows(job.job_id, stage=2)) == ranges
        assert job.result == {"limit": 1000, "ranges": ranges, "primes": 168, "largest": 997}
    # Four tasks to a message: the 4 ranges of the last job went in one.
    assert [len(m.task_ids) for m in task_messages(world.bus, 2)] == [4, 4, 2, 4]


@case
def test_a_stage_without_tasks_advances_at_once(world: World) -> None:
    job_id = world.engine.submit("probe", {"tasks": 0}).job_id
    world.bus.deliver_next(world.engine, "jobs")
    world.bus.deliver_next(world.engine, "tasks")
    # The process that ran stage 1's last task entered stage 2 itself (no job message);
    # stage 2 had no task, so stage 3 followed at once.
    assert world.jobs.get(job_id).stage == 3
    sent = [e for e in world.bus.sent if e.queue == "jobs"]
    assert [JobQueueMessage.model_validate_json(e.body).stage for e in sent] == [1]
    world.bus.drain(world.engine)
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    empty = stage_result(job, "2")
    assert (empty.status, empty.task_count, empty.aggregate) == (
        StageStatus.COMPLETED,
        0,
        {"done": 0},
    )
    assert stage_result(job, "3").completed_count == 1
    assert task_messages(world.bus, 2) == []
    assert job.result == {"second": 0}


@case
def test_every_message_delivered_twice_gives_the_same_job(world: World) -> None:
    job = world.run("hello_world", {"n": 5}, twice=True)
    assert len(world.bus.delivered) == 2 * len(world.bus.sent)
    assert_hello_completed(world, job, 5)

    def state() -> tuple[Json, list[Json], list[Json]]:
        stages = world.jobs.stages(job.job_id)
        tasks = world.task_rows(job.job_id)
        return job.model_dump(), [t.model_dump() for t in tasks], [s.model_dump() for s in stages]

    before = state()
    world.bus.redeliver_all(world.engine)  # late duplicates of everything
    world.bus.drain(world.engine)
    assert state() == before
    assert world.jobs.get(job.job_id) == job


@case
def test_a_flaky_task_is_retried_and_the_job_completes(world: World) -> None:
    params = {"tasks": 3, "stages": 1, "flaky_task_indices": [1]}
    job_id = world.engine.submit("noop_fanout", params).job_id
    world.bus.drain(world.engine, fast_forward=False)
    (retry,) = world.bus.pending()
    assert 0.25 <= retry.due - world.bus.clock <= 0.5  # noop_fanout's first backoff
    assert world.tasks.get(make_task_id(job_id, 1, 1)).status is TaskStatus.RETRYING
    world.bus.advance(0.5)
    world.bus.drain(world.engine, fast_forward=False)
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    tasks = world.task_rows(job.job_id)
    assert [(t.status, t.attempt) for t in tasks] == [
        (TaskStatus.COMPLETED, 1),
        (TaskStatus.COMPLETED, 2),
        (TaskStatus.COMPLETED, 1),
    ]
    flaky = tasks[1]
    assert flaky.error is not None and flaky.error.attempt == 1  # the failed attempt's record
    assert stage_result(job, "1").aggregate == {"retried": 1}
    delayed = [e for e in world.bus.sent if e.due > 0]
    assert [TaskQueueMessage.model_validate_json(e.body).task_ids for e in delayed] == [
        [flaky.task_id]
    ]


@case
def test_a_retry_whose_send_fails_loses_no_sibling_result(world: World) -> None:
    world.engine.runner.outage_wait_s = 0.0  # give up on the queue at once
    params = {"tasks": 4, "stages": 1, "flaky_task_indices": [1]}
    job_id = world.engine.submit("noop_fanout", params).job_id
    world.bus.deliver_next(world.engine, "jobs")
    world.bus.refuse_task_sends = 1000
    world.bus.deliver_next(world.engine, "tasks")  # all four tasks in one message
    tasks = world.task_rows(job_id)
    assert [(t.status, t.attempt) for t in tasks] == [
        (TaskStatus.COMPLETED, 1),
        (TaskStatus.RETRYING, 1),
        (TaskStatus.COMPLETED, 1),
        (TaskStatus.COMPLETED, 1),
    ]
    # The retry is recorded, its message unsent and unmarked: the sweeper's to send.
    assert world.tasks.undispatched(job_id, 1) == [tasks[1].task_id]


@case
def test_a_retry_rides_out_a_short_queue_outage(world: World) -> None:
    params = {"tasks": 3, "stages": 1, "fail_until_attempt": {"1": 3}}
    job_id = world.engine.submit("noop_fanout", params).job_id
    world.bus.deliver_next(world.engine, "jobs")
    world.bus.refuse_task_sends = 2  # the first retry's send fails twice, then goes
    world.bus.drain(world.engine)
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    tasks = world.task_rows(job_id)
    assert [(t.status, t.attempt) for t in tasks] == [
        (TaskStatus.COMPLETED, 1),
        (TaskStatus.COMPLETED, 3),
        (TaskStatus.COMPLETED, 1),
    ]
    assert tasks[1].error is not None and tasks[1].error.type == "InjectedFailure"


@case
def test_an_early_delivery_of_a_retry_neither_runs_it_nor_uses_an_attempt(world: World) -> None:
    job_id = world.engine.submit("patient_probe", {"tasks": 1, "fail": [0]}).job_id
    world.bus.drain(world.engine, fast_forward=False)
    task_id = make_task_id(job_id, 2, 0)
    (retry,) = world.bus.pending("tasks")
    assert 10 <= retry.due - world.bus.clock <= 20
    world.bus.deliver(world.engine, retry)  # delivered early, and again: a duplicate
    world.bus.deliver(world.engine, retry)
    task = world.tasks.get(task_id)
    assert (task.status, task.attempt) == (TaskStatus.RETRYING, 1)
    again = world.bus.pending("tasks")
    assert len(again) == 3  # the retry's own message, and one sent again per early delivery
    for envelope in again:
        assert TaskQueueMessage.model_validate_json(envelope.body).task_ids == [task_id]
        assert 5 <= envelope.due - world.bus.clock <= 20  # what is left of the backoff


@case
def test_a_task_failing_every_attempt_fails_the_job_naming_it(world: World) -> None:
    job = world.run("noop_fanout", {"tasks": 3, "stages": 2, "fail_task_indices": [2]})
    bad = make_task_id(job.job_id, 1, 2)
    assert job.status is JobStatus.FAILED
    task = world.tasks.get(bad)
    assert (task.status, task.attempt) == (TaskStatus.FAILED, 3)
    assert task.error is not None and task.error.type == "InjectedFailure"
    assert job.error is not None
    assert job.error["message"] == "stage 1 (noop_1) failed: 1 of 3 tasks failed"
    assert job.error["failed_task_ids"] == [bad]
    (error,) = job.error["errors"]
    assert (error["task_id"], error["type"], error["attempt"]) == (bad, "InjectedFailure", 3)
    assert error["message"] == "task 2 fails on every attempt"
    assert stage_result(job, "1").status is StageStatus.FAILED
    assert stage_result(job, "1").failed_task_ids == [bad]
    assert world.task_rows(job.job_id, stage=2) == []


@case
def test_exactly_one_of_racing_completions_is_last(world: World) -> None:
    job_id = world.engine.submit("noop_fanout", {"tasks": 200, "stages": 1}).job_id
    world.bus.deliver_next(world.engine, "jobs")
    claims = world.tasks.claim([make_task_id(job_id, 1, i) for i in range(200)], "racer")
    assert len(claims) == 200
    # Each task is completed twice, from different threads: a redelivery racing the first.
    with ThreadPoolExecutor(16) as pool:
        done = list(pool.map(lambda c: world.tasks.complete(c.task_id, c.attempt, {}), claims * 2))
    assert sum(c.applied for c in done) == 200
    assert sum(c.is_last_task for c in done) == 1
    stage = world.jobs.stage(job_id, 1)
    assert (stage.remaining, stage.completed_count) == (0, 200)


@case
def test_failure_policy_tolerates_up_to_its_fraction_of_failed_tasks(world: World) -> None:
    job = world.run("tolerant_probe", {"tasks": 4, "fail": [0, 3]})
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS, job.error
    second = stage_result(job, "2")
    assert second.status is StageStatus.COMPLETED_WITH_ERRORS
    assert (second.completed_count, second.failed_count) == (2, 2)
    assert second.failed_task_ids == [make_task_id(job.job_id, 2, i) for i in (0, 3)]
    assert stage_result(job, "3").status is StageStatus.COMPLETED
    assert job.result == {"second": 2}
    worse = world.run("tolerant_probe", {"tasks": 4, "fail": [0, 1, 3]})
    assert worse.status is JobStatus.FAILED
    assert stage_result(worse, "2").status is StageStatus.FAILED


@case
def test_a_permanent_task_error_is_not_retried(world: World) -> None:
    job = world.run("probe", {"tasks": 2, "permanent": [1]})
    assert job.status is JobStatus.FAILED
    ok, bad = world.task_rows(job.job_id, stage=2)
    assert (ok.status, ok.attempt) == (TaskStatus.COMPLETED, 1)
    assert (bad.status, bad.attempt) == (TaskStatus.FAILED, 1)
    assert bad.error is not None and bad.error.permanent
    assert (bad.error.type, bad.error.message) == ("PermanentTaskError", "task 1 can never succeed")
    assert [e for e in world.bus.sent if e.due > 0] == []


@case
def test_a_handler_returning_a_non_dict_fails_its_task_for_good(world: World) -> None:
    job = world.run("probe", {"tasks": 1, "non_dict": [0]})
    assert job.status is JobStatus.FAILED
    (task,) = world.task_rows(job.job_id, stage=2)
    assert (task.status, task.attempt, task.result) == (TaskStatus.FAILED, 1, None)
    assert task.error is not None and task.error.permanent
    assert task.error.message == "task handler returned list, not a dict"


@case
def test_a_build_step_that_raises_fails_the_job(world: World) -> None:
    job = world.run("probe", {"build_raises": True})
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert (job.error["phase"], job.error["stage"], job.error["type"]) == ("build", 2, "ValueError")
    assert job.error["message"] == "build of stage 2 raised ValueError: no plan for stage 2"
    assert "no plan for stage 2" in job.error["traceback"]
    assert [s.status for s in world.jobs.stages(job.job_id)] == [
        StageStatus.COMPLETED,
        StageStatus.CANCELLED,
        StageStatus.CANCELLED,
    ]
    assert world.task_rows(job.job_id, stage=2) == []


@case
def test_finalize_that_raises_fails_the_job(world: World) -> None:
    job = world.run("probe", {"finalize_raises": True})
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert (job.error["phase"], job.error["stage"]) == ("finalize", 3)
    assert job.error["message"] == "finalize of stage 3 raised RuntimeError: cannot sum up"
    assert job.result is None
    assert sorted(job.stage_results) == ["1", "2"]
    assert world.jobs.stage(job.job_id, 3).status is StageStatus.FAILED


@case
def test_a_new_stage_runs_its_first_message_here_unsent(world: World) -> None:
    here = Engine(
        world.jobs, world.tasks, world.bus, world.poison, world.registry, "here", local_runs=2
    )
    assert here.driver.local is not None
    job_id = here.submit("noop_fanout", {"tasks": 250, "stages": 3}).job_id
    while world.bus.drain(here):  # the local runs send nothing: drain them as well
        here.driver.local.drain()
    here.driver.local.drain()
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    tasks = world.task_rows(job_id)
    assert len(tasks) == 750
    assert {(t.status, t.attempt) for t in tasks} == {(TaskStatus.COMPLETED, 1)}
    for stage in (1, 2, 3):
        named = [t for m in task_messages(world.bus, stage) for t in m.task_ids]
        assert len(named) == len(set(named)), f"stage {stage}: a task sent twice"
        first = {make_task_id(job_id, stage, i) for i in range(TASKS_PER_MESSAGE)}
        unsent = {t.task_id for t in tasks if t.stage == stage} - set(named)
        assert unsent in (set(), first), f"stage {stage}: {sorted(unsent)}"
    # Stage 1 is built from its job message while no local run is in flight: always here.
    sent = [m.task_ids for m in task_messages(world.bus, 1)]
    assert sent == [
        [make_task_id(job_id, 1, i) for i in range(a, b)] for a, b in ((100, 200), (200, 250))
    ]


def started_in_parts(world: World, tasks: int, created: int, built: int | None = None) -> JobId:
    """A noop_fanout job whose stage 1 a process started with `created` of its tasks, then died.

    `built`: how many tasks that process's build made, if not what the job's build makes.
    """
    job_id = world.engine.submit("noop_fanout", {"tasks": tasks, "stages": 1}).job_id
    world.bus.take("jobs")  # the stage message that process was handling
    specs = [NewTask("noop_1", {}, 3)] * (tasks if built is None else built)
    assert world.tasks.start_stage(job_id, 1, specs, created)
    return job_id


@case
def test_a_stage_left_with_tasks_uncreated_is_finished_by_its_stage_message(world: World) -> None:
    job_id = started_in_parts(world, 250, 100)
    row = world.jobs.stage(job_id, 1)
    assert (row.status, row.task_count, row.remaining, row.uncreated) == (
        StageStatus.PROCESSING, 250, 250, 150,
    )  # fmt: skip
    assert len(world.task_rows(job_id)) == 100
    # The stage message is due again (the outbox marker is unset): the sweeper sends it.
    assert world.jobs.get(job_id).dispatched_at is None

    world.engine.handle_job_message(JobQueueMessage(job_id=job_id, stage=1))
    assert world.jobs.stage(job_id, 1).uncreated == 0
    assert world.jobs.get(job_id).dispatched_at is not None
    world.bus.drain(world.engine)
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    tasks = world.task_rows(job_id)
    assert [t.task_index for t in tasks] == list(range(250))
    assert {(t.status, t.attempt) for t in tasks} == {(TaskStatus.COMPLETED, 1)}
    named = [t for m in task_messages(world.bus, 1) for t in m.task_ids]
    assert sorted(named) == sorted(t.task_id for t in tasks)  # each sent once

    world.engine.handle_job_message(JobQueueMessage(job_id=job_id, stage=1))  # a late copy
    assert len(world.task_rows(job_id)) == 250


@case
def test_a_stage_built_again_into_another_number_of_tasks_fails_its_job(world: World) -> None:
    job_id = started_in_parts(world, 250, 100, built=300)
    world.engine.handle_job_message(JobQueueMessage(job_id=job_id, stage=1))
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error["message"] == (
        "build of stage 1 raised NondeterministicBuild: stage 1 was started with 300 tasks,"
        " but building it again made 250: a stage's build must make the same tasks each time"
    )
    row = world.jobs.stage(job_id, 1)
    assert (row.status, row.remaining, row.cancelled_count) == (StageStatus.FAILED, 0, 300)
    assert len(world.task_rows(job_id)) == 100


@case
def test_a_job_stopped_while_its_stage_is_partly_created_counts_the_rest_cancelled(
    world: World,
) -> None:
    cancelled, failed = started_in_parts(world, 250, 100), started_in_parts(world, 240, 100)
    assert world.jobs.cancel(cancelled, "operator", "not needed") == (True, JobStatus.CANCELLED)
    assert world.jobs.fail(failed, {"message": "gave up"}, "janitor", "stalled")
    for job_id, status, total in (
        (cancelled, StageStatus.CANCELLED, 250),
        (failed, StageStatus.FAILED, 240),
    ):
        row = world.jobs.stage(job_id, 1)
        assert (row.status, row.remaining, row.cancelled_count) == (status, 0, total)
        # A stage message still on its way creates nothing for a stopped stage.
        world.engine.handle_job_message(JobQueueMessage(job_id=job_id, stage=1))
        assert len(world.task_rows(job_id)) == 100


def stored_jobs(world: World, job_type: str, count: int) -> list[JobId]:
    """Jobs recorded as a submission records them, with no stage-1 message sent yet."""
    job_ids = [JobId(hashlib.sha256(f"{job_type}{n}".encode()).hexdigest()) for n in range(count)]
    for job_id in job_ids:
        world.jobs.submit(job_id, job_type, {"n": 2}, ["greet", "reply"])
    return job_ids


@case
def test_a_job_message_naming_several_jobs_runs_each_of_them(world: World) -> None:
    first, *more = stored_jobs(world, "hello_world", 3)
    world.engine.handle_job_message(JobQueueMessage(job_id=first, stage=1, more_job_ids=more))
    world.bus.drain(world.engine)
    for job_id in (first, *more):
        assert_hello_completed(world, world.jobs.get(job_id), 2)


@case
def test_a_job_of_a_batch_that_raises_gets_a_message_of_its_own(world: World) -> None:
    good = stored_jobs(world, "hello_world", 2)
    (stray,) = stored_jobs(world, "unregistered", 1)  # its type is unknown here: it raises
    msg = JobQueueMessage(job_id=good[0], stage=1, more_job_ids=[stray, good[1]])
    world.engine.handle_job_message(msg)  # raises nothing: the stray job is split off
    for job_id in good:
        assert world.jobs.get(job_id).status is JobStatus.PROCESSING
    assert world.jobs.get(stray).status is JobStatus.QUEUED
    alone = [JobQueueMessage.model_validate_json(e.body) for e in world.bus.pending("jobs")]
    assert [(m.job_id, m.more_job_ids) for m in alone] == [(stray, [])]


@case
def test_a_poison_job_message_naming_several_jobs_fails_each(world: World) -> None:
    first, *more = stored_jobs(world, "hello_world", 3)
    body = JobQueueMessage(job_id=first, stage=1, more_job_ids=more).model_dump_json()
    world.engine.record_poison(
        "jobs-poison", "m1", body, 5, "every delivery failed", JobQueueMessage
    )
    for job_id in (first, *more):
        job = world.jobs.get(job_id)
        assert job.status is JobStatus.FAILED and job.error is not None
        assert job.error["message"].startswith("job message for stage 1 is poison")


@case
def test_a_task_message_after_cancel_runs_nothing(world: World) -> None:
    job_id = world.engine.submit("probe", {}).job_id
    world.bus.deliver_next(world.engine, "jobs")
    assert world.engine.cancel(job_id, "operator", "test") == (True, JobStatus.CANCELLED)
    assert world.bus.drain(world.engine) == 1  # the stale task message
    (task,) = world.task_rows(job_id)
    assert (task.status, task.attempt, task.claimed_by) == (TaskStatus.CANCELLED, 0, None)
    job = world.jobs.get(job_id)
    assert (job.status, job.stage_results, job.error) == (JobStatus.CANCELLED, {}, None)
    assert len(world.bus.sent) == 2
    assert world.engine.cancel(job_id, "operator", "again") == (False, JobStatus.CANCELLED)


@case
def test_submit_is_idempotent(world: World) -> None:
    first = world.engine.submit("hello_world", {"n": 2})
    again = world.engine.submit("hello_world", {"name": "world", "n": 2})  # defaults spelled out
    assert (first.created, again.created) == (True, False)
    assert again.job_id == first.job_id
    assert [e.queue for e in world.bus.sent] == ["jobs"]
    assert world.jobs.get(first.job_id).dispatched_at is not None


@case
def test_invalid_parameters_raise_naming_the_field(world: World) -> None:
    with pytest.raises(InvalidParameters) as low:
        world.engine.submit("hello_world", {"n": 0})
    assert str(low.value).startswith("invalid parameters for hello_world: n: ")
    assert [e["loc"] for e in low.value.errors] == [("n",)]
    with pytest.raises(InvalidParameters, match="surname: Extra inputs are not permitted"):
        world.engine.submit("hello_world", {"surname": "x"})
    assert world.bus.sent == []


@case
def test_an_unknown_job_type_raises_naming_the_known_ones(world: World) -> None:
    with pytest.raises(JobTypeError, match=r"unknown job type 'nope'; known: hello_world, "):
        world.engine.submit("nope", {})
    assert world.bus.sent == []


@case
def test_a_malformed_poison_message_is_recorded_and_raises_nothing(world: World) -> None:
    for _ in range(2):  # the poison queue redelivers too
        world.engine.record_poison(
            "tasks-poison", "m-1", "{not json", 5, "dequeued 5 times", TaskQueueMessage
        )
    world.engine.record_poison(
        "jobs-poison", "m-2", '{"job_id": "x"}', 5, "dequeued 5 times", JobQueueMessage
    )
    bad_job, bad_task = world.poison.recent()
    assert (bad_task.body, bad_task.job_id, bad_task.task_ids) == ("{not json", None, [])
    assert bad_task.reason.startswith("dequeued 5 times: body: Invalid JSON")
    assert bad_job.reason.startswith("dequeued 5 times: job_id: Value error")


@case
def test_a_poison_task_message_fails_its_tasks_and_the_stage_ends(world: World) -> None:
    job_id = world.engine.submit("probe", {}).job_id
    world.bus.deliver_next(world.engine, "jobs")
    envelope = world.bus.take("tasks")
    assert envelope is not None
    world.engine.record_poison(
        "tasks-poison", envelope.message_id, envelope.body, 5, "dequeued 5 times", TaskQueueMessage
    )
    task_id = make_task_id(job_id, 1, 0)
    (record,) = world.poison.recent()
    assert (record.job_id, record.task_ids) == (job_id, [task_id])
    task = world.tasks.get(task_id)
    assert (task.status, task.attempt) == (TaskStatus.FAILED, 0)
    assert task.error is not None and (task.error.type, task.error.permanent) == (
        "PoisonMessage",
        True,
    )
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error["failed_task_ids"] == [task_id]
    assert world.bus.drain(world.engine) == 0


@case
def test_a_poison_job_message_fails_the_job(world: World) -> None:
    job_id = world.engine.submit("probe", {}).job_id
    envelope = world.bus.take("jobs")
    assert envelope is not None
    world.engine.record_poison(
        "jobs-poison", envelope.message_id, envelope.body, 5, "dequeued 5 times", JobQueueMessage
    )
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == {"message": "job message for stage 1 is poison: dequeued 5 times"}


@case
def test_a_stale_poison_job_message_leaves_a_job_that_moved_on_alone(world: World) -> None:
    job_id = world.engine.submit("probe", {}).job_id
    first = world.bus.take("jobs")
    assert first is not None
    world.bus.deliver(world.engine, first)  # it did its work, but its delivery failed later
    world.bus.deliver_next(world.engine, "tasks")
    assert world.jobs.get(job_id).stage == 2
    world.engine.record_poison(
        "jobs-poison", first.message_id, first.body, 5, "dequeued 5 times", JobQueueMessage
    )
    assert world.poison.recent()[0].job_id == job_id
    world.bus.drain(world.engine)
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error


@case
def test_repair_advances_a_stage_whose_last_completion_was_not_followed(world: World) -> None:
    job_id = world.engine.submit("probe", {}).job_id
    world.bus.deliver_next(world.engine, "jobs")
    envelope = world.bus.take("tasks")
    assert envelope is not None
    msg = TaskQueueMessage.model_validate_json(envelope.body)
    # A worker completes the stage's last task and dies before leave_stage.
    (claim,) = world.tasks.claim(msg.task_ids, "doomed-worker")
    assert world.engine.repair_stalled_stages(grace=timedelta(0)) == []
    assert world.tasks.complete(claim.task_id, claim.attempt, {"first": True}).is_last_task
    assert world.jobs.get(job_id).stage == 1
    assert world.engine.repair_stalled_stages(grace=timedelta(hours=1)) == []
    assert world.engine.repair_stalled_stages(grace=timedelta(0)) == [(job_id, 1)]
    assert world.jobs.get(job_id).stage == 2
    # The janitor built and sent stage 2 itself: its task messages wait, no job message.
    assert world.bus.pending("jobs") == []
    pending = [TaskQueueMessage.model_validate_json(e.body) for e in world.bus.pending("tasks")]
    assert {m.stage for m in pending} == {2}
    world.bus.drain(world.engine)
    job = world.jobs.get(job_id)
    assert job.status is JobStatus.COMPLETED, job.error
    assert world.engine.repair_stalled_stages(grace=timedelta(0)) == []


def test_every_world_case_is_in_cases() -> None:
    """A case written here but left out of CASES would skip the conformance run."""
    takes_world = [
        fn
        for name, fn in globals().items()
        if name.startswith("test_") and list(inspect.signature(fn).parameters) == ["world"]
    ]
    assert takes_world == CASES
