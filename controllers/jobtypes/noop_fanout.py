"""noop_fanout: self-tests and benchmarks; `tasks` no-op tasks in each of `stages` stages."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict, Field

from controllers.base import (
    AUTO_MAX_PER_MESSAGE,
    AggregateContext,
    BaseController,
    FinalizeContext,
    RetryPolicy,
    Stage,
    TaskContext,
)
from controllers.base import BuildContext as Build
from schemas.records import Json

MAX_STAGES = 10
# Self-tests that count each task's real runs set this to a file each run appends a line to.
RUN_LOG_ENV = "LIGHTSOUT_NOOP_RUN_LOG"


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(ge=1, le=100_000)
    stages: int = Field(default=2, ge=1, le=MAX_STAGES)
    sleep_ms: int = Field(default=0, ge=0, le=600_000)
    fail_task_indices: list[int] = Field(default_factory=list, max_length=1000)
    flaky_task_indices: list[int] = Field(default_factory=list, max_length=1000)
    fail_until_attempt: dict[int, int] = Field(
        default_factory=dict,
        max_length=100_000,
        description="task index -> the attempt it first succeeds on; earlier attempts fail",
    )


TASKS_PER_MESSAGE = AUTO_MAX_PER_MESSAGE


class InjectedFailure(RuntimeError):
    """noop_fanout failed a task because its parameters asked it to."""


class NoopFanout(BaseController[NoopParams]):
    job_type = "noop_fanout"
    description = "No-op tasks for self-tests and benchmarks, with injected failures."
    parameters = NoopParams
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=5.0)

    def define_stages(self) -> list[Stage[NoopParams]]:
        return [
            Stage(
                f"noop_{n}",
                build=self.build,
                run=self.run,
                aggregate=self.count,
                # Its tasks do next to nothing: they travel as many to a message as
                # automatic packing ever puts in one, so the queue's per-message cost
                # is spread over 100 tasks (the bench's 100,000-task stage: 1,000 messages).
                tasks_per_message=TASKS_PER_MESSAGE,
            )
            for n in range(1, MAX_STAGES + 1)
        ]

    def stage_count(self, params: NoopParams) -> int:
        return params.stages

    def build(self, ctx: Build[NoopParams]) -> list[Json]:
        return [{} for _ in range(ctx.params.tasks)]

    def run(self, ctx: TaskContext[NoopParams]) -> Json:
        if log_path := os.environ.get(RUN_LOG_ENV):
            with open(log_path, "a", encoding="utf-8") as log:  # one short append per run
                log.write(f"{ctx.task_id} {ctx.attempt}\n")
        if ctx.params.sleep_ms:
            time.sleep(ctx.params.sleep_ms / 2000)
            ctx.progress(0.5, "slept half")
            time.sleep(ctx.params.sleep_ms / 2000)
        if ctx.index in ctx.params.fail_task_indices:
            raise InjectedFailure(f"task {ctx.index} fails on every attempt")
        if ctx.index in ctx.params.flaky_task_indices and ctx.attempt == 1:
            raise InjectedFailure(f"task {ctx.index} fails on its first attempt")
        if ctx.attempt < ctx.params.fail_until_attempt.get(ctx.index, 0):
            raise InjectedFailure(f"task {ctx.index} fails on attempts before {ctx.attempt + 1}")
        return {"attempt": ctx.attempt}

    def count(self, ctx: AggregateContext[NoopParams]) -> Json:
        retried = sum(1 for _, r in ctx.results() if r.get("attempt", 1) > 1)
        return {"retried": retried}

    def finalize(self, ctx: FinalizeContext[NoopParams]) -> Json:
        ran = [r for r in ctx.stage_results.values() if r.task_count]
        return {"stages": len(ran), "tasks": sum(r.completed_count for r in ran)}
