"""The job, stage and task status machines: declared once, closed, terminal states absorbing."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.exceptions import IllegalTransition
from schemas.status import (
    JOB_TRANSITIONS,
    STAGE_TRANSITIONS,
    TASK_TRANSITIONS,
    JobStatus,
    StageStatus,
    TaskStatus,
    allowed_from,
    can_transition,
    check_transition,
    is_terminal,
    sources_of,
)

St = TypeVar("St", JobStatus, StageStatus, TaskStatus)
FINISHED = {"completed", "completed_with_errors", "failed", "cancelled"}


def check_table(enum: type[St], table: Mapping[St, frozenset[St]], start: St) -> None:
    """The table names every status, only its own, and everything is reachable from start."""
    assert set(table) == set(enum)
    for source, targets in table.items():
        assert all(type(t) is enum for t in targets), source
        assert source not in targets, f"{source} -> itself is not a transition"
        assert allowed_from(source) == targets
    for target in enum:
        assert sources_of(target) == {s for s, ts in table.items() if target in ts}
    reached, frontier = {start}, [start]
    while frontier:
        for target in allowed_from(frontier.pop()):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(enum)


def test_job_table() -> None:
    check_table(JobStatus, JOB_TRANSITIONS, JobStatus.QUEUED)
    assert {s.value for s in JobStatus if is_terminal(s)} == FINISHED


def test_stage_table() -> None:
    check_table(StageStatus, STAGE_TRANSITIONS, StageStatus.PENDING)
    assert {s.value for s in StageStatus if is_terminal(s)} == FINISHED


def test_task_table() -> None:
    check_table(TaskStatus, TASK_TRANSITIONS, TaskStatus.QUEUED)
    assert {s.value for s in TaskStatus if is_terminal(s)} == FINISHED - {"completed_with_errors"}


# DESIGN.md "Statuses": every path the engine takes must be declared.
JOB_PATHS = [
    (JobStatus.QUEUED, JobStatus.PROCESSING),
    (JobStatus.PROCESSING, JobStatus.COMPLETED),
    (JobStatus.PROCESSING, JobStatus.COMPLETED_WITH_ERRORS),
    (JobStatus.PROCESSING, JobStatus.FAILED),
    (JobStatus.QUEUED, JobStatus.CANCELLED),
    (JobStatus.PROCESSING, JobStatus.CANCELLED),
]
STAGE_PATHS = [
    (StageStatus.PENDING, StageStatus.PROCESSING),
    (StageStatus.PROCESSING, StageStatus.COMPLETED),
    (StageStatus.PROCESSING, StageStatus.COMPLETED_WITH_ERRORS),
    (StageStatus.PROCESSING, StageStatus.FAILED),
]
TASK_PATHS = [
    (TaskStatus.QUEUED, TaskStatus.PROCESSING),
    (TaskStatus.PROCESSING, TaskStatus.COMPLETED),
    (TaskStatus.PROCESSING, TaskStatus.FAILED),
    (TaskStatus.PROCESSING, TaskStatus.RETRYING),
    (TaskStatus.RETRYING, TaskStatus.PROCESSING),
    (TaskStatus.QUEUED, TaskStatus.CANCELLED),
    (TaskStatus.PROCESSING, TaskStatus.CANCELLED),
    (TaskStatus.RETRYING, TaskStatus.CANCELLED),
]


def test_design_transitions_are_declared() -> None:
    for job_from, job_to in JOB_PATHS:
        assert check_transition(job_from, job_to) is job_to
    for stage_from, stage_to in STAGE_PATHS:
        assert check_transition(stage_from, stage_to) is stage_to
    for task_from, task_to in TASK_PATHS:
        assert check_transition(task_from, task_to) is task_to


def test_illegal_transition_names_the_statuses_and_the_allowed_targets() -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_transition(TaskStatus.COMPLETED, TaskStatus.PROCESSING)
    assert "'completed'" in str(caught.value) and "'processing'" in str(caught.value)
    assert caught.value.context == {"allowed": []}
    with pytest.raises(IllegalTransition) as caught:
        check_transition(JobStatus.QUEUED, JobStatus.COMPLETED)
    assert caught.value.context == {"allowed": ["cancelled", "failed", "processing"]}


def walk(start: St, events: list[St]) -> list[St]:
    """Apply each event with check_transition; return the states visited (refused ones repeat)."""
    state, visited = start, [start]
    for target in events:
        if can_transition(state, target):
            assert not is_terminal(state)
            state = check_transition(state, target)
        else:
            with pytest.raises(IllegalTransition):
                check_transition(state, target)
        visited.append(state)
    return visited


def check_walk(start: St, events: list[St]) -> None:
    visited = walk(start, events)
    assert all(type(s) is type(start) for s in visited), "left the declared states"
    for before, after in itertools.pairwise(visited):
        if is_terminal(before):
            assert after is before, f"terminal {before} moved to {after}"
        else:
            assert after is before or after in allowed_from(before)


@given(
    st.just(JobStatus.QUEUED) | st.sampled_from(JobStatus),
    st.lists(st.sampled_from(JobStatus), max_size=40),
)
def test_job_machine_under_random_events(start: JobStatus, events: list[JobStatus]) -> None:
    check_walk(start, events)


@given(
    st.just(StageStatus.PENDING) | st.sampled_from(StageStatus),
    st.lists(st.sampled_from(StageStatus), max_size=40),
)
def test_stage_machine_under_random_events(start: StageStatus, events: list[StageStatus]) -> None:
    check_walk(start, events)


@given(
    st.just(TaskStatus.QUEUED) | st.sampled_from(TaskStatus),
    st.lists(st.sampled_from(TaskStatus), max_size=40),
)
def test_task_machine_under_random_events(start: TaskStatus, events: list[TaskStatus]) -> None:
    check_walk(start, events)


@given(st.sampled_from(TaskStatus), st.sampled_from(TaskStatus))
def test_terminal_task_states_refuse_everything(start: TaskStatus, target: TaskStatus) -> None:
    if is_terminal(start):
        with pytest.raises(IllegalTransition):
            check_transition(start, target)
