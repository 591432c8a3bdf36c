"""The janitor timer: finds stalled work and lost messages, and repairs or fails them."""

from __future__ import annotations

import logging

import azure.functions as func

from schemas.settings import env_flag
from triggers.runtime import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the package leaves it untyped
log = logging.getLogger(__name__)
# A decorator argument, fixed at import: in Azure a run on startup fires on every instance
# start and scale-out, so it is off unless set (the local host sets it on by default).
RUN_ON_STARTUP = env_flag("LIGHTSOUT_JANITOR_RUN_ON_STARTUP")


@bp.timer_trigger(
    arg_name="timer", schedule="%LIGHTSOUT_JANITOR_SCHEDULE%", run_on_startup=RUN_ON_STARTUP
)
def janitor(timer: func.TimerRequest) -> None:
    """Reap tasks whose worker died, advance stalled stages, re-send lost messages, purge."""
    report = runtime().recovery.run_janitor()
    if report.any():
        log.warning("janitor: %s", report)
    runtime().retention.run_janitor()
