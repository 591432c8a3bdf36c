"""The janitor timer: finds stalled work and lost messages, and repairs or fails them."""

from __future__ import annotations

import logging

import azure.functions as func

from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%LIGHTSOUT_JANITOR_SCHEDULE%", run_on_startup=True)
def janitor(timer: func.TimerRequest) -> None:
    """Reap tasks whose worker died, advance stalled stages, re-send lost messages, purge."""
    report = runtime().recovery.run_janitor()
    if report.any():
        log.warning("janitor: %s", report)
    runtime().retention.run_janitor()
