"""word_count: make a corpus of documents, count the words of each, keep the top N."""

from collections import Counter

from pydantic import BaseModel, Field

from controllers import BaseController, BuildContext, Registry, Stage, TaskContext, registry
from controllers.base import AggregateContext, FinalizeContext, Json


class WordCountParams(BaseModel):
    documents: int = Field(default=4, ge=1, le=100, description="documents in the corpus")
    top: int = Field(default=3, ge=1, le=4, description="how many words to keep")


class WordCount(BaseController[WordCountParams]):
    job_type = "word_count"
    parameters = WordCountParams

    def define_stages(self) -> list[Stage[WordCountParams]]:
        return [
            Stage("split", build=lambda ctx: [{}], run=self.split),
            Stage("count", build=self.documents, run=lambda ctx: Counter(ctx.task["text"].split())),
            Stage("top", build=self.gather, run=self.top, aggregate=self.only),
        ]

    def split(self, ctx: TaskContext[WordCountParams]) -> Json:
        words = ("lights", "out", "the", "task")  # document i holds words[i % 4:]
        return {"documents": [" ".join(words[i % 4 :]) for i in range(ctx.params.documents)]}

    def documents(self, ctx: BuildContext[WordCountParams]) -> list[Json]:
        return [{"text": text} for _, r in ctx.previous_results() for text in r["documents"]]

    def gather(self, ctx: BuildContext[WordCountParams]) -> list[Json]:
        return [{"counts": [counts for _, counts in ctx.previous_results()]}]

    def top(self, ctx: TaskContext[WordCountParams]) -> Json:
        total = sum((Counter(c) for c in ctx.task["counts"]), Counter[str]())
        return {"top": total.most_common(ctx.params.top)}

    def only(self, ctx: AggregateContext[WordCountParams]) -> Json:
        return next(result for _, result in ctx.results())

    def finalize(self, ctx: FinalizeContext[WordCountParams]) -> Json:
        return {"documents": ctx.stage_results["2"].task_count, **ctx.stage_results["3"].aggregate}


def register(into: Registry = registry) -> None:
    into.register(WordCount)
