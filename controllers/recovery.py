"""The janitor and the operator's actions: no task lost, no job hung (DESIGN invariant 8)."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controllers.engine import Engine
from controllers.ports import JanitorQueues, PoisonReplays, RecoveryStore
from controllers.stages import send_and_mark, task_messages
from controllers.transitions import enter_stage
from controllers.worker import backoff
from schemas.exceptions import Conflict, DatabaseError, JobTypeError, QueueError
from schemas.ids import JobId
from schemas.messages import JobQueueMessage
from schemas.records import UnsentTask
from schemas.settings import MAX_TASK_QUEUE_SHARDS, task_shard_queues

log = logging.getLogger(__name__)
PEEK_MAX = 32


@dataclass(frozen=True)
class Timings:
    """How long the janitor waits before it calls something lost."""

    lease: timedelta = timedelta(seconds=60)
    sweep_grace: timedelta = timedelta(seconds=15)
    stall: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class Bounds:
    """How much one janitor run reopens: a draining backlog must not be re-sent whole."""

    reopen_per_run: int = 1000
    reopen_per_stage: int = 100


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
    repo: RecoveryStore
    queues: JanitorQueues
    poison: PoisonReplays
    timings: Timings = field(default_factory=Timings)
    bounds: Bounds = field(default_factory=Bounds)

    @property
    def holder(self) -> str:
        """The name the sweeper holds dispatch leases under."""
        return f"janitor@{self.engine.worker}"

    def run_janitor(self) -> JanitorReport:
        """Repair what a crash or a lost message left behind; each repair is guarded."""
        report = JanitorReport()
        self._reap(report)
        for job_id, stage in self.engine.repair_stalled_stages(self.timings.sweep_grace):
            reason = "all tasks had ended but the stage never advanced"
            self.repo.record_repair(job_id, stage, reason)
            report.stalled_stages += 1
        self._fail_unknown_types(report)
        self._reopen_lost(report)
        self._sweep(report)
        self._record_undecodable(report)
        return report

    def _reap(self, report: JanitorReport) -> None:
        for task in self.repo.expired_tasks(self.timings.lease):
            try:
                policy = self.engine.controller_of(task.job_id).retry
            except JobTypeError:
                continue  # _fail_unknown_types ends the job
            # The attempt the worker was lost in sets the backoff, as a retry it made would.
            delay = backoff(policy, task.attempt)
            reaped = self.repo.reap(task.task_id, self.timings.lease, delay)
            if reaped.action == "retried":
                report.reaped_retried += 1
            elif reaped.action == "failed":
                report.reaped_failed += 1
                if reaped.is_last_task:
                    self.engine.driver.leave_stage(task.job_id, task.stage, actor="janitor")

    def _fail_unknown_types(self, report: JanitorReport) -> None:
        known = [c.job_type for c in self.engine.registry]
        for ref in self.repo.unknown_type_jobs(known):
            job_type = self.engine.jobs.get(ref.job_id).job_type
            reason = f"job type {job_type!r} is not registered in this deployment"
            if self.engine.jobs.fail(ref.job_id, {"message": reason}, "janitor", reason):
                report.unknown_type_jobs += 1

    def _reopen_lost(self, report: JanitorReport) -> None:
        # An empty queue with work marked as sent means the messages were lost: reopen
        # soon. Otherwise the work may just be waiting its turn: only after `stall`.
        counts = self.queues.approximate_counts()
        report.counts = counts
        task_queues, jobs_queue = self.queues.task_queues, self.queues.jobs_queue
        empty = all(counts.get(queue, 1) == 0 for queue in (jobs_queue, *task_queues))
        idle = self.timings.lease if empty else self.timings.stall
        # A task's message went to one shard, not recorded which: the earliest time holds.
        tasks_sent_before = min(self._sent_before(queue, counts) for queue in task_queues)
        reopened = self.repo.reopen_lost(
            idle,
            tasks_sent_before,
            self._sent_before(jobs_queue, counts),
            self.bounds.reopen_per_run,
            self.bounds.reopen_per_stage,
        )
        report.reopened = reopened.tasks + reopened.jobs

    def _sent_before(self, queue: str, counts: dict[str, int]) -> datetime:
        """Return a time before which every message sent, and visible since, left `queue`.

        The queue hands out its visible messages about oldest first, so one sent before
        the oldest still visible is no longer waiting there. With nothing visible (an
        empty queue, or only messages in receivers' hands) nothing waits: a message held
        by a live receiver has its tasks claimed within seconds, so one whose tasks are
        still unclaimed after the idle time is held by a receiver that died, and comes
        back only when its lease ends (up to 10 minutes in the Functions host).
        """
        if counts.get(queue, 1) == 0:
            return datetime.now(UTC)
        return self.queues.oldest_visible(queue) or datetime.now(UTC)

    def _sweep(self, report: JanitorReport) -> None:
        # Sent first, marked after: a failed send leaves the work unmarked for the next run.
        for ref in self.repo.sweep_unsent_jobs(self.timings.sweep_grace):
            self.queues.send_job(JobQueueMessage(job_id=ref.job_id, stage=ref.stage))
            self.engine.jobs.mark_dispatched(ref.job_id, ref.stage)
            report.resent_jobs += 1
        unsent = self.repo.sweep_unsent_tasks(
            self.timings.sweep_grace, self.holder, self.timings.lease
        )
        groups: dict[tuple[JobId, int], list[UnsentTask]] = defaultdict(list)
        for task in unsent:
            groups[(task.job_id, task.stage)].append(task)
        for (job_id, stage), tasks in groups.items():
            try:
                report.resent_tasks += self._send_unsent(job_id, stage, tasks)
            finally:
                with contextlib.suppress(DatabaseError):
                    self.engine.jobs.release_dispatch_lease(job_id, stage, self.holder)

    def _send_unsent(self, job_id: JobId, stage: int, tasks: list[UnsentTask]) -> int:
        per_message = self._per_message(job_id, stage)
        by_delay: dict[float, list[UnsentTask]] = defaultdict(list)
        for task in tasks:
            by_delay[task.delay_s].append(task)
        sent = 0
        for delay_s, group in by_delay.items():
            msgs = task_messages(job_id, stage, [t.task_id for t in group], per_message)
            delay = timedelta(seconds=delay_s) if delay_s > 0 else None
            sent += len(send_and_mark(self.queues, self.engine.tasks, msgs, delay))
        return sent

    def _record_undecodable(self, report: JanitorReport, batches: int = 10) -> None:
        # The Functions host moves a message that is not in host.json's messageEncoding to
        # the poison queue unread, and from the poison queue to `<poison>-poison`, where no
        # trigger ever sees it: record it from there, so no message goes unrecorded.
        for queue in (self.queues.jobs_poison_queue, *self.queues.task_poison_queues):
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
        retried = self.repo.retry_job(job_id, attempts, actor)
        if not retried.retried:
            raise Conflict(
                f"job is {job.status.value}: only a failed job whose stage failed can be retried",
                job_id=job_id,
            )
        # Entered as the next stage is: its tasks sent, and any the stop found uncreated
        # created first (sql/0011); should that fail, the stage message covers it.
        enter_stage(self.engine.driver, job_id, retried.stage)
        return retried.stage, retried.task_count

    def replay_poison(self, poison_id: int, force: bool = False) -> str:
        """Send a poison message's raw body again to the queue it first came from.

        Once: a second replay raises Conflict naming when the first was, unless `force`.
        """
        record = self.poison.get(poison_id)
        queue = self._replay_queue(record.queue_name.removesuffix("-poison"))
        if queue is None:
            raise Conflict("poison message came from an unknown queue", queue=record.queue_name)
        replay = self.poison.claim_replay(poison_id, force)
        if not replay.replayed:
            raise Conflict(
                f"poison message was replayed already at {replay.replayed_at.isoformat()};"
                " replay it again with ?force=true",
                poison_id=poison_id,
                replayed_at=replay.replayed_at.isoformat(),
            )
        try:
            self.queues.send_raw(queue, record.body)
        except QueueError:
            self.poison.release_replay(poison_id, replay.previous_at)
            raise
        return queue

    def _replay_queue(self, origin: str) -> str | None:
        """Return where a message from `origin` is replayed to; None for an unknown queue.

        A task message goes back to its shard, or to shard 0 if its shard is past the
        configured count now (that shard may have no host reading it).
        """
        if origin == self.queues.jobs_queue or origin in self.queues.task_queues:
            return origin
        if origin in task_shard_queues(self.queues.tasks_queue, MAX_TASK_QUEUE_SHARDS):
            return self.queues.tasks_queue
        return None
