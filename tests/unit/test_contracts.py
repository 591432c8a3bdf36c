"""Contracts at every boundary: queue messages, stage results, rows from the database."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.ids import JobId, make_task_id
from schemas.messages import MAX_MESSAGE_BYTES, MAX_TASK_IDS, JobQueueMessage, TaskQueueMessage
from schemas.records import JobRecord, StageRecord, TaskRecord
from schemas.results import StageResultContract
from schemas.status import JobStatus, StageStatus, TaskStatus

JOB = JobId("a" * 64)
OTHER = JobId("b" * 64)
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

JOB_IDS = st.text("0123456789abcdef", min_size=64, max_size=64).map(JobId)
STAGES = st.integers(1, 10**6)
INDEXES = st.integers(0, 10**7)


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


def rejects(model: type[BaseModel], data: dict[str, Any]) -> set[str]:
    """Validate data as Python and as JSON; both must fail; return the fields named."""
    with pytest.raises(ValidationError) as as_python:
        model.model_validate(data)
    with pytest.raises(ValidationError) as as_json:
        model.model_validate_json(json.dumps(data))
    assert error_fields(as_python.value) == error_fields(as_json.value)
    return error_fields(as_python.value)


@given(JOB_IDS, STAGES)
def test_job_message_round_trips(job_id: JobId, stage: int) -> None:
    message = JobQueueMessage(job_id=job_id, stage=stage)
    assert JobQueueMessage.model_validate_json(message.model_dump_json()) == message


@given(JOB_IDS, STAGES, st.lists(INDEXES, min_size=1, max_size=50, unique=True))
def test_task_message_round_trips(job_id: JobId, stage: int, indexes: list[int]) -> None:
    task_ids = [make_task_id(job_id, stage, i) for i in indexes]
    message = TaskQueueMessage(job_id=job_id, stage=stage, task_ids=task_ids)
    assert TaskQueueMessage.model_validate_json(message.model_dump_json()) == message
    assert message.task_ids == task_ids


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"job_id": JOB, "stage": "1"}, "stage"),
        ({"job_id": JOB, "stage": 1.0}, "stage"),
        ({"job_id": JOB, "stage": True}, "stage"),
        ({"job_id": JOB, "stage": 0}, "stage"),
        ({"job_id": JOB, "stage": None}, "stage"),
        ({"job_id": 12, "stage": 1}, "job_id"),
        ({"job_id": "A" * 64, "stage": 1}, "job_id"),
        ({"job_id": "a" * 63, "stage": 1}, "job_id"),
        ({"job_id": "a" * 65, "stage": 1}, "job_id"),
        ({"job_id": "g" * 64, "stage": 1}, "job_id"),
        ({"job_id": " " + "a" * 63, "stage": 1}, "job_id"),
        ({"stage": 1}, "job_id"),
        ({"job_id": JOB, "stage": 1, "result": {}}, "result"),
    ],
)
def test_job_message_rejects(data: dict[str, Any], field: str) -> None:
    assert field in rejects(JobQueueMessage, data)


def task_message(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"job_id": JOB, "stage": 2, "task_ids": [f"{JOB}-s2-t0", f"{JOB}-s2-t1"]}
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (task_message(task_ids=[]), "task_ids"),
        (task_message(task_ids=f"{JOB}-s2-t0"), "task_ids"),
        (task_message(task_ids=[7]), "task_ids.0"),
        (task_message(task_ids=[f"{JOB}-s2-t01"]), "task_ids.0"),
        (task_message(task_ids=[f"{JOB.upper()}-s2-t0"]), "task_ids.0"),
        (task_message(task_ids=[f"{JOB}-s0-t0"]), "task_ids.0"),
        (task_message(task_ids=[f"{JOB}-s2-t-1"]), "task_ids.0"),
        (task_message(job_id="abc"), "job_id"),
        (task_message(stage="2"), "stage"),
        (task_message(extra=1), "extra"),
        (task_message(task_ids=[f"{JOB}-s2-t0"] * (MAX_TASK_IDS + 1)), "task_ids"),
    ],
)
def test_task_message_rejects(data: dict[str, Any], field: str) -> None:
    assert field in rejects(TaskQueueMessage, data)


@pytest.mark.parametrize(
    "stranger",
    [f"{OTHER}-s2-t0", f"{JOB}-s3-t0", f"{JOB}-s1-t0", f"{JOB}-s22-t0"],
    ids=["other job", "other stage", "earlier stage", "stage with the same prefix"],
)
def test_task_message_rejects_tasks_of_another_job_or_stage(stranger: str) -> None:
    data = task_message(task_ids=[f"{JOB}-s2-t0", stranger])
    with pytest.raises(ValidationError) as caught:
        TaskQueueMessage.model_validate(data)
    assert stranger in str(caught.value)
    with pytest.raises(ValidationError):
        TaskQueueMessage.model_validate_json(json.dumps(data))


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(), max_size=5))
def test_random_objects_are_not_messages(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TaskQueueMessage.model_validate(data)
    if set(data) != {"job_id", "stage"}:
        with pytest.raises(ValidationError):
            JobQueueMessage.model_validate(data)


@pytest.mark.parametrize("body", ["", "not json", "[]", "null", '{"job_id": "', "1"])
def test_malformed_json_is_rejected(body: str) -> None:
    with pytest.raises(ValidationError):
        JobQueueMessage.model_validate_json(body)
    with pytest.raises(ValidationError):
        TaskQueueMessage.model_validate_json(body)


def test_messages_are_frozen() -> None:
    message = JobQueueMessage(job_id=JOB, stage=1)
    with pytest.raises(ValidationError):
        message.stage = 2  # type: ignore[misc]


def stage_result(stage: int = 3, **changes: Any) -> StageResultContract:
    data: dict[str, Any] = {
        "stage": stage,
        "name": "reply",
        "status": StageStatus.COMPLETED_WITH_ERRORS,
        "task_count": 10,
        "completed_count": 9,
        "failed_count": 1,
        "started_at": NOW,
        "finished_at": NOW + timedelta(seconds=2.5),
        "duration_s": 2.5,
        "failed_task_ids": [make_task_id(JOB, stage, 4)],
        "aggregate": {"greetings": 9, "nested": {"a": [1, 2.5, None, "x"]}},
    }
    data.update(changes)
    return StageResultContract.model_validate(data)


@given(STAGES, st.integers(0, 10**6), st.datetimes(timezones=st.just(UTC)))
def test_stage_result_json_dump_round_trips(stage: int, count: int, started: datetime) -> None:
    result = stage_result(
        stage,
        task_count=count,
        completed_count=count,
        failed_count=0,
        failed_task_ids=[],
        started_at=started,
        finished_at=started,
    )
    dumped = result.model_dump(mode="json")
    assert json.loads(json.dumps(dumped)) == dumped
    assert StageResultContract.model_validate(dumped) == result
    assert StageResultContract.model_validate_json(json.dumps(dumped)) == result


def test_stage_results_are_keyed_by_strings() -> None:
    results = [stage_result(1), stage_result(2), stage_result(10)]
    stage_results = {r.key: r.model_dump(mode="json") for r in results}
    assert list(stage_results) == ["1", "2", "10"]
    as_stored = json.loads(json.dumps(stage_results))
    assert as_stored == stage_results
    assert {k: StageResultContract.model_validate(v) for k, v in as_stored.items()} == {
        r.key: r for r in results
    }
    assert stage_results["1"]["status"] == "completed_with_errors"
    assert isinstance(stage_results["1"]["finished_at"], str)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"stage": 0}, "stage"),
        ({"failed_count": -1}, "failed_count"),
        ({"failed_task_ids": ["t1"]}, "failed_task_ids.0"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_stage_result_rejects(changes: dict[str, Any], field: str) -> None:
    data = stage_result().model_dump(mode="json")
    data.update(changes)
    assert field in rejects(StageResultContract, data)


def job_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": JOB,
        "job_type": "hello_world",
        "status": "processing",
        "stage": 1,
        "total_stages": 2,
        "parameters": {"n": 3},
        "stage_results": {},
        "result": None,
        "error": None,
        "rerun_of": None,
        "dispatched_at": None,
        "created_at": NOW,
        "updated_at": NOW,
        "finished_at": None,
        "column_added_later": 1,
    }
    row.update(changes)
    return row


def stage_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": JOB,
        "stage": 1,
        "name": "greet",
        "status": "processing",
        "task_count": 3,
        "remaining": 3,
        "completed_count": 0,
        "failed_count": 0,
        "cancelled_count": 0,
        "uncreated": 0,
        "started_at": NOW,
        "finished_at": None,
    }
    row.update(changes)
    return row


def task_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": make_task_id(JOB, 1, 0),
        "job_id": JOB,
        "stage": 1,
        "task_index": 0,
        "task_type": "greet",
        "status": "queued",
        "parameters": {},
        "result": None,
        "error": None,
        "attempt": 0,
        "max_attempts": 3,
        "claimed_by": None,
        "claimed_at": None,
        "heartbeat_at": None,
        "next_attempt_at": None,
        "dispatched_at": None,
        "created_at": NOW,
        "updated_at": NOW,
        "finished_at": None,
    }
    row.update(changes)
    return row


def test_rows_parse_into_records() -> None:
    assert JobRecord.model_validate(job_row()).status is JobStatus.PROCESSING
    assert StageRecord.model_validate(stage_row()).status is StageStatus.PROCESSING
    error = {"type": "ValueError", "message": "boom", "traceback": None, "attempt": 1}
    task = TaskRecord.model_validate(task_row(status="failed", error=error, finished_at=NOW))
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.message == "boom"


@pytest.mark.parametrize(
    ("model", "row"),
    [
        (JobRecord, job_row(status="exploded")),
        (StageRecord, stage_row(status="exploded")),
        (TaskRecord, task_row(status="exploded")),
        (TaskRecord, task_row(status="PROCESSING")),
    ],
    ids=["job", "stage", "task", "task upper case"],
)
def test_records_reject_unknown_statuses(model: type[BaseModel], row: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(row)
    assert error_fields(caught.value) == {"status"}
    assert repr(row["status"]) in str(caught.value)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (job_row(job_id="A" * 64), "job_id"),
        (job_row(stage=0), "stage"),
        (job_row(parameters=[1, 2]), "parameters"),
        (job_row(stage_results={"1": "done"}), "stage_results.1"),
    ],
)
def test_job_records_reject_bad_rows(row: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobRecord.model_validate(row)
    assert field in error_fields(caught.value)


@pytest.mark.parametrize("model", [JobQueueMessage, TaskQueueMessage])
@pytest.mark.parametrize(
    "traceparent",
    ["", "00-abc-def-01", f"00-{'A' * 32}-{'b' * 16}-01", f"ff-{'a' * 32}-{'b' * 16}-01"],
)
def test_messages_reject_malformed_traceparents(
    model: type[JobQueueMessage] | type[TaskQueueMessage], traceparent: str
) -> None:
    body = {"job_id": JOB, "stage": 1, "traceparent": traceparent}
    if model is TaskQueueMessage:
        body["task_ids"] = [f"{JOB}-s1-t0"]
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    assert "traceparent" in error_fields(caught.value)


def test_messages_carry_a_traceparent_and_parse_without_one() -> None:
    trace = "00-" + "0af7651916cd43dd8448eb211c80319c" + "-" + "b7ad6b7169203331" + "-01"
    msg = JobQueueMessage(job_id=JOB, stage=2, traceparent=trace)
    assert JobQueueMessage.model_validate_json(msg.model_dump_json()).traceparent == trace
    old = JobQueueMessage.model_validate_json(f'{{"job_id": "{JOB}", "stage": 1}}')
    assert old.traceparent is None


def test_task_records_reject_malformed_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        TaskRecord.model_validate(task_row(error={"message": "no type"}))
    assert {"error.type", "error.attempt"} <= error_fields(caught.value)


def test_the_largest_legal_task_message_fits_the_queue_limit() -> None:
    # The longest ids a message can name: stage 10 of noop_fanout, indices up to 99,999.
    ids = [make_task_id(JOB, 10, 99_999 - i) for i in range(MAX_TASK_IDS)]
    trace = "00-" + "f" * 32 + "-" + "f" * 16 + "-01"
    msg = TaskQueueMessage(job_id=JOB, stage=10, task_ids=ids, traceparent=trace)
    encoded = base64.b64encode(msg.model_dump_json().encode())
    assert len(encoded) <= MAX_MESSAGE_BYTES
