"""Results of tasks and stages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.ids import TaskIdField
from schemas.status import StageStatus

MAX_FAILED_IDS = 100


class TaskResult(BaseModel):
    """What a task handler returns: a small JSON object stored on the task row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: dict[str, Any] = Field(default_factory=dict)


class StageResultContract(BaseModel):
    """A finished stage, stored in jobs.stage_results under its string stage key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: int = Field(ge=1)
    name: str
    status: StageStatus
    task_count: int = Field(ge=0)
    completed_count: int = Field(ge=0)
    failed_count: int = Field(ge=0)
    started_at: datetime | None
    finished_at: datetime
    duration_s: float = Field(ge=0)
    failed_task_ids: list[TaskIdField] = Field(
        default_factory=list, description=f"at most {MAX_FAILED_IDS}; see failed_count"
    )
    aggregate: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.stage)
