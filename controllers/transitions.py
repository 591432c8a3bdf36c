"""The process that sees a stage's last task starts the next stage itself.

Sending the next stage's job message and waiting for a host to poll it costs up to
`maxPollingInterval` per stage. Instead, right after the advance commits, the same
process builds and dispatches the next stage, then sets the job's outbox marker. The
job message stays the fallback: until the marker is set, the sweeper sees the stage
as unsent and sends its job message, so a process that dies while building the stage
(crash point `while_entering_stage`) leaves nothing hanging; building twice is
harmless, as `start_stage` creates a stage's tasks once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controllers.faults import crash_point
from schemas.ids import JobId
from schemas.messages import JobQueueMessage

if TYPE_CHECKING:
    from controllers.stages import StageDriver

log = logging.getLogger(__name__)


def enter_stage(driver: StageDriver, job_id: JobId, stage: int) -> None:
    """Build and dispatch `stage` here; on failure fall back to its job message."""
    crash_point("while_entering_stage")
    try:
        driver.process_stage(JobQueueMessage(job_id=job_id, stage=stage))
    except Exception as exc:  # the stage is not lost: the job message (or sweeper) takes it
        log.warning("building stage %d of job %s here failed: %s", stage, job_id, exc)
        driver.send_stage(job_id, stage)
        return
    driver.jobs.mark_dispatched(job_id, stage)
