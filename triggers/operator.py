"""HTTP routes of the operator: history, diagnose, pause and resume, bulk actions, workers."""

from __future__ import annotations

from datetime import timedelta

import azure.functions as func

from controllers.bulk import BulkActions
from controllers.diagnose import Diagnoser
from controllers.pause import Pauses
from controllers.registry import NAME
from repositories.operator import OperatorRepository
from schemas.auth import Identity, Scope
from schemas.operator import (
    BulkCancelResponse,
    BulkRetryResponse,
    EventList,
    JobTypePause,
    PauseResponse,
    WorkerList,
)
from schemas.status import JobStatus
from triggers.auth import protected
from triggers.inputs import json_body
from triggers.params import enum_param, job_id_param
from triggers.responses import BadRequest, int_param, json_response
from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
ANON = func.AuthLevel.ANONYMOUS
MAX_REASON_CHARS = 500


def _repo() -> OperatorRepository:
    return OperatorRepository(runtime().pool)


@bp.route(route="jobs/{job_id}/events", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def job_events(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Return a job's history oldest first: status changes, failures, repairs, operator actions."""
    job_id = job_id_param(req)
    runtime().jobs.get(job_id)  # 404 for an unknown job rather than an empty history
    page = _repo().events(
        job_id,
        limit=int_param(req, "limit", 100, 1, 1000) or 100,
        cursor=req.params.get("cursor") or None,
    )
    return json_response(EventList(events=page.items, next_cursor=page.next_cursor))


@bp.route(route="jobs/{job_id}/diagnose", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def diagnose_job(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Say in one sentence why the job is where it is, with the evidence."""
    rt = runtime()
    heartbeat = timedelta(seconds=rt.settings.heartbeat_s)
    diagnoser = Diagnoser(rt.jobs, _repo(), rt.engine.registry, rt.recovery.timings, heartbeat)
    return json_response(diagnoser.diagnose(job_id_param(req)))


@bp.route(route="job-types/{job_type}/pause", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def pause_job_type(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Pause a job type: its jobs are accepted and wait, its messages are held: 202."""
    pause = Pauses(runtime().engine, _repo()).pause(
        req.route_params["job_type"], who.actor, _reason(req)
    )
    return json_response(_pause_body(pause.job_type, pause), 202)


@bp.route(route="job-types/{job_type}/resume", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def resume_job_type(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Resume a paused job type where its jobs stopped: 202."""
    job_type = req.route_params["job_type"]
    Pauses(runtime().engine, _repo()).resume(job_type, who.actor)
    return json_response(_pause_body(job_type, None), 202)


@bp.route(route="jobs/cancel", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def cancel_jobs(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Cancel every unfinished job matching job_type and status: 202 with the counts."""
    job_type, status = _filters(req)
    matched, cancelled = _bulk().cancel(job_type, status, who.actor)
    return json_response(BulkCancelResponse(matched=matched, cancelled=cancelled), 202)


@bp.route(route="jobs/retry", methods=["POST"], auth_level=ANON)
@protected(Scope.ADMIN)
def retry_jobs(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Retry every failed job matching job_type and status: 202 with the counts."""
    job_type, status = _filters(req)
    matched, retried = _bulk().retry(job_type, status, who.actor)
    return json_response(BulkRetryResponse(matched=matched, retried=retried), 202)


@bp.route(route="workers", methods=["GET"], auth_level=ANON)
@protected(Scope.READ)
def list_workers(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """List the workers holding tasks or that claimed one in the last `minutes` (10)."""
    minutes = int_param(req, "minutes", 10, 1, 24 * 60) or 10
    workers = _repo().workers(timedelta(minutes=minutes))
    return json_response(WorkerList(workers=workers))


def _bulk() -> BulkActions:
    return BulkActions(runtime().recovery, _repo())


def _filters(req: func.HttpRequest) -> tuple[str | None, JobStatus | None]:
    job_type = req.params.get("job_type") or None
    status = enum_param(req, "status", JobStatus)
    if job_type is None and status is None:
        raise BadRequest("give at least one filter: job_type or status")
    if job_type is not None and not NAME.fullmatch(job_type):
        raise BadRequest(f"query parameter 'job_type' must match {NAME.pattern}")
    return job_type, status


def _reason(req: func.HttpRequest) -> str | None:
    body = json_body(req)
    reason = body.get("reason") if isinstance(body, dict) else None
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason must be a string")
    return reason[:MAX_REASON_CHARS] if reason else None


def _pause_body(job_type: str, pause: JobTypePause | None) -> PauseResponse:
    return PauseResponse(
        job_type=job_type,
        paused=pause is not None,
        paused_by=pause.paused_by if pause else None,
        paused_at=pause.paused_at if pause else None,
    )
