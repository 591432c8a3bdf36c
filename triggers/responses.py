"""JSON answers, and the one place where exceptions become HTTP status codes."""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import azure.functions as func
from pydantic import BaseModel

from schemas.exceptions import (
    Conflict,
    ContractViolation,
    DatabaseUnavailable,
    InvalidParameters,
    JobTypeError,
    LightsoutError,
    NotFound,
    QueueUnavailable,
)
from schemas.http import ErrorBody, FieldError

log = logging.getLogger(__name__)

Handler = Callable[[func.HttpRequest], func.HttpResponse]


class BadRequest(LightsoutError):
    """The request is malformed."""


class Forbidden(LightsoutError):
    """The credential is valid but lacks the scope the request needs."""


class PayloadTooLarge(LightsoutError):
    """The request body is larger than the API accepts."""


def json_response(body: BaseModel | dict[str, Any], status: int = 200) -> func.HttpResponse:
    """Return `body` as a JSON answer."""
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return func.HttpResponse(text, status_code=status, mimetype="application/json")


def error_response(
    status: int,
    error: str,
    message: str,
    fields: list[FieldError] | None = None,
    error_id: str | None = None,
) -> func.HttpResponse:
    """Return an ErrorBody answer (`error_id` only on 500s)."""
    body = ErrorBody(error=error, message=message, fields=fields or [], error_id=error_id)
    text = body.model_dump_json(exclude_none=True)
    return func.HttpResponse(text, status_code=status, mimetype="application/json")


def _field_errors(exc: InvalidParameters) -> list[FieldError]:
    return [FieldError.model_validate(error, strict=False) for error in exc.errors]


STATUS_OF: list[tuple[type[Exception], int, str]] = [
    (PayloadTooLarge, 413, "payload_too_large"),
    (BadRequest, 400, "bad_request"),
    (Forbidden, 403, "forbidden"),
    (ContractViolation, 400, "bad_request"),
    (JobTypeError, 400, "unknown_job_type"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (DatabaseUnavailable, 503, "database_unavailable"),
    (QueueUnavailable, 503, "queue_unavailable"),
]


def answer_errors(handler: Handler) -> Handler:
    """Turn the exceptions of an HTTP handler into JSON error answers; never a bare 500."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except InvalidParameters as exc:
            return error_response(422, "invalid_parameters", str(exc), _field_errors(exc))
        except Exception as exc:
            for kind, status, error in STATUS_OF:
                if isinstance(exc, kind):
                    return error_response(status, error, str(exc))
            # The exception text may hold SQL, paths or data: it goes to the log only.
            error_id = secrets.token_hex(8)
            log.exception("unhandled error %s in %s", error_id, handler.__name__)
            message = f"internal error; the log has it under error id {error_id}"
            return error_response(500, "internal_error", message, error_id=error_id)

    return wrapper


def int_param(
    req: func.HttpRequest, name: str, default: int | None, low: int, high: int
) -> int | None:
    """Return a query parameter as an int within [low, high], or raise BadRequest."""
    raw = req.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be within {low}..{high}")
    return value
