"""The janitor and the operator's actions: no task lost, no job hung (DESIGN invariant 8)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from controllers.engine import Engine
from controllers.stages import task_messages
from controllers.worker import backoff
from repositories.poison import PoisonRepository
from repositories.queues import PEEK_MAX, QueueRepository
from repositories.recovery import RecoveryRepository, Unsent
from schemas.exceptions import Conflict, JobTypeError
from schemas.ids import JobId
from schemas.messages import JobQueueMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """How long the janitor waits before it calls something lost."""

    lease: timedelta = timedelta(seconds=60)
    sweep_grace: timedelta = timedelta(seconds=15)
    stall: timedelta = timedelta(minutes=10)


@dataclass
class JanitorReport:
    reaped_retried: int = 0
    reaped_failed: int = 0
    stalled_stages: int = 0
    unknown_type_jobs: int = 0
    reopened: int = 0
    resent_jobs: int = 0
    resent_tasks: int = 0
    undecodable: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def any(self) -> bool:
        return any(v for k, v in vars(self).items() if k != "counts")


@dataclass
class Recovery:
    engine: Engine
    repo: RecoveryRepository
    queues: QueueRepository
    poison: PoisonRepository
    timings: Timings = field(default_factory=Timings)

    def run_janitor(self) -> JanitorReport:
        """Repair what a crash or a lost message left behind; each repair is guarded."""
        report = JanitorReport()
        self._reap(report)
        for job_id, stage in self.engine.repair_stalled_stages(self.timings.sweep_grace):
            reason = "all tasks had ended but the stage never advanced"
            self.repo.record_repair(job_id, stage, reason)
            report.stalled_stages += 1
        self._fail_unknown_types(report)
        self._reopen_idle(report)
        self._sweep(report)
        self._record_undecodable(report)
        return report

    def _reap(self, report: JanitorReport) -> None:
        for task_id, job_id, stage in self.repo.expired_tasks(self.timings.lease):
            try:
                policy = self.engine.controller_of(job_id).retry
            except JobTypeError:
                continue  # _fail_unknown_types ends the job
            reaped = self.repo.reap(task_id, job_id, stage, self.timings.lease, backoff(policy, 1))
            if reaped.action == "retried":
                report.reaped_retried += 1
            elif reaped.action == "failed":
                report.reaped_failed += 1
                if reaped.is_last_task:
                    self.engine.driver.finish_stage(job_id, stage, actor="janitor")

    def _fail_unknown_types(self, report: JanitorReport) -> None:
        known = [c.job_type for c in self.engine.registry]
        for job_id in self.repo.unknown_type_jobs(known):
            job_type = self.engine.jobs.get(job_id).job_type
            reason = f"job type {job_type!r} is not registered in this deployment"
            if self.engine.jobs.fail(job_id, {"message": reason}, "janitor", reason):
                report.unknown_type_jobs += 1

    def _reopen_idle(self, report: JanitorReport) -> None:
        # An empty queue with work marked as sent means the messages were lost: reopen
        # soon. Otherwise the work may just be waiting its turn: only after `stall`.
        counts = self.queues.approximate_counts()
        report.counts = counts
        empty = (
            counts.get(self.queues.tasks_queue, 1) == 0
            and counts.get(self.queues.jobs_queue, 1) == 0
        )
        idle = self.timings.lease if empty else self.timings.stall
        tasks, jobs = self.repo.reopen_idle(idle)
        report.reopened = tasks + jobs

    def _sweep(self, report: JanitorReport) -> None:
        # The claims have marked these as sent already: send them, nothing more.
        for job_id, stage in self.repo.claim_unsent_jobs(self.timings.sweep_grace):
            self.queues.send_job(JobQueueMessage(job_id=job_id, stage=stage))
            report.resent_jobs += 1
        groups: dict[tuple[JobId, int, timedelta], list[Unsent]] = defaultdict(list)
        for unsent in self.repo.claim_unsent_tasks(self.timings.sweep_grace):
            groups[(unsent.job_id, unsent.stage, unsent.delay)].append(unsent)
        for (job_id, stage, delay), items in groups.items():
            ids = [u.task_id for u in items]
            msgs = task_messages(job_id, stage, ids, self._per_message(job_id, stage))
            self.queues.send_tasks(msgs, delay if delay > timedelta(0) else None)
            report.resent_tasks += len(ids)

    def _record_undecodable(self, report: JanitorReport, batches: int = 10) -> None:
        # The Functions host moves a message that is not in host.json's messageEncoding to
        # the poison queue unread, and from the poison queue to `<poison>-poison`, where no
        # trigger ever sees it: record it from there, so no message goes unrecorded.
        for queue in (self.queues.jobs_poison_queue, self.queues.tasks_poison_queue):
            for _ in range(batches):
                received = self.queues.receive_raw(f"{queue}-poison")
                for raw in received:
                    reason = f"not {self.queues.encoding} as host.json messageEncoding says"
                    self.poison.record(queue, raw.message_id, raw.text, raw.dequeue_count, reason)
                    self.queues.delete_raw(f"{queue}-poison", raw)
                    report.undecodable += 1
                if len(received) < PEEK_MAX:
                    break

    def _per_message(self, job_id: JobId, stage: int) -> int:
        try:
            return self.engine.controller_of(job_id).stage(stage).tasks_per_message
        except JobTypeError:
            return 1

    def retry_job(self, job_id: JobId, actor: str) -> tuple[int, int]:
        """Re-run the failed tasks of a failed job's failed stage; return (stage, tasks)."""
        controller = self.engine.controller_of(job_id)
        job = self.engine.jobs.get(job_id)
        attempts = controller.max_attempts(job.stage)
        retried, stage, count = self.repo.retry_job(job_id, attempts, actor)
        if not retried:
            raise Conflict(
                f"job is {job.status.value}: only a failed job whose stage failed can be retried",
                job_id=job_id,
            )
        self.engine.driver.dispatch(job_id, stage, controller.stage(stage).tasks_per_message)
        return stage, count

    def replay_poison(self, poison_id: int) -> str:
        """Send a poison message's raw body again to the queue it first came from."""
        record = self.poison.get(poison_id)
        queue = record.queue_name.removesuffix("-poison")
        if queue not in (self.queues.jobs_queue, self.queues.tasks_queue):
            raise Conflict("poison message came from an unknown queue", queue=record.queue_name)
        self.queues.send_raw(queue, record.body)
        self.poison.mark_replayed(poison_id)
        return queue
