"""How much one job may ask for: tasks per stage and bytes per task result.

Set once per process from the settings (`configure`); the stage driver and the task
runner check against them. Past a limit the stage's build or the task fails with a
permanent error that names the limit and the size, so a retry cannot repeat it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas.exceptions import PermanentTaskError

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    max_tasks_per_stage: int = 100_000
    max_result_bytes: int = 256 * 1024


class LimitExceeded(PermanentTaskError):
    """A job asked for more than a configured limit allows."""


_current = Limits()


def configure(limits: Limits) -> None:
    """Use these limits in this process from now on (the runtime calls it at start)."""
    global _current
    _current = limits


def current() -> Limits:
    return _current


def capped_tasks(stage: int, specs: Iterable[T]) -> Iterator[T]:
    """Yield a stage's task specs, raising LimitExceeded once there are too many.

    It counts as the build step yields, so a runaway generator stops at the limit
    instead of filling memory first.
    """
    cap = _current.max_tasks_per_stage
    for count, spec in enumerate(specs, start=1):
        if count > cap:
            raise LimitExceeded(
                f"stage {stage} builds more than {cap:,} tasks, "
                f"the limit of LIGHTSOUT_MAX_TASKS_PER_STAGE"
            )
        yield spec


def checked_result(result: dict[str, Any]) -> dict[str, Any]:
    """Return a task's result, or raise LimitExceeded when its JSON is too large."""
    size = len(json.dumps(result, separators=(",", ":")).encode())
    cap = _current.max_result_bytes
    if size > cap:
        raise LimitExceeded(
            f"task result is {size:,} bytes, over the limit of {cap:,} (LIGHTSOUT_MAX_RESULT_BYTES)"
        )
    return result
