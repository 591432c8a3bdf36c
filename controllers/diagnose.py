"""Why a job is where it is: the evidence, and the verdict of the first rule that fits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controllers.ports import JobStore, OperatorStore
from controllers.recovery import Timings
from controllers.registry import Registry
from schemas.ids import JobId
from schemas.operator import DiagnoseState, Diagnosis, Evidence, StageCounters
from schemas.records import JobRecord
from schemas.status import JobStatus, StageStatus, TaskStatus

Verdict = tuple[DiagnoseState, str]
# A worker that missed this many heartbeats is probably gone (its lease may still run).
SILENT_BEATS = 3


@dataclass(frozen=True)
class Case:
    """What the rules read: the job, its evidence, and the clock and timings they judge by."""

    job: JobRecord
    evidence: Evidence
    known_type: bool
    now: datetime
    timings: Timings

    @property
    def stage(self) -> StageCounters:
        return self.evidence.stages[self.job.stage - 1]

    def count(self, status: TaskStatus) -> int:
        return self.evidence.tasks_by_status.get(status, 0)

    @property
    def where(self) -> str:
        return f"stage {self.stage.stage} ({self.stage.name})"


@dataclass
class Diagnoser:
    jobs: JobStore
    repo: OperatorStore
    registry: Registry
    timings: Timings
    heartbeat: timedelta = timedelta(seconds=10)

    def diagnose(self, job_id: JobId) -> Diagnosis:
        """Return the job's state, a one-sentence verdict and the evidence behind it."""
        job = self.jobs.get(job_id)
        case = Case(job, self.evidence(job), job.job_type in self.registry, _now(), self.timings)
        state, verdict = judge(case)
        return Diagnosis(
            job_id=job.job_id,
            status=job.status,
            stage=job.stage,
            state=state,
            verdict=verdict,
            evidence=case.evidence,
        )

    def evidence(self, job: JobRecord) -> Evidence:
        """Read everything a verdict may rest on (a handful of indexed reads)."""
        r, job_id = self.repo, job.job_id
        silent = SILENT_BEATS * self.heartbeat
        unsent, held = r.outbox(job_id)
        pause = r.pauses().get(job.job_type)
        finished = job.status not in (JobStatus.QUEUED, JobStatus.PROCESSING)
        return Evidence(
            stages=r.stage_counters(job_id),
            tasks_by_status=r.tasks_by_status(job_id),
            unsent_messages=unsent,
            held_messages=held,
            waiting_since=r.waiting_since(job_id),
            expired_claims=r.silent_claims(job_id, self.timings.lease),
            silent_claims=r.silent_claims(job_id, silent, self.timings.lease),
            scheduled_retries=r.scheduled_retries(job_id),
            poison=r.poison_of(job_id),
            last_janitor_action=r.last_janitor_action(job_id),
            paused=pause is not None,
            pause=pause,
            ended_by=r.ended_by(job_id, job.status) if finished else None,
        )


def judge(case: Case) -> Verdict:
    """Return the state and verdict of the first rule that fits the case."""
    for rule in RULES:
        verdict = rule(case)
        if verdict is not None:
            return verdict
    return running(case)


def finished(case: Case) -> Verdict | None:
    job, ended = case.job, case.evidence.ended_by
    at = _clock(job.finished_at)
    if job.status is JobStatus.COMPLETED:
        return DiagnoseState.COMPLETED, f"finished: completed at {at}"
    if job.status is JobStatus.COMPLETED_WITH_ERRORS:
        failed = sum(s.failed_count for s in case.evidence.stages)
        return (
            DiagnoseState.COMPLETED_WITH_ERRORS,
            f"finished: completed with errors at {at}; {failed} tasks failed within the"
            " job type's failure policy",
        )
    if job.status is JobStatus.FAILED:
        why = (job.error or {}).get("message") or (ended.reason if ended else None) or "unknown"
        return DiagnoseState.FAILED, f"finished: failed at {at} because {why}"
    if job.status is JobStatus.CANCELLED:
        by = ended.actor if ended else "unknown"
        reason = f" ({ended.reason})" if ended and ended.reason else ""
        return DiagnoseState.CANCELLED, f"finished: cancelled by {by} at {at}{reason}"
    return None


def unknown_type(case: Case) -> Verdict | None:
    if case.known_type:
        return None
    return (
        DiagnoseState.UNKNOWN_JOB_TYPE,
        f"job type {case.job.job_type!r} is not registered in this deployment, so no host can"
        " run it; the janitor fails the job at its next run",
    )


def paused(case: Case) -> Verdict | None:
    pause = case.evidence.pause
    if pause is None:
        return None
    held = case.evidence.held_messages
    return (
        DiagnoseState.PAUSED,
        f"paused by {pause.paused_by} at {_clock(pause.paused_at)}: job type"
        f" {pause.job_type} is paused, {held} of this job's messages are held and"
        f" {case.where} goes on when it is resumed (POST /api/job-types/{pause.job_type}/resume)",
    )


def poison(case: Case) -> Verdict | None:
    notes = [p for p in case.evidence.poison if p.open_tasks and p.replayed_at is None]
    if not notes:
        return None
    note = notes[0]
    return (
        DiagnoseState.POISON,
        f"{case.where} is waiting on {note.open_tasks} tasks named by poison message"
        f" {note.poison_id} on {note.queue_name} ({note.reason}); replay it with"
        f" POST /api/poison/{note.poison_id}/replay or cancel the job",
    )


def dead_worker(case: Case) -> Verdict | None:
    expired = case.evidence.expired_claims
    claims = expired or case.evidence.silent_claims
    if not claims:
        return None
    workers = sorted({c.worker for c in claims})
    silent = max(c.silent_s for c in claims)
    last = all(c.attempt >= c.max_attempts for c in claims)
    action = "fail them (their last attempt)" if last else "retry them"
    lease_end = max(c.heartbeat_at for c in claims) + case.timings.lease
    when = (
        f"their lease ended at {_clock(lease_end)} and the janitor will {action} at its next run"
        if expired
        else f"unless it comes back, the janitor will {action} at {_clock(lease_end)}"
        " when their lease ends"
    )
    return (
        DiagnoseState.DEAD_WORKER,
        f"{case.where} is waiting on {len(claims)} tasks whose worker"
        f"{'s' if len(workers) > 1 else ''} {', '.join(workers)} stopped heartbeating"
        f" {silent:.0f} s ago; {when}",
    )


def stalled(case: Case) -> Verdict | None:
    stage = case.stage
    if case.job.status is not JobStatus.PROCESSING or stage.status is not StageStatus.PROCESSING:
        return None
    if stage.remaining:
        return None
    return (
        DiagnoseState.STALLED_STAGE,
        f"{case.where}: all {stage.task_count} tasks have ended but the stage never advanced"
        f" (job unchanged since {_clock(case.job.updated_at)}); the janitor advances it at"
        " its next run",
    )


def unsent(case: Case) -> Verdict | None:
    n, stage = case.evidence.unsent_messages, case.stage
    grace = case.timings.sweep_grace.total_seconds()
    if stage.uncreated and stage.status is StageStatus.PROCESSING:
        return (
            DiagnoseState.DISPATCH_PENDING,
            f"{case.where}: {stage.uncreated} of its {stage.task_count} tasks are not created"
            " yet; if the process creating them stopped, the sweeper sends the stage message"
            f" {grace:.0f} s after the stage started, and its handler creates them",
        )
    if not n:
        return None
    return (
        DiagnoseState.DISPATCH_PENDING,
        f"{case.where}: {n} messages are recorded but not sent yet; if their sender stopped,"
        f" the sweeper sends them {grace:.0f} s after they were recorded",
    )


def lost(case: Case) -> Verdict | None:
    waiting = case.evidence.waiting_since
    if waiting is None or case.count(TaskStatus.PROCESSING):
        return None
    age = case.now - waiting.sent_at
    if age < case.timings.lease:
        return None
    what = (
        f"the message for {case.where} was sent {age.total_seconds():.0f} s ago and the stage"
        " never started"
        if waiting.kind == "job"
        else f"{waiting.count} task messages of {case.where} were sent"
        f" {age.total_seconds():.0f} s ago and none was claimed"
    )
    return (
        DiagnoseState.LOST_MESSAGE,
        f"{what}: lost, or no host reads the queue (see GET /api/workers); the janitor sends"
        f" them again once idle for {_secs(case.timings.lease)} (queues empty) or"
        f" {_secs(case.timings.stall)}",
    )


def retries(case: Case) -> Verdict | None:
    due = [r.next_attempt_at for r in case.evidence.scheduled_retries if r.next_attempt_at]
    if not due or case.count(TaskStatus.PROCESSING) or case.count(TaskStatus.QUEUED):
        return None
    first = min(due)
    wait = (first - case.now).total_seconds()
    when = f"in {wait:.0f} s" if wait >= 0 else f"{-wait:.0f} s ago"
    return (
        DiagnoseState.WAITING_ON_RETRIES,
        f"{case.where} is waiting on {case.count(TaskStatus.RETRYING)} retries; the next is"
        f" due at {_clock(first)} ({when})",
    )


def running(case: Case) -> Verdict:
    stage = case.stage
    if stage.status is StageStatus.PENDING:
        return (
            DiagnoseState.RUNNING,
            f"waiting for a host to start {case.where} of {case.job.total_stages}",
        )
    ended = stage.task_count - stage.remaining
    return (
        DiagnoseState.RUNNING,
        f"{case.where} of {case.job.total_stages} is running: {ended} of {stage.task_count}"
        f" tasks ended, {case.count(TaskStatus.PROCESSING)} running,"
        f" {case.count(TaskStatus.QUEUED)} queued, {case.count(TaskStatus.RETRYING)} retrying",
    )


RULES: list[Callable[[Case], Verdict | None]] = [
    finished,
    unknown_type,
    paused,
    poison,
    dead_worker,
    stalled,
    unsent,
    lost,
    retries,
]


def _now() -> datetime:
    return datetime.now(UTC)


def _clock(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S UTC") if at else "an unknown time"


def _secs(span: timedelta) -> str:
    return f"{span.total_seconds():.0f} s"
