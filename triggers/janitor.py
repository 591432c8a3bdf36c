"""The janitor timer: finds stalled work and repairs or fails it (DESIGN invariant 8)."""

from __future__ import annotations

import logging

import azure.functions as func

from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="*/15 * * * * *", run_on_startup=False)
def janitor(timer: func.TimerRequest) -> None:
    """Advance stages whose tasks all ended but which never advanced."""
    repaired = runtime().engine.repair_stalled_stages()
    if repaired:
        log.warning("janitor advanced %d stalled stages", repaired)
