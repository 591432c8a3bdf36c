"""Poison-queue triggers: record the message and fail what it names, so no job waits on it."""

from __future__ import annotations

import azure.functions as func

from azstorage import UndecodedMessage
from controllers.outages import while_unavailable
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.settings import task_shard_queue
from triggers import shards
from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
CONNECTION = "AzureWebJobsStorage"


@bp.queue_trigger(arg_name="msg", queue_name="%LIGHTSOUT_JOBS_QUEUE%-poison", connection=CONNECTION)
def jobs_poison(msg: func.QueueMessage) -> None:
    """Record a job message that failed every delivery, and fail its job."""
    _record(msg, runtime().settings.jobs_poison_queue, JobQueueMessage)


@bp.queue_trigger(
    arg_name="msg", queue_name="%LIGHTSOUT_TASKS_QUEUE%-poison", connection=CONNECTION
)
def tasks_poison(msg: func.QueueMessage) -> None:
    """Record a task message that failed every delivery, and fail its tasks."""
    _record(msg, runtime().settings.tasks_poison_queue, TaskQueueMessage)


def _declare_task_shard_poison(shard: int) -> None:
    """Declare `tasks_poison_<shard>`, the trigger of task queue shard `shard`'s poison queue."""

    def record(msg: func.QueueMessage) -> None:
        queue = f"{task_shard_queue(runtime().settings.tasks_queue, shard)}-poison"
        _record(msg, queue, TaskQueueMessage)

    doc = f"Record a message of task queue shard {shard} that failed every delivery."
    queue_name = f"%LIGHTSOUT_TASKS_QUEUE%-{shard}-poison"
    shards.declare(bp, shards.poison_function(shard), queue_name, CONNECTION, doc, record)


for _shard in shards.SHARDS:
    _declare_task_shard_poison(_shard)


def _record(
    msg: func.QueueMessage, queue: str, model: type[JobQueueMessage] | type[TaskQueueMessage]
) -> None:
    body = msg.get_body().decode("utf-8", errors="replace")
    message_id, count, rt = msg.id or "", msg.dequeue_count or 0, runtime()
    if isinstance(msg, UndecodedMessage):
        # Not in host.json's encoding (only the local host hands these over): nothing in
        # the text can be trusted to name a job, so it is recorded and nothing is failed.
        reason = f"{msg.reason}; moved here unread"
        while_unavailable(
            lambda: rt.poison.record(queue, message_id, body, count, reason),
            rt.settings.dependency_wait_s,
        )
        return
    reason = "every delivery failed (maxDequeueCount reached)"
    while_unavailable(
        lambda: rt.engine.record_poison(queue, message_id, body, count, reason, model),
        rt.settings.dependency_wait_s,
    )
