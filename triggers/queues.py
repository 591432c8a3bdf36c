"""Queue triggers: the jobs queue drives stages, the tasks queue runs tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from controllers.engine import M, parse_message
from controllers.outages import while_unavailable
from controllers.tracing import message_span
from schemas.exceptions import ContractViolation
from schemas.messages import JobQueueMessage, TaskQueueMessage
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
