"""Queue triggers: the jobs queue drives stages, the tasks queue runs tasks."""

from __future__ import annotations

import logging

import azure.functions as func

from controllers.engine import parse_message
from controllers.outages import while_unavailable
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
    try:
        parsed = parse_message(JobQueueMessage, msg.get_body())
    except ContractViolation:
        _record_malformed(msg, rt.settings.jobs_queue, JobQueueMessage)
        return
    while_unavailable(lambda: rt.engine.handle_job_message(parsed), rt.settings.dependency_wait_s)


@bp.queue_trigger(arg_name="msg", queue_name="%LIGHTSOUT_TASKS_QUEUE%", connection=CONNECTION)
def tasks_queue(msg: func.QueueMessage) -> None:
    """Run the tasks a task message names."""
    rt = runtime()
    try:
        parsed = parse_message(TaskQueueMessage, msg.get_body())
    except ContractViolation:
        _record_malformed(msg, rt.settings.tasks_queue, TaskQueueMessage)
        return
    while_unavailable(lambda: rt.engine.handle_task_message(parsed), rt.settings.dependency_wait_s)


def _record_malformed(
    msg: func.QueueMessage, queue: str, model: type[JobQueueMessage] | type[TaskQueueMessage]
) -> None:
    # A malformed message never gets better by redelivery: record it now, do not retry it.
    # record_poison parses the body again and appends what is wrong with it to the reason.
    body = msg.get_body().decode("utf-8", errors="replace")
    reason = f"malformed {model.__name__}"
    runtime().engine.record_poison(queue, msg.id or "", body, msg.dequeue_count or 0, reason, model)
