"""Retention: finished jobs older than LIGHTSOUT_RETENTION_DAYS are purged, a batch at a time.

The janitor purges one bounded batch per run, so a large backlog drains over several
runs without a long transaction; operators purge on demand with
`POST /api/jobs/purge`. Each purge is logged with what it deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controllers.ports import RetentionStore
from schemas.records import Purged
from schemas.status import JobStatus

log = logging.getLogger(__name__)
BATCH_JOBS = 200
BATCH_TASKS = 50_000


@dataclass
class Retention:
    repo: RetentionStore
    days: float

    def run_janitor(self) -> Purged:
        """Purge one batch of jobs past retention; nothing when retention is 0 (keep all)."""
        if self.days == 0:
            return Purged(jobs=0, tasks=0)
        cutoff = datetime.now(UTC) - timedelta(days=self.days)
        return self.purge(cutoff, None, "janitor")

    def purge(
        self,
        older_than: datetime,
        statuses: Sequence[JobStatus] | None,
        actor: str,
        max_jobs: int = BATCH_JOBS,
        max_tasks: int = BATCH_TASKS,
    ) -> Purged:
        """Purge one batch of finished jobs that finished before `older_than`."""
        purged = self.repo.purge(older_than, statuses, max_jobs, max_tasks)
        if purged.jobs:
            which = ",".join(s.value for s in statuses) if statuses else "finished"
            log.warning(
                "purge by %s: %d %s jobs finished before %s, with %d tasks",
                actor,
                purged.jobs,
                which,
                older_than.isoformat(),
                purged.tasks,
            )
        return purged
