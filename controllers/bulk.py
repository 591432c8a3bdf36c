"""Bulk actions: cancel or retry every job matching a job type and a status."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from controllers.ports import OperatorStore
from controllers.recovery import Recovery
from schemas.exceptions import Conflict, JobTypeError, NotFound
from schemas.operator import JobState
from schemas.status import JobStatus

PAGE = 500
UNFINISHED = (JobStatus.QUEUED, JobStatus.PROCESSING)


@dataclass
class BulkActions:
    recovery: Recovery
    repo: OperatorStore

    def cancel(self, job_type: str | None, status: JobStatus | None, actor: str) -> tuple[int, int]:
        """Cancel the unfinished jobs that match; return (matched, cancelled)."""
        matched = cancelled = 0
        reason = f"bulk cancel: {_filters(job_type, status)}"
        for job in self._matching(job_type, status):
            matched += 1
            if job.status in UNFINISHED:
                done, _ = self.recovery.engine.cancel(job.job_id, actor, reason)
                cancelled += done
        return matched, cancelled

    def retry(self, job_type: str | None, status: JobStatus | None, actor: str) -> tuple[int, int]:
        """Retry the matching failed jobs whose stage failed; return (matched, retried)."""
        matched = retried = 0
        for job in self._matching(job_type, status):
            matched += 1
            if job.status is not JobStatus.FAILED:
                continue
            try:
                self.recovery.retry_job(job.job_id, actor)
            except (Conflict, JobTypeError, NotFound):
                continue  # failed by poison or the janitor, not by its tasks: not retryable
            retried += 1
        return matched, retried

    def _matching(self, job_type: str | None, status: JobStatus | None) -> Iterator[JobState]:
        after = ""
        while True:
            page = self.repo.matching_jobs(job_type, status, after, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].job_id


def _filters(job_type: str | None, status: JobStatus | None) -> str:
    return " ".join(
        f"{name}={value}" for name, value in (("job_type", job_type), ("status", status)) if value
    )
