"""Pause and resume a job type: its messages are held in the database, then sent again."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from controllers.engine import Engine
from controllers.ports import OperatorStore
from schemas.exceptions import QueueError
from schemas.operator import JobTypePause, Resumed

log = logging.getLogger(__name__)


@dataclass
class Pauses:
    engine: Engine
    repo: OperatorStore

    def pause(self, job_type: str, actor: str, reason: str | None = None) -> JobTypePause:
        """Pause a job type (again: a no-op); return the pause in force."""
        self.engine.registry.get(job_type)  # JobTypeError names the known ones
        created, pause = self.repo.pause(job_type, actor, reason)
        if created:
            log.warning("job type %s paused by %s", job_type, actor)
        return pause

    def resume(self, job_type: str, actor: str) -> Resumed:
        """Lift the pause and send what it held, where the type's jobs stopped."""
        self.engine.registry.get(job_type)
        resumed = self.repo.resume(job_type, actor)
        try:
            self.send_unsent(job_type)
        except QueueError as exc:
            # The rows stay unsent, so the sweeper sends them once the queue answers.
            log.warning("resume of %s: sending held messages failed: %s", job_type, exc)
        return resumed

    def send_unsent(self, job_type: str) -> None:
        """Send the type's stage and task messages that are recorded but not sent."""
        controller, driver = self.engine.registry.get(job_type), self.engine.driver
        jobs, task_stages = self.repo.unsent_of_type(job_type)
        for job in jobs:
            driver.send_stage(job.job_id, job.stage)
        for at in task_stages:
            driver.dispatch(at.job_id, at.stage, controller.stage(at.stage).tasks_per_message)
