"""hello_world: stage 1 greets n times, stage 2 replies to each greeting."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from controllers.base import AggregateContext, BaseController, BuildContext, FinalizeContext, Stage
from controllers.base import TaskContext as Ctx
from controllers.registry import register
from schemas.records import Json


class HelloParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=3, ge=1, le=10_000, description="how many greetings")
    name: str = Field(default="world", min_length=1, max_length=100)


@register
class HelloWorld(BaseController[HelloParams]):
    job_type = "hello_world"
    description = "Stage 1 greets n times; stage 2 replies to each greeting."
    parameters = HelloParams

    def define_stages(self) -> list[Stage[HelloParams]]:
        return [
            Stage("greet", build=self.greetings, run=self.greet, aggregate=self.count),
            Stage("reply", build=self.replies, run=self.reply, aggregate=self.count),
        ]

    def greetings(self, ctx: BuildContext[HelloParams]) -> list[Json]:
        return [{"i": i} for i in range(ctx.params.n)]

    def greet(self, ctx: Ctx[HelloParams]) -> Json:
        return {"greeting": f"hello {ctx.params.name} #{ctx.task['i']}"}

    def replies(self, ctx: BuildContext[HelloParams]) -> list[Json]:
        return [{"greeting": result["greeting"]} for _, result in ctx.previous_results()]

    def reply(self, ctx: Ctx[HelloParams]) -> Json:
        return {"reply": f"and hello back to '{ctx.task['greeting']}'"}

    def count(self, ctx: AggregateContext[HelloParams]) -> Json:
        return {"messages": sum(1 for _ in ctx.results())}

    def finalize(self, ctx: FinalizeContext[HelloParams]) -> Json:
        greeted = ctx.stage_results["1"].aggregate["messages"]
        replied = ctx.stage_results["2"].aggregate["messages"]
        return {
            "greetings": greeted,
            "replies": replied,
            "summary": f"{greeted} hellos, {replied} replies",
        }
