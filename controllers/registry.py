"""The job-type registry: each type registered once, validated when it is registered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

from controllers.base import AUTO_PACKING, BaseController
from schemas.exceptions import JobTypeError
from schemas.messages import MAX_TASK_IDS

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Literal segments of routes next to POST /api/jobs/{job_type} (triggers/operator.py).
RESERVED = frozenset({"cancel", "retry", "purge"})

C = TypeVar("C", bound=type[BaseController[Any]])


def problems_of(controller: BaseController[Any]) -> list[str]:
    """Return what is wrong with a job type's declaration (empty when nothing is)."""
    problems = []
    parameters = getattr(controller, "parameters", None)
    if not (isinstance(parameters, type) and issubclass(parameters, BaseModel)):
        problems.append("`parameters` must be a Pydantic model class")
    if not controller.stages:
        problems.append("it declares no stage")
    names = [stage.name for stage in controller.stages]
    if len(set(names)) != len(names):
        problems.append(f"stage names repeat: {names}")
    for number, stage in enumerate(controller.stages, start=1):
        if not NAME.fullmatch(stage.name):
            problems.append(f"stage {number} name {stage.name!r} must match {NAME.pattern}")
        if not AUTO_PACKING <= stage.tasks_per_message <= MAX_TASK_IDS:
            problems.append(
                f"stage {stage.name!r}: tasks_per_message must be 1..{MAX_TASK_IDS},"
                " or AUTO_PACKING (0)"
            )
        if stage.max_attempts is not None and stage.max_attempts < 1:
            problems.append(f"stage {stage.name!r}: max_attempts must be >= 1")
    if not 0.0 <= controller.failure_policy.max_failed_fraction <= 1.0:
        problems.append("failure_policy.max_failed_fraction must be within 0..1")
    if controller.retry.max_attempts < 1:
        problems.append("retry.max_attempts must be >= 1")
    return problems


class Registry:
    """Job types by name."""

    def __init__(self) -> None:
        self._types: dict[str, BaseController[Any]] = {}

    def register(self, cls: C) -> C:
        """Instantiate and validate a job type, then add it; usable as a class decorator."""
        name = getattr(cls, "job_type", None)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise JobTypeError(f"{cls.__name__}.job_type must match {NAME.pattern}")
        if name in RESERVED:
            raise JobTypeError(
                f"job type name {name!r} is reserved by the API: not one of {sorted(RESERVED)}"
            )
        if name in self._types:
            raise JobTypeError("job type registered twice", job_type=name)
        controller = cls()
        problems = problems_of(controller)
        if problems:
            raise JobTypeError(f"job type {name!r} is declared wrongly: " + "; ".join(problems))
        self._types[name] = controller
        return cls

    def get(self, job_type: str) -> BaseController[Any]:
        """Return the job type, or raise JobTypeError naming the known ones."""
        try:
            return self._types[job_type]
        except KeyError:
            known = ", ".join(sorted(self._types)) or "none"
            raise JobTypeError(f"unknown job type {job_type!r}; known: {known}") from None

    def __iter__(self) -> Iterator[BaseController[Any]]:
        return iter(sorted(self._types.values(), key=lambda c: c.job_type))

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._types


registry = Registry()
register = registry.register
