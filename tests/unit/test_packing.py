"""Automatic packing: a stage that leaves tasks_per_message unset is not one message per task."""

from __future__ import annotations

import pytest

from controllers.base import AUTO_PACKING, Stage, packing_for
from controllers.stages import task_messages
from schemas.ids import JobId, make_task_id

JOB = JobId("a" * 64)


@pytest.mark.parametrize(
    ("count", "per_message"),
    [(1, 1), (10, 1), (200, 1), (201, 2), (1_000, 5), (10_000, 50), (100_000, 100)],
)
def test_automatic_packing_grows_with_the_stage(count: int, per_message: int) -> None:
    assert packing_for(AUTO_PACKING, count) == per_message


@pytest.mark.parametrize("declared", [1, 25, 512])
def test_a_declared_packing_wins(declared: int) -> None:
    assert packing_for(declared, 100_000) == declared


def test_stages_are_packed_automatically_by_default() -> None:
    stage: Stage[object] = Stage("s", build=lambda ctx: [], run=lambda ctx: {})  # type: ignore[type-var]
    assert stage.tasks_per_message == AUTO_PACKING


def test_a_thousand_task_stage_goes_in_two_hundred_messages() -> None:
    ids = [make_task_id(JOB, 1, i) for i in range(1_000)]
    msgs = task_messages(JOB, 1, ids, AUTO_PACKING)
    assert len(msgs) == 200
    assert [t for m in msgs for t in m.task_ids] == ids
