"""prime_count: a dynamic fan-out. Stage 1 plans the ranges, and so decides how many
tasks stage 2 gets; stage 2 counts the primes of each range; stage 3 reduces."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from controllers.base import (
    AggregateContext,
    BaseController,
    BuildContext,
    FinalizeContext,
    Stage,
    TaskContext,
)
from controllers.registry import register
from schemas.records import Json


class PrimeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100_000, ge=2, le=50_000_000, description="count primes below")
    chunk_size: int = Field(default=10_000, ge=100, le=10_000_000)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


@register
class PrimeCount(BaseController[PrimeParams]):
    job_type = "prime_count"
    description = "Counts primes below `limit`: plan ranges, count each, reduce."
    parameters = PrimeParams

    def define_stages(self) -> list[Stage[PrimeParams]]:
        return [
            Stage("plan", build=lambda ctx: [{}], run=self.plan),
            Stage("count", build=self.ranges, run=self.count, tasks_per_message=4),
            Stage("reduce", build=self.gather, run=self.reduce, aggregate=self.total),
        ]

    def plan(self, ctx: TaskContext[PrimeParams]) -> Json:
        step, limit = ctx.params.chunk_size, ctx.params.limit
        return {"ranges": [[lo, min(lo + step, limit)] for lo in range(0, limit, step)]}

    def ranges(self, ctx: BuildContext[PrimeParams]) -> list[Json]:
        ((_, plan),) = ctx.previous_results()
        return [{"lo": lo, "hi": hi} for lo, hi in plan["ranges"]]

    def count(self, ctx: TaskContext[PrimeParams]) -> Json:
        primes = [n for n in range(ctx.task["lo"], ctx.task["hi"]) if is_prime(n)]
        return {"count": len(primes), "largest": max(primes, default=None)}

    def gather(self, ctx: BuildContext[PrimeParams]) -> list[Json]:
        results = [r for _, r in ctx.previous_results()]
        largest = [r["largest"] for r in results if r["largest"] is not None]
        return [{"counts": [r["count"] for r in results], "largest": max(largest, default=None)}]

    def reduce(self, ctx: TaskContext[PrimeParams]) -> Json:
        return {"primes": sum(ctx.task["counts"]), "largest": ctx.task["largest"]}

    def total(self, ctx: AggregateContext[PrimeParams]) -> Json:
        return {result_key: value for _, r in ctx.results() for result_key, value in r.items()}

    def finalize(self, ctx: FinalizeContext[PrimeParams]) -> Json:
        ranges = ctx.stage_results["2"].task_count
        return {"limit": ctx.params.limit, "ranges": ranges, **ctx.stage_results["3"].aggregate}
