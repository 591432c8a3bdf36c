"""Purging finished jobs (with their stages, tasks and events) past their retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg_pool import ConnectionPool
from pydantic import BaseModel

from repositories.db import Connection, autocommit
from repositories.errors import parse_row, translated
from schemas.status import JobStatus


class Purged(BaseModel):
    """What one purge_jobs call deleted."""

    jobs: int
    tasks: int


class RetentionRepository:
    def __init__(self, pool: ConnectionPool[Connection]) -> None:
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
        with translated("purge jobs"), autocommit(self._pool) as conn:
            row = conn.execute(
                "SELECT * FROM purge_jobs(%s, %s, %s, %s)", (older_than, names, max_jobs, max_tasks)
            ).fetchone()
        return parse_row(Purged, row)
