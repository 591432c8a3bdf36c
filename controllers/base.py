"""The extension API: a job type is one BaseController subclass with its stages.

A job type declares its parameter model, its ordered stages and a finalize step::

    class Greetings(BaseController[GreetParams]):
        job_type = "greetings"
        parameters = GreetParams

        def define_stages(self) -> list[Stage[GreetParams]]:
            return [Stage("greet", build=self.plan, run=self.greet)]

        def plan(self, ctx: BuildContext[GreetParams]) -> list[dict[str, Any]]:
            return [{"i": i} for i in range(ctx.params.n)]

        def greet(self, ctx: TaskContext[GreetParams]) -> dict[str, Any]:
            return {"greeting": f"hello {ctx.task['i']}"}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from schemas.ids import JobId, TaskId
from schemas.records import Json as Json  # job types take it from here
from schemas.results import StageResultContract
from schemas.status import StageStatus

P = TypeVar("P", bound=BaseModel)
ResultPages = Callable[[], Iterator[list[tuple[int, Json | None]]]]
ProgressSink = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


@dataclass(frozen=True)
class BuildContext(Generic[P]):
    """What a stage's `build` sees: the job's parameters and the earlier stages' results."""

    job_id: JobId
    stage: int
    params: P
    stage_results: Mapping[str, StageResultContract]
    previous_pages: ResultPages

    def previous_results(self) -> Iterator[tuple[int, Json]]:
        """Yield (task_index, result) of the previous stage's completed tasks, paged from the db."""
        for page in self.previous_pages():
            for index, result in page:
                yield index, result or {}


@dataclass(frozen=True)
class TaskContext(Generic[P]):
    """What a task handler sees: its own parameters, the job's, and its attempt."""

    job_id: JobId
    task_id: TaskId
    stage: int
    index: int
    attempt: int
    max_attempts: int
    params: P
    task: Json
    report: ProgressSink = _no_progress

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far this attempt is (0..1), shown in the job's progress; cheap to call."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be a fraction within 0..1, not {fraction}")
        self.report(fraction, message)


@dataclass(frozen=True)
class AggregateContext(Generic[P]):
    """What a stage's `aggregate` sees once all its tasks are terminal."""

    job_id: JobId
    stage: int
    params: P
    results_pages: ResultPages

    def results(self) -> Iterator[tuple[int, Json]]:
        """Yield (task_index, result) of this stage's completed tasks, paged from the db."""
        for page in self.results_pages():
            for index, result in page:
                yield index, result or {}


@dataclass(frozen=True)
class FinalizeContext(Generic[P]):
    """What finalize sees: the parameters and every stage's StageResultContract."""

    job_id: JobId
    params: P
    stage_results: Mapping[str, StageResultContract]


AUTO_PACKING = 0
# An automatically packed stage aims at about this many messages: enough for every host
# to have messages in flight, few enough that the queue's per-message rate is not the
# limit (a 1,000-task stage is 200 messages of 5, a 100,000-task stage 1,000 of 100).
AUTO_MESSAGES = 200
AUTO_MAX_PER_MESSAGE = 100


def packing_for(declared: int, task_count: int) -> int:
    """Return how many tasks go in one message: the declared number, or the automatic one."""
    if declared != AUTO_PACKING:
        return declared
    return max(1, min(AUTO_MAX_PER_MESSAGE, -(-task_count // AUTO_MESSAGES)))


def _no_aggregate(ctx: AggregateContext[Any]) -> Json:
    return {}


@dataclass(frozen=True)
class Stage(Generic[P]):
    """One stage: how its tasks are built, how each runs, how its results are summed up.

    Parameters:
        name: the stage's name; also the task type of its tasks.
        build: returns one JSON object per task (the task's parameters); may be empty.
        run: the task handler; returns the task's result (a small JSON object). Raise
            PermanentTaskError for an error that retrying cannot fix.
        aggregate: makes the stage's `aggregate` in its StageResultContract.
        tasks_per_message: how many tasks travel in one queue message; AUTO_PACKING (the
            default) picks it from the number of tasks sent (`packing_for`).
        max_attempts: attempts per task; None takes the job type's.
    """

    name: str
    build: Callable[[BuildContext[P]], Iterable[Json]]
    run: Callable[[TaskContext[P]], Json]
    aggregate: Callable[[AggregateContext[P]], Json] = _no_aggregate
    tasks_per_message: int = 0  # AUTO_PACKING
    max_attempts: int | None = None


@dataclass(frozen=True)
class FailurePolicy:
    """How many failed tasks a stage may have and still let the job go on.

    Parameters:
        max_failed_fraction: 0 fails the stage (and the job) on any failed task; 0.1
            tolerates up to 10 % failed tasks, the stage ending `completed_with_errors`.
    """

    max_failed_fraction: float = 0.0

    def stage_status(self, task_count: int, failed_count: int) -> StageStatus:
        """Return the final status of a stage with these counts."""
        if failed_count == 0:
            return StageStatus.COMPLETED
        if failed_count <= self.max_failed_fraction * task_count:
            return StageStatus.COMPLETED_WITH_ERRORS
        return StageStatus.FAILED


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per task and exponential backoff with full jitter between them.

    Parameters:
        max_attempts: attempts per task, the first included.
        base_delay_s: the delay before the second attempt, doubled for each further one.
        max_delay_s: the cap on any delay.
    """

    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0


class BaseController(Generic[P]):
    """A job type: subclass it, set the class attributes, define the stages.

    Parameters (class attributes):
        job_type: the name users submit to (`POST /api/jobs/{job_type}`).
        parameters: the Pydantic model of the job's parameters.
        description: one line shown by `GET /api/job-types`.
        failure_policy: when failed tasks fail the job.
        retry: attempts and backoff of its tasks.
    """

    job_type: ClassVar[str]
    parameters: type[P]
    description: ClassVar[str] = ""
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy()
    retry: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(self) -> None:
        self.stages: tuple[Stage[P], ...] = tuple(self.define_stages())

    def define_stages(self) -> list[Stage[P]]:
        """Return the ordered stages of this job type."""
        raise NotImplementedError

    def stage_count(self, params: P) -> int:
        """Return how many of the declared stages a job with `params` runs (default: all)."""
        return len(self.stages)

    def finalize(self, ctx: FinalizeContext[P]) -> Json:
        """Return the job's `result`; by default the last stage's aggregate."""
        return dict(ctx.stage_results[str(len(ctx.stage_results))].aggregate)

    def stage(self, number: int) -> Stage[P]:
        """Return stage `number` (1-based)."""
        return self.stages[number - 1]

    def max_attempts(self, number: int) -> int:
        """Return the attempts each task of stage `number` gets."""
        return self.stage(number).max_attempts or self.retry.max_attempts
