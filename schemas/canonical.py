"""Canonical job ids (DESIGN invariant 2)."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from schemas.ids import JobId
from schemas.records import Json


def canonical_json(parameters: BaseModel | Json) -> str:
    """Return the validated parameters (or their JSON dump) as JSON: keys sorted, no whitespace."""
    data = parameters.model_dump(mode="json") if isinstance(parameters, BaseModel) else parameters
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_id_for(job_type: str, parameters: BaseModel | Json, salt: str = "") -> JobId:
    """Return sha256 hex of the job type and the canonical parameters (plus a re-run salt)."""
    payload = "\n".join(filter(None, (job_type, canonical_json(parameters), salt)))
    return JobId(hashlib.sha256(payload.encode("utf-8")).hexdigest())
