"""HTTP routes of the API (DESIGN "Interfaces users depend on")."""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from controllers.progress import job_fraction, stage_fraction
from controllers.registry import registry
from controllers.tracing import continued
from repositories.operator import OperatorRepository
from schemas.auth import Identity, Scope
from schemas.exceptions import Conflict
from schemas.http import (
    CancelResponse,
    HealthBody,
    JobList,
    JobSummary,
    JobTypeInfo,
    JobTypeList,
    JobView,
    PoisonList,
    Progress,
    ReplayResponse,
    RetryResponse,
    StageInfo,
    StageProgress,
    SubmitResponse,
    TaskList,
    TaskView,
)
from schemas.operator import JobTypePause
from schemas.records import JobRecord
from schemas.status import JobStatus, TaskStatus
from triggers.auth import protected, require
from triggers.inputs import json_body
from triggers.openapi import openapi_document
from triggers.params import enum_param as _enum_param
from triggers.params import job_id_param as _job_id
from triggers.responses import BadRequest, int_param, json_response
from triggers.runtime import auth_notice, runtime

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
ANON = func.AuthLevel.ANONYMOUS
API_VERSION = "1.0"


@bp.route(route="jobs/{job_type}", methods=["POST"], auth_level=ANON)
@protected(Scope.SUBMIT)
def submit_job(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Submit a job: 202 when new, 200 with the same body when it existed."""
    force = (req.params.get("force") or "").lower() in ("1", "true", "yes")
    if force:
        require(who, Scope.ADMIN, "force=true")
    job_type = req.route_params["job_type"]
    parent = req.headers.get("traceparent")
    with continued("POST /api/jobs/{job_type}", parent, SpanKind.SERVER, {"job_type": job_type}):
        submission = runtime().engine.submit(job_type, json_body(req), who.actor, force)
    body = SubmitResponse(
        job_id=submission.job_id,
        job_type=submission.job_type,
        status=submission.status,
        status_url=f"/api/jobs/{submission.job_id}",
        created=submission.created,
    )
    return json_response(body, 202 if submission.created else 200)


@bp.route(route="jobs/{job_id}", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def get_job(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Return a job with its stage results and progress."""
    job = runtime().jobs.get(_job_id(req))
    return json_response(job_view(job))


@bp.route(route="jobs", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def list_jobs(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """List jobs newest first, filtered by status and job_type."""
    page = runtime().jobs.find(
        status=_enum_param(req, "status", JobStatus),
        job_type=req.params.get("job_type") or None,
        limit=int_param(req, "limit", 50, 1, 500) or 50,
        cursor=req.params.get("cursor") or None,
    )
    summaries = [JobSummary.model_validate(_fields_of(JobSummary, job)) for job in page.items]
    return json_response(JobList(jobs=summaries, next_cursor=page.next_cursor))


@bp.route(route="jobs/{job_id}/tasks", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def list_tasks(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """List a job's tasks, filtered by stage and status."""
    job_id = _job_id(req)
    rt = runtime()
    rt.jobs.get(job_id)  # 404 for an unknown job rather than an empty list
    page = rt.tasks.find(
        job_id,
        stage=int_param(req, "stage", None, 1, 1000),
        status=_enum_param(req, "status", TaskStatus),
        limit=int_param(req, "limit", 100, 1, 1000) or 100,
        cursor=req.params.get("cursor") or None,
    )
    views = [TaskView.model_validate(_fields_of(TaskView, task)) for task in page.items]
    if not who.allows(Scope.ADMIN):
        views = [_without_traceback(view) for view in views]
    return json_response(TaskList(tasks=views, next_cursor=page.next_cursor))


@bp.route(route="jobs/{job_id}/cancel", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def cancel_job(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Cancel an unfinished job: 202; 409 when it has finished already."""
    job_id = _job_id(req)
    cancelled, status = runtime().engine.cancel(job_id, who.actor, "cancelled over the API")
    if not cancelled:
        raise Conflict(f"job has already finished as {status.value}", job_id=job_id)
    return json_response(CancelResponse(job_id=job_id, status=status), 202)


@bp.route(route="jobs/{job_id}/retry", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def retry_job(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Re-run the failed tasks of a failed job's failed stage and continue the job: 202."""
    job_id = _job_id(req)
    parent = req.headers.get("traceparent")
    # Its own trace (or the caller's): the tasks it sends again carry it.
    with continued("POST /api/jobs/{job_id}/retry", parent, SpanKind.SERVER, {"job_id": job_id}):
        stage, count = runtime().recovery.retry_job(job_id, who.actor)
    body = RetryResponse(
        job_id=job_id, status=JobStatus.PROCESSING, stage=stage, retried_tasks=count
    )
    return json_response(body, 202)


@bp.route(route="poison", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def list_poison(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """List recorded poison messages, newest first."""
    records = runtime().poison.recent(int_param(req, "limit", 100, 1, 1000) or 100)
    return json_response(PoisonList(poison=records))


@bp.route(route="poison/{poison_id}/replay", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def replay_poison(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Send a recorded poison message again to the queue it came from: 202, once.

    A second replay answers 409 naming when the first was, unless `?force=true`.
    """
    raw = req.route_params.get("poison_id", "")
    if not raw.isdigit():
        raise BadRequest(f"malformed poison id {raw!r}: expected a number")
    force = req.params.get("force", "false")
    if force not in ("true", "false"):
        raise BadRequest(f"query parameter 'force' must be true or false, got {force!r}")
    queue = runtime().recovery.replay_poison(int(raw), force == "true")
    # poison_messages keeps only replayed_at; who asked is in the log until it has a column.
    log.info("poison message %s replayed to %s by %s", raw, queue, who.actor)
    return json_response(ReplayResponse(poison_id=int(raw), queue_name=queue), 202)


@bp.route(route="job-types", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def job_types(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Describe each job type: its stages, its parameters' JSON Schema, whether it is paused."""
    pauses = OperatorRepository(runtime().pool).pauses()
    infos = [
        JobTypeInfo(
            job_type=c.job_type,
            description=c.description,
            stages=[
                StageInfo(
                    stage=n,
                    name=s.name,
                    task_type=s.name,
                    tasks_per_message=s.tasks_per_message or None,
                )
                for n, s in enumerate(c.stages, start=1)
            ],
            parameters_schema=c.parameters.model_json_schema(),
            **pause_fields(pauses.get(c.job_type)),
        )
        for c in runtime().engine.registry
    ]
    return json_response(JobTypeList(job_types=infos))


@bp.route(route="openapi.json", methods=["GET"], auth_level=ANON)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of the API; it holds no data, so it needs no credential."""
    return json_response(openapi_document(registry, API_VERSION))


@bp.route(route="health", methods=["GET"], auth_level=ANON)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """200 when the database and the queues answer, 503 naming what does not."""
    checks = {"database": _database_problem() or "ok"}
    try:
        checks["queues"] = runtime().queues.health() or "ok"
    except Exception as exc:
        checks["queues"] = f"{type(exc).__name__}: {exc}"
    healthy = all(v == "ok" for v in checks.values())
    settings = runtime().settings
    notice = auth_notice(settings)
    body = HealthBody(
        status="ok" if healthy else "unavailable",
        checks=checks,
        auth=settings.auth,
        warnings=[notice] if notice else [],
    )
    return json_response(body, 200 if healthy else 503)


def _database_problem() -> str | None:
    try:
        with runtime().pool.connection(timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def job_view(job: JobRecord) -> JobView:
    """Return the API view of a job, with progress from its stage counters."""
    stages = runtime().jobs.stages(job.job_id)
    running = OperatorRepository(runtime().pool).running_progress(job.job_id)
    progress = Progress(
        fraction=job_fraction(stages, running, job.total_stages),
        total=sum(s.task_count for s in stages),
        completed=sum(s.completed_count for s in stages),
        failed=sum(s.failed_count for s in stages),
        remaining=sum(s.remaining for s in stages),
    )
    per_stage = [
        StageProgress(
            stage=s.stage,
            name=s.name,
            status=s.status,
            fraction=stage_fraction(s, running.get(s.stage, 0.0)),
            task_count=s.task_count,
            completed=s.completed_count,
            failed=s.failed_count,
            remaining=s.remaining,
        )
        for s in stages
    ]
    return JobView.model_validate(
        {**job.model_dump(exclude={"dispatched_at"}), "progress": progress, "stages": per_stage}
    )


def _without_traceback(view: TaskView) -> TaskView:
    """Tracebacks name files and lines of the app: they are for jobs:admin only."""
    if view.error is None or view.error.traceback is None:
        return view
    return view.model_copy(update={"error": view.error.model_copy(update={"traceback": None})})


def pause_fields(pause: JobTypePause | None) -> dict[str, Any]:
    """Return the pause fields of a job type's description."""
    return {
        "paused": pause is not None,
        "paused_by": pause.paused_by if pause else None,
        "paused_at": pause.paused_at if pause else None,
    }


def _fields_of(view: type[BaseModel], record: BaseModel) -> dict[str, Any]:
    """Return the part of a record that a (smaller, extra="forbid") view shows."""
    return record.model_dump(include=set(view.model_fields))
