"""Canonical job ids (DESIGN invariant 2)."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from schemas.ids import JobId


def canonical_json(parameters: BaseModel) -> str:
    """Return the validated parameters as JSON: defaults applied, keys sorted, no whitespace."""
    data = parameters.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_id_for(job_type: str, parameters: BaseModel, salt: str = "") -> JobId:
    """Return sha256 hex of the job type and the canonical parameters (plus a re-run salt)."""
    payload = "\n".join(filter(None, (job_type, canonical_json(parameters), salt)))
    return JobId(hashlib.sha256(payload.encode("utf-8")).hexdigest())
