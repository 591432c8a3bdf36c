"""Queue triggers: the jobs queue drives stages, the task queue shards run tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from controllers.engine import M, parse_message
from controllers.outages import while_unavailable
from controllers.tracing import message_span
from schemas.exceptions import ContractViolation
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.settings import task_shard_queue
from triggers import shards
from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
log = logging.getLogger(__name__)
CONNECTION = "AzureWebJobsStorage"


@bp.queue_trigger(arg_name="msg", queue_name="%LIGHTSOUT_JOBS_QUEUE%", connection=CONNECTION)
def jobs_queue(msg: func.QueueMessage) -> None:
    """Build and dispatch the stage a job message names."""
    rt = runtime()
    _handle(msg, JobQueueMessage, rt.settings.jobs_queue, rt.engine.handle_job_message)


@bp.queue_trigger(arg_name="msg", queue_name="%LIGHTSOUT_TASKS_QUEUE%", connection=CONNECTION)
def tasks_queue(msg: func.QueueMessage) -> None:
    """Run the tasks a task message names."""
    rt = runtime()
    _handle(msg, TaskQueueMessage, rt.settings.tasks_queue, rt.engine.handle_task_message)


def _declare_task_shard(shard: int) -> None:
    """Declare `tasks_queue_<shard>`, the trigger of task queue shard `shard` (1 and up).

    Functions indexes triggers statically, so every shard has one whatever the configured
    count: messages left on a shard after the count was lowered still run. A shard not in
    use is switched off with the app setting AzureWebJobs.tasks_queue_<shard>.Disabled.
    """

    def run(msg: func.QueueMessage) -> None:
        rt = runtime()
        queue = task_shard_queue(rt.settings.tasks_queue, shard)
        _handle(msg, TaskQueueMessage, queue, rt.engine.handle_task_message)

    doc = f"Run the tasks a message of task queue shard {shard} names."
    shards.declare(
        bp, shards.queue_function(shard), f"%LIGHTSOUT_TASKS_QUEUE%-{shard}", CONNECTION, doc, run
    )


for _shard in shards.SHARDS:
    _declare_task_shard(_shard)


def _handle(
    msg: func.QueueMessage, model: type[M], queue: str, handler: Callable[[M], None]
) -> None:
    """Parse the message and hand it over, riding out a short outage of a dependency."""
    try:
        parsed = parse_message(model, msg.get_body())
    except ContractViolation:
        # A malformed message never gets better by redelivery: record it now, do not retry.
        # record_poison parses the body again and appends what is wrong to the reason.
        body = msg.get_body().decode("utf-8", errors="replace")
        reason = f"malformed {model.__name__}"
        count = msg.dequeue_count or 0
        runtime().engine.record_poison(queue, msg.id or "", body, count, reason, model)
        return
    with message_span(queue, parsed):
        while_unavailable(lambda: handler(parsed), runtime().settings.dependency_wait_s)
