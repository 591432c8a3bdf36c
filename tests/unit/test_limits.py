"""The per-stage task cap and the per-task result cap, on the engine over the fakes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ConfigDict

from controllers import limits
from controllers.base import BaseController, BuildContext, Stage, TaskContext
from controllers.jobtypes.hello_world import HelloWorld
from controllers.limits import LimitExceeded, Limits, capped_tasks, checked_result
from controllers.registry import Registry
from schemas.records import Json
from schemas.status import JobStatus, TaskStatus
from tests.fakes import FakeBus, FakeDatabase, FakeJobStore, FakePoisonStore, FakeTaskStore
from tests.unit.test_engine import World


class BigParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = 1
    result_bytes: int = 10


class Big(BaseController[BigParams]):
    """As many tasks, and as large results, as its parameters ask."""

    job_type = "big"
    parameters = BigParams

    def define_stages(self) -> list[Stage[BigParams]]:
        return [Stage("only", build=self.fan_out, run=self.work)]

    def fan_out(self, ctx: BuildContext[BigParams]) -> Iterator[Json]:
        return ({"i": i} for i in range(ctx.params.tasks))

    def work(self, ctx: TaskContext[BigParams]) -> Json:
        return {"blob": "x" * ctx.params.result_bytes}


@pytest.fixture
def world() -> Iterator[World]:
    limits.configure(Limits(max_tasks_per_stage=5, max_result_bytes=1000))
    registry = Registry()
    registry.register(Big)
    registry.register(HelloWorld)
    db = FakeDatabase()
    yield World(FakeJobStore(db), FakeTaskStore(db), FakePoisonStore(db), FakeBus(), registry)
    limits.configure(Limits())


def test_a_stage_past_the_task_cap_fails_the_job_naming_the_limit(world: World) -> None:
    job = world.run("big", {"tasks": 6})

    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert "more than 5 tasks" in job.error["message"]
    assert "LIGHTSOUT_MAX_TASKS_PER_STAGE" in job.error["message"]
    assert world.task_rows(job.job_id) == []


def test_a_stage_at_the_task_cap_runs(world: World) -> None:
    assert world.run("big", {"tasks": 5}).status is JobStatus.COMPLETED


def test_a_result_past_the_cap_fails_its_task_for_good_naming_the_size(world: World) -> None:
    job = world.run("big", {"tasks": 1, "result_bytes": 2000})

    (task,) = world.task_rows(job.job_id)
    assert (task.status, task.attempt) == (TaskStatus.FAILED, 1)  # permanent: no retry
    assert task.error is not None and task.error.permanent
    assert "2,011 bytes" in task.error.message  # {"blob":"x…x"}
    assert "LIGHTSOUT_MAX_RESULT_BYTES" in task.error.message
    assert job.status is JobStatus.FAILED


def test_the_task_cap_stops_a_runaway_build_without_building_it_all() -> None:
    built = 0

    def endless() -> Iterator[int]:
        nonlocal built
        while True:
            built += 1
            yield built

    limits.configure(Limits(max_tasks_per_stage=10))
    try:
        with pytest.raises(LimitExceeded):
            list(capped_tasks(1, endless()))
    finally:
        limits.configure(Limits())
    assert built == 11


def test_a_result_at_the_cap_passes() -> None:
    limits.configure(Limits(max_result_bytes=12))
    try:
        assert checked_result({"a": "1234"}) == {"a": "1234"}  # {"a":"1234"} is 12 bytes
        with pytest.raises(LimitExceeded):
            checked_result({"a": "12345"})
    finally:
        limits.configure(Limits())
