"""POST /api/jobs/purge: delete finished jobs (stages, tasks, events) older than a cut-off.

It needs the `jobs:admin` scope; the purge is logged with the caller as its actor.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import azure.functions as func

from schemas.auth import Identity, Scope
from schemas.http import PURGE_AGE, PURGE_STATUSES, PurgeResponse
from schemas.status import JobStatus
from triggers.auth import protected
from triggers.responses import BadRequest, json_response
from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
FINISHED = PURGE_STATUSES
AGE = re.compile(PURGE_AGE)
UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
# One request purges batch after batch for at most this long; `more` says if jobs are left.
BUDGET_S = 10.0


@bp.route(route="jobs/purge", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@protected(Scope.ADMIN)
def purge_jobs(req: func.HttpRequest, who: Identity) -> func.HttpResponse:
    """Purge finished jobs older than `older_than` (ISO time or an age: 30d, 12h, 15m, 90s)."""
    older_than = _cutoff(req.params.get("older_than"))
    statuses = _statuses(req.params.get("status"))
    retention = runtime().retention
    jobs = tasks = 0
    deadline = time.monotonic() + BUDGET_S
    while True:
        purged = retention.purge(older_than, statuses, who.actor)
        jobs, tasks = jobs + purged.jobs, tasks + purged.tasks
        if purged.jobs == 0 or time.monotonic() > deadline:
            break
    body = PurgeResponse(
        older_than=older_than,
        statuses=[s.value for s in statuses],
        jobs=jobs,
        tasks=tasks,
        more=purged.jobs > 0,
    )
    return json_response(body)


def _cutoff(raw: str | None) -> datetime:
    if not raw:
        raise BadRequest("query parameter 'older_than' is required: an ISO time or an age (30d)")
    age = AGE.match(raw)
    if age:
        try:
            return datetime.now(UTC) - timedelta(**{UNITS[age[2]]: float(age[1])})
        except OverflowError:  # an age past datetime's range (year 1): nothing is that old
            raise BadRequest(
                f"query parameter 'older_than' is an age past any date: {raw!r}"
            ) from None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"query parameter 'older_than' must be an ISO time or an age like 30d, got {raw!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _statuses(raw: str | None) -> list[JobStatus]:
    if not raw:
        return list(FINISHED)
    names = [part.strip() for part in raw.split(",") if part.strip()]
    allowed = {s.value: s for s in FINISHED}
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise BadRequest(
            f"query parameter 'status' takes finished statuses ({', '.join(allowed)}), got {raw!r}"
        )
    return [allowed[n] for n in dict.fromkeys(names)]
