"""Per-task progress: the throttled writer, and how stage and job fractions add up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controllers.base import TaskContext
from controllers.progress import ProgressReport, job_fraction, stage_fraction
from schemas.ids import JobId, TaskId
from schemas.records import StageRecord
from schemas.status import StageStatus

JOB = JobId("a" * 64)
TASK = TaskId(f"{JOB}-s1-t0")


class Recorder:
    """A TaskStore's report_progress alone, keeping what it was given."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str]] = []

    def report_progress(self, task_id: TaskId, attempt: int, fraction: float, message: str) -> bool:
        self.reports.append((fraction, message))
        return True


def report(recorder: Recorder, interval: float = 60.0) -> ProgressReport:
    return ProgressReport(recorder, TASK, 1, interval)  # type: ignore[arg-type]  # one method


def context(sink: Any) -> TaskContext[Any]:
    return TaskContext(JOB, TASK, 1, 0, 1, 3, None, {}, sink)


def test_a_hot_loop_writes_once_per_interval_and_always_the_end() -> None:
    recorder = Recorder()
    ctx = context(report(recorder))
    for i in range(1000):
        ctx.progress(i / 1000, f"item {i}")
    ctx.progress(1.0, "done")

    assert recorder.reports == [(0.0, "item 0"), (1.0, "done")]


def test_messages_are_cut_to_a_bounded_length() -> None:
    recorder = Recorder()
    report(recorder)(0.5, "x" * 10_000)
    assert len(recorder.reports[0][1]) == 500


@pytest.mark.parametrize("fraction", [-0.1, 1.01, float("nan")])
def test_a_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match=r"fraction within 0\.\.1"):
        context(report(recorder)).progress(fraction)
    assert recorder.reports == []


def stage(status: StageStatus, count: int = 4, remaining: int = 4, number: int = 1) -> StageRecord:
    ended = count - remaining
    return StageRecord(
        job_id=JOB,
        stage=number,
        name=f"s{number}",
        status=status,
        task_count=count,
        remaining=remaining,
        completed_count=ended,
        failed_count=0,
        cancelled_count=0,
        started_at=None if status is StageStatus.PENDING else datetime.now(UTC),
        finished_at=None,
    )


def test_stage_fraction_counts_ended_tasks_whole_and_running_ones_by_report() -> None:
    assert stage_fraction(stage(StageStatus.PENDING), 0.0) == 0.0
    assert stage_fraction(stage(StageStatus.PROCESSING, remaining=3), 0.5) == 1.5 / 4
    assert stage_fraction(stage(StageStatus.COMPLETED, remaining=0), 0.0) == 1.0
    assert stage_fraction(stage(StageStatus.PROCESSING, count=0, remaining=0), 0.0) == 1.0


def test_job_fraction_is_the_mean_over_all_its_stages() -> None:
    stages = [
        stage(StageStatus.COMPLETED, remaining=0, number=1),
        stage(StageStatus.PROCESSING, remaining=2, number=2),
        stage(StageStatus.PENDING, number=3),
    ]
    assert job_fraction(stages, {2: 1.0}, 3) == round((1 + 3 / 4) / 3, 4)
