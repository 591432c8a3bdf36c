"""The process that sees a stage's last task starts the next stage itself.

Sending the next stage's job message and waiting for a host to poll it costs up to
`maxPollingInterval` per stage. Instead, right after the advance commits, the same
process takes the next stage's dispatch lease, builds and dispatches the stage under
it, then sets the job's outbox marker. The job message stays the fallback: until the
marker is set, the sweeper sees the stage as unsent and sends its job message once
the lease has expired (not while this process is still building: that would be a
repair of nothing), so a process that dies while building the stage (crash point
`while_entering_stage`) leaves nothing hanging; building twice is harmless, as
`start_stage` creates a stage's tasks once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controllers.faults import crash_point
from schemas.ids import JobId
from schemas.messages import JobQueueMessage
from schemas.records import JobRecord

if TYPE_CHECKING:
    from controllers.stages import StageDriver

log = logging.getLogger(__name__)


def enter_stage(
    driver: StageDriver, job_id: JobId, stage: int, entered: JobRecord | None = None
) -> None:
    """Build and dispatch `stage` here; on failure fall back to its job message.

    `entered`: the job as the advance into `stage` just left it, so it is not read again.
    """
    holder = driver.new_holder()
    if not driver.jobs.take_dispatch_lease(job_id, stage, holder, driver.dispatch_lease):
        # Someone else holds the stage (or the job moved on): they, or the sweeper once
        # their lease expires, send it.
        log.info("stage %d of job %s is being entered elsewhere", stage, job_id)
        return
    try:
        crash_point("while_entering_stage")
        driver.process_stage(JobQueueMessage(job_id=job_id, stage=stage), holder, entered)
    except Exception as exc:  # not lost: the job message (or the sweeper) takes it
        log.warning("building stage %d of job %s here failed: %s", stage, job_id, exc)
        # Released first, so the process that takes the job message can take the lease.
        driver.release(job_id, stage, holder)
        driver.send_stage(job_id, stage)
        return
    driver.jobs.mark_dispatched(job_id, stage)
    driver.release(job_id, stage, holder)
