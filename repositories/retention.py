"""Purging finished jobs (with their stages, tasks and events) past their retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from repositories.db import SchemaPool
from repositories.errors import parse_row, translated
from schemas.records import Purged
from schemas.status import JobStatus


class RetentionRepository:
    def __init__(self, pool: SchemaPool) -> None:
        self._pool = pool

    def purge(
        self,
        older_than: datetime,
        statuses: Sequence[JobStatus] | None,
        max_jobs: int,
        max_tasks: int,
    ) -> Purged:
        """Delete one bounded batch of finished jobs that finished before `older_than`."""
        names = [s.value for s in statuses] if statuses else None
        with translated("purge jobs"):
            rows = self._pool.one_trip(
                "SELECT * FROM purge_jobs(%s, %s, %s, %s)", (older_than, names, max_jobs, max_tasks)
            )
        return parse_row(Purged, rows[0] if rows else None)
