"""Crash points for the chaos tests: a process told to crash at a point dies there, at once.

`LIGHTSOUT_CRASH_AT=after_submit_commit,before_advance` makes the process exit with code 86
the first time it reaches either point, as a kill -9 would: no clean-up runs, nothing is
flushed. Unset (always, in production), each point costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

log = logging.getLogger(__name__)
CRASH_EXIT_CODE = 86

CrashPoint = Literal[
    "after_submit_commit",  # the job row is committed, its first stage message not sent
    "after_stage_commit",  # a stage's task rows are committed, no task message sent
    "before_advance",  # the last task is counted off, the stage not yet left
    "while_entering_stage",  # the stage was left; the next one not yet built nor sent
    "before_batched_send",  # submissions answered 202, their stage-1 messages not sent
]


def crash_point(point: CrashPoint) -> None:
    """Exit the process here if LIGHTSOUT_CRASH_AT names `point`."""
    if point in os.environ.get("LIGHTSOUT_CRASH_AT", "").split(","):
        log.critical("crash point %s reached: exiting with %d", point, CRASH_EXIT_CODE)
        os._exit(CRASH_EXIT_CODE)
