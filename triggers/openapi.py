"""The OpenAPI 3.1 document of the API, generated from the Pydantic models and the job types.

Every operation lists the answers it can give; the schemathesis run (tests/contract)
holds the app to them. Request bodies are the job types' parameter models, one submit
operation per job type, so a client generator gets a typed call for each.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from controllers.registry import Registry
from schemas.http import (
    PURGE_AGE,
    PURGE_STATUSES,
    CancelResponse,
    ErrorBody,
    HealthBody,
    JobList,
    JobTypeList,
    JobView,
    PoisonList,
    PurgeResponse,
    ReplayResponse,
    RetryResponse,
    SubmitResponse,
    TaskList,
)
from schemas.operator import (
    BulkCancelResponse,
    BulkRetryResponse,
    Diagnosis,
    EventList,
    PauseResponse,
    WorkerList,
)
from schemas.records import Json
from schemas.status import JobStatus, TaskStatus

REF = "#/components/schemas/{model}"
SECURITY: list[dict[str, list[str]]] = [{"apiKeyHeader": []}, {"apiKeyQuery": []}, {"bearer": []}]
ERRORS = {
    400: "malformed request: the message says what",
    401: "no credential, or one that is not valid",
    403: "the credential lacks the scope the operation needs",
    404: "no such record",
    409: "the record's state does not allow it",
    413: "request body over 1 MiB",
    422: "parameters that do not match the job type's model; `fields` names each",
    503: "the database or the queue service does not answer",
}
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "description": "64 lowercase hex digits",
}
RESPONSES: list[type[BaseModel]] = [
    SubmitResponse,
    JobView,
    JobList,
    TaskList,
    CancelResponse,
    RetryResponse,
    PoisonList,
    ReplayResponse,
    PurgeResponse,
    JobTypeList,
    HealthBody,
    ErrorBody,
    EventList,
    Diagnosis,
    PauseResponse,
    BulkCancelResponse,
    BulkRetryResponse,
    WorkerList,
]


def openapi_document(registry: Registry, version: str) -> Json:
    """Return the OpenAPI 3.1 document of every route, for the job types in `registry`."""
    # Cached per set of job types: one registered later (a test's) makes a new document.
    return _document(registry, version, tuple(c.job_type for c in registry))


@functools.cache
def _document(registry: Registry, version: str, job_types: tuple[str, ...]) -> Json:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "serialization") for m in RESPONSES]
    models += [(c.parameters, "validation") for c in registry]
    refs, definitions = models_json_schema(models, ref_template=REF)

    def ref(model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> Json:
        return dict(refs[(model, mode)])

    paths: Json = {
        "/health": {"get": _health(ref(HealthBody))},
        "/openapi.json": {"get": _openapi_op()},
        "/jobs": {"get": _list_jobs(ref)},
        "/jobs/{job_id}": {"get": _get_job(ref)},
        "/jobs/{job_id}/tasks": {"get": _list_tasks(ref)},
        "/jobs/{job_id}/cancel": {"post": _cancel(ref)},
        "/jobs/{job_id}/retry": {"post": _retry(ref)},
        "/jobs/purge": {"post": _purge(ref)},
        "/poison": {"get": _list_poison(ref)},
        "/poison/{poison_id}/replay": {"post": _replay(ref)},
        "/job-types": {"get": _job_types(ref)},
        **_operator_paths(ref),
    }
    for controller in registry:
        params = ref(controller.parameters, "validation")
        paths[f"/jobs/{controller.job_type}"] = {"post": _submit(controller.job_type, params, ref)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lightsout",
            "version": version,
            "description": "Multi-stage jobs: submit, follow, cancel, retry. See the README.",
        },
        "servers": [{"url": "/api"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def _answers(ok: dict[int, tuple[str, Json]], errors: list[int], error_ref: Json) -> Json:
    answers: Json = {
        str(status): {"description": text, "content": {"application/json": {"schema": schema}}}
        for status, (text, schema) in ok.items()
    }
    for status in errors:
        answers[str(status)] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": error_ref}},
        }
    return answers


def _protected(
    op_id: str,
    summary: str,
    scope: str,
    ok: dict[int, tuple[str, Json]],
    errors: list[int],
    ref: Any,
    parameters: list[Json] | None = None,
) -> Json:
    operation: Json = {
        "operationId": op_id,
        "summary": summary,
        "description": f"Needs the scope `{scope}`.",
        "security": SECURITY,
        "parameters": parameters or [],
        "responses": _answers(ok, sorted({400, 401, 403, 503, *errors}), ref(ErrorBody)),
    }
    return operation


def _query(name: str, schema: Json, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _enum(kind: type[JobStatus] | type[TaskStatus]) -> Json:
    return {"type": "string", "enum": [m.value for m in kind]}


def _limit(default: int, high: int) -> Json:
    return _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": high, "default": default}, "page size"
    )


CURSOR = _query("cursor", {"type": "string"}, "next_cursor of the previous page")


def _submit(job_type: str, params: Json, ref: Any) -> Json:
    answer = ref(SubmitResponse)
    operation = _protected(
        f"submit_{job_type}",
        f"Submit a {job_type} job",
        "jobs:submit (and jobs:admin with force=true)",
        {202: ("a new job", answer), 200: ("the same job existed already", answer)},
        [413, 422],
        ref,
        [
            _query("force", {"type": "boolean"}, "run again under a new id (jobs:admin)"),
            {
                "name": "X-Lightsout-Actor",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "recorded as 'on behalf of' next to the authenticated identity",
            },
        ],
    )
    operation["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": params}},
    }
    return operation


def _get_job(ref: Any) -> Json:
    ok = {200: ("the job, its stage results and progress", ref(JobView))}
    return _protected("get_job", "Get a job", "jobs:read", ok, [404], ref, [JOB_ID])


def _list_jobs(ref: Any) -> Json:
    params = [
        _query("status", _enum(JobStatus), "only jobs with this status"),
        _query("job_type", {"type": "string"}, "only jobs of this type"),
        _limit(50, 500),
        CURSOR,
    ]
    ok = {200: ("jobs, newest first", ref(JobList))}
    return _protected("list_jobs", "List jobs", "jobs:read", ok, [], ref, params)


def _list_tasks(ref: Any) -> Json:
    params = [
        JOB_ID,
        _query("stage", {"type": "integer", "minimum": 1, "maximum": 1000}, "only this stage"),
        _query("status", _enum(TaskStatus), "only tasks with this status"),
        _limit(100, 1000),
        CURSOR,
    ]
    ok = {200: ("tasks; tracebacks only for jobs:admin", ref(TaskList))}
    return _protected("list_tasks", "List a job's tasks", "jobs:read", ok, [404], ref, params)


def _cancel(ref: Any) -> Json:
    ok = {202: ("cancelled", ref(CancelResponse))}
    return _protected("cancel_job", "Cancel a job", "jobs:admin", ok, [404, 409], ref, [JOB_ID])


def _retry(ref: Any) -> Json:
    ok = {202: ("the failed tasks run again", ref(RetryResponse))}
    summary = "Retry a failed job's failed tasks"
    return _protected("retry_job", summary, "jobs:admin", ok, [404, 409], ref, [JOB_ID])


def _purge(ref: Any) -> Json:
    older_than = {
        "name": "older_than",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "pattern": PURGE_AGE},
        "description": "an ISO 8601 time, or an age: 30d, 12h, 15m, 90s",
    }
    statuses = [s.value for s in PURGE_STATUSES]
    status = _query(
        "status",
        {"type": "string", "pattern": f"^({'|'.join(statuses)})(,({'|'.join(statuses)}))*$"},
        "finished statuses to purge, comma-separated (default: all of them)",
    )
    ok = {200: ("what was deleted; `more` when matching jobs are left", ref(PurgeResponse))}
    summary = "Delete finished jobs older than a cut-off, with their stages, tasks and events"
    return _protected("purge_jobs", summary, "jobs:admin", ok, [], ref, [older_than, status])


def _list_poison(ref: Any) -> Json:
    ok = {200: ("poison messages, newest first", ref(PoisonList))}
    params = [_limit(100, 1000)]
    return _protected("list_poison", "List poison messages", "jobs:read", ok, [], ref, params)


def _replay(ref: Any) -> Json:
    poison_id = {"name": "poison_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    force = _query("force", {"type": "string", "enum": ["true", "false"]}, "replay again")
    ok = {202: ("sent again to its queue", ref(ReplayResponse))}
    summary = "Replay a poison message (once, unless force=true)"
    params = [poison_id, force]
    return _protected("replay_poison", summary, "jobs:admin", ok, [404, 409], ref, params)


def _job_types(ref: Any) -> Json:
    ok = {200: ("every job type with its stages and parameter schema", ref(JobTypeList))}
    return _protected("job_types", "Describe the job types", "jobs:read", ok, [], ref)


def _operator_paths(ref: Any) -> Json:
    """The operator's routes (triggers/operator.py)."""
    job_type = {"name": "job_type", "in": "path", "required": True, "schema": {"type": "string"}}
    filters = [
        _query("job_type", {"type": "string"}, "only jobs of this type"),
        _query("status", _enum(JobStatus), "only jobs with this status"),
    ]
    reason = {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 500}},
    }
    minutes = {"type": "integer", "minimum": 1, "maximum": 1440, "default": 10}
    pause = _protected(
        "pause_job_type",
        "Pause a job type: new jobs wait, its messages are held",
        "jobs:admin",
        {202: ("paused (again: unchanged)", ref(PauseResponse))},
        [413, 422],
        ref,
        [job_type],
    )
    pause["requestBody"] = {"required": False, "content": {"application/json": {"schema": reason}}}
    bulk = "at least one filter; matched counts every match, the rest what this call changed"
    return {
        "/jobs/{job_id}/events": {
            "get": _protected(
                "job_events",
                "A job's history, oldest first",
                "jobs:read",
                {200: ("events", ref(EventList))},
                [404],
                ref,
                [JOB_ID, _limit(100, 1000), CURSOR],
            )
        },
        "/jobs/{job_id}/diagnose": {
            "get": _protected(
                "diagnose_job",
                "Why the job is where it is: a state, a verdict, the evidence",
                "jobs:read",
                {200: ("the diagnosis", ref(Diagnosis))},
                [404],
                ref,
                [JOB_ID],
            )
        },
        "/job-types/{job_type}/pause": {"post": pause},
        "/job-types/{job_type}/resume": {
            "post": _protected(
                "resume_job_type",
                "Resume a paused job type where its jobs stopped",
                "jobs:admin",
                {202: ("resumed", ref(PauseResponse))},
                [],
                ref,
                [job_type],
            )
        },
        "/jobs/cancel": {
            "post": _protected(
                "cancel_jobs",
                f"Cancel every unfinished job that matches ({bulk})",
                "jobs:admin",
                {202: ("how many matched and were cancelled", ref(BulkCancelResponse))},
                [],
                ref,
                filters,
            )
        },
        "/jobs/retry": {
            "post": _protected(
                "retry_jobs",
                f"Retry every failed job that matches ({bulk})",
                "jobs:admin",
                {202: ("how many matched and were retried", ref(BulkRetryResponse))},
                [],
                ref,
                filters,
            )
        },
        "/workers": {
            "get": _protected(
                "list_workers",
                "Hosts holding tasks or that claimed one lately",
                "jobs:read",
                {200: ("workers", ref(WorkerList))},
                [],
                ref,
                [_query("minutes", minutes, "how far back a claim counts")],
            )
        },
    }


def _health(body: Json) -> Json:
    content = {"application/json": {"schema": body}}
    return {
        "operationId": "health",
        "summary": "Whether the database and the queues answer (no credential needed)",
        "security": [],
        "responses": {
            "200": {"description": "healthy", "content": content},
            "503": {"description": "a dependency does not answer", "content": content},
        },
    }


def _openapi_op() -> Json:
    return {
        "operationId": "openapi",
        "summary": "This document (no credential needed)",
        "security": [],
        "responses": {
            "200": {
                "description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
