"""The stage bars of `show` and `submit --wait`: what counts as done, and how full a bar is."""

from __future__ import annotations

from typing import Any

from lightsout.progress import BAR_WIDTH, StageCounts, render


def stage(
    n: int, status: str, total: int, completed: int = 0, failed: int = 0, remaining: int = 0
) -> dict[str, Any]:
    return {
        "stage": n,
        "name": f"s{n}",
        "status": status,
        "task_count": total,
        "completed": completed,
        "failed": failed,
        "remaining": remaining,
    }


def bar(line: str) -> str:
    return line[line.index("[") + 1 : line.index("]")]


def test_cancelled_tasks_count_as_done_and_are_named() -> None:
    counts = StageCounts.of(stage(1, "cancelled", 10, completed=4, failed=1, remaining=0))
    assert (counts.cancelled, counts.done, counts.fraction) == (5, 10, 1.0)
    assert counts.detail() == "10/10 (1 failed, 5 cancelled)"


def test_a_stage_that_never_started_is_an_empty_bar_whatever_its_status() -> None:
    # A job cancelled or failed before stage 2 was built leaves it with no tasks.
    lines = render({"stages": [stage(2, "cancelled", 0), stage(3, "pending", 0)]})
    assert [bar(line) for line in lines] == ["-" * BAR_WIDTH] * 2


def test_an_empty_stage_that_completed_is_a_full_bar() -> None:
    assert bar(render({"stages": [stage(1, "completed", 0)]})[0]) == "#" * BAR_WIDTH


def test_a_failed_stage_fills_with_what_ended() -> None:
    (line,) = render({"stages": [stage(1, "processing", 10, completed=3, failed=2, remaining=5)]})
    assert bar(line) == "#" * (BAR_WIDTH // 2) + "-" * (BAR_WIDTH // 2)
    assert "5/10 (2 failed)" in line
