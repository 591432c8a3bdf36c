"""Route and query parameters of the API, parsed or refused with a 400 naming the problem."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

import azure.functions as func

from schemas.ids import JobId, parse_job_id
from triggers.responses import BadRequest

E = TypeVar("E", bound=StrEnum)


def job_id_param(req: func.HttpRequest) -> JobId:
    """Return the `job_id` route parameter, or raise BadRequest."""
    raw = req.route_params.get("job_id", "")
    try:
        return parse_job_id(raw)
    except ValueError as exc:
        raise BadRequest(f"malformed job id {raw!r}: {exc}") from exc


def enum_param(req: func.HttpRequest, name: str, kind: type[E]) -> E | None:
    """Return a query parameter as one of `kind`'s values (None when absent)."""
    raw = req.params.get(name)
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise BadRequest(f"query parameter {name!r} must be one of {allowed}") from None
