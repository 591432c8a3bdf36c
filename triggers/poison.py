"""Poison-queue triggers: record the message and fail what it names, so no job waits on it."""

from __future__ import annotations

import azure.functions as func

from controllers.outages import while_unavailable
from schemas.messages import JobQueueMessage, TaskQueueMessage
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


def _record(
    msg: func.QueueMessage, queue: str, model: type[JobQueueMessage] | type[TaskQueueMessage]
) -> None:
    body = msg.get_body().decode("utf-8", errors="replace")
    reason = "every delivery failed (maxDequeueCount reached)"
    rt = runtime()
    while_unavailable(
        lambda: rt.engine.record_poison(
            queue, msg.id or "", body, msg.dequeue_count or 0, reason, model
        ),
        rt.settings.dependency_wait_s,
    )
