"""The registered functions, called in-process with real HttpRequest and QueueMessage objects.

Each test gets its own migrated database and queues in the real Azurite; the process-wide
runtime is reset around it, so it is made from this test's settings.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import psycopg
import pytest
from azure.functions.decorators.http import HttpTrigger
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from controllers.engine import parse_message
from lightsout.devservices import azurite_connection_string, free_port
from schemas.exceptions import ContractViolation
from schemas.http import ErrorBody, HealthBody, JobList, JobTypeList, JobView, TaskList
from schemas.ids import JobId, make_task_id
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import Json
from schemas.results import StageResultContract
from tests.fixtures_services import TEST_KEY, QueueNames
from tests.functions import FUNCTIONS
from triggers.runtime import Runtime, reset_runtime, runtime

KEY_HEADER = "x-functions-key"
UNKNOWN_ID = "ab" * 32


@pytest.fixture
def rt(settings_env: dict[str, str]) -> Iterator[Runtime]:
    """The runtime made from this test's settings (making it creates the queues)."""
    reset_runtime()
    yield runtime()
    reset_runtime()


def call_http(
    name: str,
    method: str,
    route_params: dict[str, str] | None = None,
    *,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Json]:
    """Call the HTTP function `name` the way the worker would, checking its route and method.

    The request carries the test key (all scopes) unless `headers` says otherwise.
    """
    function = FUNCTIONS[name]
    trigger = function.get_trigger()
    assert isinstance(trigger, HttpTrigger)
    assert method in {str(getattr(m, "value", m)).upper() for m in trigger.methods or ()}
    path = str(trigger.route).format(**(route_params or {}))
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost/api/{path}",
        headers={"content-type": "application/json", KEY_HEADER: TEST_KEY, **(headers or {})},
        params=params or {},
        route_params=route_params or {},
        body=body,
    )
    response = function.get_user_function()(request)
    assert isinstance(response, func.HttpResponse)
    assert response.mimetype == "application/json"
    payload = json.loads(response.get_body())
    assert isinstance(payload, dict)
    return response.status_code, payload


def submit(job_type: str, params: Json | bytes) -> tuple[int, Json]:
    """Submit, then wait until the batched dispatcher sent what the submission queued."""
    body = params if isinstance(params, bytes) else json.dumps(params).encode()
    answer = call_http("submit_job", "POST", {"job_type": job_type}, body=body)
    dispatcher = runtime().engine.dispatcher
    assert dispatcher is None or dispatcher.wait_idle(30)
    return answer


def submitted(job_type: str, params: Json) -> str:
    status, body = submit(job_type, params)
    assert status == 202, body
    return str(body["job_id"])


def error(status: int, body: Json, expected_status: int, expected_error: str) -> ErrorBody:
    assert status == expected_status, body
    parsed = ErrorBody.model_validate(body)
    assert parsed.error == expected_error
    return parsed


def queue_message(body: bytes | str, dequeue_count: int = 1) -> func.QueueMessage:
    """A message as the Python worker hands it to a queue trigger (body already decoded)."""
    now = datetime.now(UTC)
    return QueueMessage(  # type: ignore[no-untyped-call]  # the package leaves it untyped
        id=str(uuid.uuid4()),
        body=body.encode() if isinstance(body, str) else body,
        dequeue_count=dequeue_count,
        insertion_time=now,
        expiration_time=now + timedelta(days=7),
        time_next_visible=now + timedelta(minutes=10),
        pop_receipt="pop",
    )


def deliver(name: str, msg: func.QueueMessage) -> None:
    FUNCTIONS[name].get_user_function()(msg)


def take(connection: str, queue: str) -> list[str]:
    """Receive and delete every visible message of `queue`; return their decoded texts."""
    client = QueueClient.from_connection_string(connection, queue)
    texts: list[str] = []
    while page := list(client.receive_messages(max_messages=32, visibility_timeout=60)):
        for message in page:
            texts.append(base64.b64decode(str(message.content)).decode())
            client.delete_message(message)
    return texts


def job(job_id: str) -> JobView:
    status, body = call_http("get_job", "GET", {"job_id": job_id})
    assert status == 200, body
    return JobView.model_validate(body)


def untraced(msg: JobQueueMessage) -> JobQueueMessage:
    return msg.model_copy(update={"traceparent": None})


def test_the_triggers_under_test_are_registered() -> None:
    assert set(FUNCTIONS) >= {
        "submit_job",
        "get_job",
        "list_jobs",
        "list_tasks",
        "cancel_job",
        "job_types",
        "health",
        "jobs_queue",
        "tasks_queue",
        "jobs_poison",
        "tasks_poison",
        "janitor",
    }


def test_submit_answers_202_then_200_with_the_same_job_and_one_row(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]], queue_names: QueueNames
) -> None:
    first_status, first = submit("hello_world", {"n": 4})
    # Same validated parameters, other key order and defaults spelled out: the same job.
    again_status, again = submit("hello_world", {"name": "world", "n": 4})

    assert (first_status, again_status) == (202, 200)
    assert first["created"] is True and again["created"] is False
    assert again["job_id"] == first["job_id"]
    assert first["status_url"] == f"/api/jobs/{first['job_id']}"
    row = db.execute("SELECT count(*) AS n FROM jobs").fetchone()
    assert row is not None and row["n"] == 1
    sent = [JobQueueMessage.model_validate_json(t) for t in rt.queues.peek(queue_names.jobs)]
    assert [untraced(m) for m in sent] == [JobQueueMessage(job_id=first["job_id"], stage=1)]
    assert sent[0].traceparent is not None  # the submit's trace (tests/integration/test_tracing.py)


def test_submit_works_before_anything_else_created_the_queues(
    settings_env: dict[str, str], queue_names: QueueNames
) -> None:
    # Nothing else has created the queues: a new storage account (Azure Functions creates
    # no queue for its triggers), or a local host that has not polled yet.
    reset_runtime()
    try:
        status, body = submit("hello_world", {"n": 1})
        texts = runtime().queues.peek(queue_names.jobs)
    finally:
        reset_runtime()

    assert status == 202, body
    assert [untraced(JobQueueMessage.model_validate_json(t)) for t in texts] == [
        JobQueueMessage(job_id=body["job_id"], stage=1)
    ]


@pytest.mark.parametrize("body", [b'{"n": ', b"not json", b"\xff\xfe"])
def test_submit_with_malformed_json_is_400(rt: Runtime, body: bytes) -> None:
    parsed = error(*submit("hello_world", body), 400, "bad_request")
    assert "JSON" in parsed.message


def test_submit_of_an_unknown_job_type_is_400_naming_the_known_types(rt: Runtime) -> None:
    parsed = error(*submit("no_such_type", {}), 400, "unknown_job_type")
    assert "no_such_type" in parsed.message
    for known in ("hello_world", "noop_fanout", "prime_count"):
        assert known in parsed.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": "many"}, "n"),
        ({"n": 2, "colour": "red"}, "colour"),
        ({"name": ""}, "name"),
    ],
)
def test_submit_with_invalid_parameters_is_422_naming_the_field(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]], params: Json, field: str
) -> None:
    parsed = error(*submit("hello_world", params), 422, "invalid_parameters")
    assert [f.loc for f in parsed.fields] == [[field]]
    assert field in parsed.message
    row = db.execute("SELECT count(*) AS n FROM jobs").fetchone()
    assert row is not None and row["n"] == 0


@pytest.mark.parametrize("body", [b"[1, 2]", b"null", b'"text"'])
def test_submit_of_json_that_is_not_an_object_is_422(rt: Runtime, body: bytes) -> None:
    error(*submit("hello_world", body), 422, "invalid_parameters")


@pytest.mark.parametrize(
    ("name", "method"), [("get_job", "GET"), ("list_tasks", "GET"), ("cancel_job", "POST")]
)
def test_unknown_job_id_is_404(rt: Runtime, name: str, method: str) -> None:
    parsed = error(*call_http(name, method, {"job_id": UNKNOWN_ID}), 404, "not_found")
    assert UNKNOWN_ID in parsed.message


@pytest.mark.parametrize("job_id", ["nope", "AB" * 32, "ab" * 31, "ab" * 32 + "-s1-t0"])
@pytest.mark.parametrize(
    ("name", "method"), [("get_job", "GET"), ("list_tasks", "GET"), ("cancel_job", "POST")]
)
def test_malformed_job_id_is_400(rt: Runtime, name: str, method: str, job_id: str) -> None:
    parsed = error(*call_http(name, method, {"job_id": job_id}), 400, "bad_request")
    assert "job id" in parsed.message


def test_get_job_shows_status_parameters_and_progress(rt: Runtime) -> None:
    job_id = submitted("noop_fanout", {"tasks": 3, "stages": 2})

    view = job(job_id)

    assert (view.job_type, view.status, view.stage, view.total_stages) == (
        "noop_fanout",
        "queued",
        1,
        2,
    )
    assert view.parameters == {
        "tasks": 3,
        "stages": 2,
        "sleep_ms": 0,
        "fail_task_indices": [],
        "flaky_task_indices": [],
        "fail_until_attempt": {},
    }
    assert [(s.stage, s.name, s.status) for s in view.stages] == [
        (1, "noop_1", "pending"),
        (2, "noop_2", "pending"),
    ]
    assert view.progress.total == 0 and view.stage_results == {} and view.result is None


def test_list_jobs_filters_by_type_and_status_and_pages_newest_first(rt: Runtime) -> None:
    hellos = [submitted("hello_world", {"n": n}) for n in (1, 2, 3)]
    noop = submitted("noop_fanout", {"tasks": 1})
    cancelled = submitted("noop_fanout", {"tasks": 2})
    assert call_http("cancel_job", "POST", {"job_id": cancelled})[0] == 202

    def listed(**params: str) -> JobList:
        status, body = call_http("list_jobs", "GET", params=params)
        assert status == 200, body
        return JobList.model_validate(body)

    everything = listed()
    assert [j.job_id for j in everything.jobs] == [cancelled, noop, *reversed(hellos)]
    assert everything.next_cursor is None
    assert [j.job_id for j in listed(job_type="hello_world").jobs] == list(reversed(hellos))
    assert [j.job_id for j in listed(status="cancelled").jobs] == [cancelled]
    assert [j.job_id for j in listed(status="queued", job_type="noop_fanout").jobs] == [noop]
    assert listed(job_type="prime_count").jobs == []

    pages, cursor = [], None
    while True:
        page = listed(limit="2", **({"cursor": cursor} if cursor else {}))
        pages.append([j.job_id for j in page.jobs])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [[cancelled, noop], [hellos[2], hellos[1]], [hellos[0]]]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "sleeping"},
        {"limit": "0"},
        {"limit": "many"},
        {"cursor": "!!"},
        {"cursor": "Zm9v"},  # base64 of "foo": decodes, but is no cursor of ours
        {"cursor": base64.urlsafe_b64encode(b"not a time\x1fabc").decode()},
    ],
)
def test_list_jobs_with_bad_query_parameters_is_400(rt: Runtime, params: dict[str, str]) -> None:
    error(*call_http("list_jobs", "GET", params=params), 400, "bad_request")


def test_jobs_queue_trigger_builds_the_stage_and_sends_its_task_messages(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]], azurite: str, queue_names: QueueNames
) -> None:
    job_id = submitted("hello_world", {"n": 5})
    (job_text,) = take(azurite, queue_names.jobs)

    deliver("jobs_queue", queue_message(job_text))
    deliver("jobs_queue", queue_message(job_text, dequeue_count=2))  # redelivered: no effect

    rows = db.execute(
        "SELECT task_id, task_type, status, attempt, dispatched_at FROM tasks ORDER BY task_index"
    ).fetchall()
    assert [r["task_id"] for r in rows] == [make_task_id(JobId(job_id), 1, i) for i in range(5)]
    assert {(r["task_type"], r["status"], r["attempt"]) for r in rows} == {("greet", "queued", 0)}
    assert all(r["dispatched_at"] is not None for r in rows)
    sent = [TaskQueueMessage.model_validate_json(t) for t in rt.queues.peek(queue_names.tasks)]
    assert sorted(t for m in sent for t in m.task_ids) == [r["task_id"] for r in rows]
    assert {(m.job_id, m.stage, len(m.task_ids)) for m in sent} == {(job_id, 1, 1)}
    view = job(job_id)
    assert view.status == "processing"
    assert (view.stages[0].status, view.stages[0].task_count) == ("processing", 5)


def test_a_job_runs_to_completion_through_the_queue_triggers(
    rt: Runtime, azurite: str, queue_names: QueueNames
) -> None:
    job_id = submitted("hello_world", {"n": 3, "name": "trigger"})

    for _ in range(20):
        job_texts = take(azurite, queue_names.jobs)
        task_texts = take(azurite, queue_names.tasks)
        if not job_texts and not task_texts:
            break
        for text in job_texts:
            deliver("jobs_queue", queue_message(text))
        for text in task_texts:
            deliver("tasks_queue", queue_message(text))

    view = job(job_id)
    assert view.status == "completed", view.error
    assert view.result == {"greetings": 3, "replies": 3, "summary": "3 hellos, 3 replies"}
    assert sorted(view.stage_results) == ["1", "2"]
    for key, raw in view.stage_results.items():
        result = StageResultContract.model_validate(raw)
        assert (result.key, result.status, result.task_count) == (key, "completed", 3)
    assert (view.progress.total, view.progress.completed, view.progress.remaining) == (6, 6, 0)


def test_list_tasks_filters_by_stage_and_status_and_pages(
    rt: Runtime, azurite: str, queue_names: QueueNames
) -> None:
    job_id = submitted("hello_world", {"n": 5})
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))
    first_task = next(
        t
        for t in take(azurite, queue_names.tasks)
        if TaskQueueMessage.model_validate_json(t).task_ids == [make_task_id(JobId(job_id), 1, 0)]
    )
    deliver("tasks_queue", queue_message(first_task))

    def listed(**params: str) -> TaskList:
        status, body = call_http("list_tasks", "GET", {"job_id": job_id}, params=params)
        assert status == 200, body
        return TaskList.model_validate(body)

    assert [t.task_index for t in listed().tasks] == [0, 1, 2, 3, 4]
    assert [t.task_index for t in listed(stage="1", status="queued").tasks] == [1, 2, 3, 4]
    (done,) = listed(status="completed").tasks
    assert (done.task_index, done.attempt, done.result) == (0, 1, {"greeting": "hello world #0"})
    assert listed(stage="2").tasks == []

    pages, cursor = [], None
    while True:
        page = listed(limit="2", **({"cursor": cursor} if cursor else {}))
        pages.append([t.task_index for t in page.tasks])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [[0, 1], [2, 3], [4]]

    for bad in ({"stage": "0"}, {"stage": "one"}, {"status": "asleep"}, {"cursor": "Zm9v"}):
        error(*call_http("list_tasks", "GET", {"job_id": job_id}, params=bad), 400, "bad_request")


def test_job_types_lists_each_type_with_its_stages_and_parameter_schema(rt: Runtime) -> None:
    status, body = call_http("job_types", "GET")

    assert status == 200
    types = {t.job_type: t for t in JobTypeList.model_validate(body).job_types}
    assert sorted(types) == ["hello_world", "noop_fanout", "prime_count"]
    assert [(s.stage, s.name) for s in types["hello_world"].stages] == [(1, "greet"), (2, "reply")]
    assert [s.name for s in types["prime_count"].stages] == ["plan", "count", "reduce"]
    assert len(types["noop_fanout"].stages) == 10
    schema = types["noop_fanout"].parameters_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["tasks"]
    assert {"tasks", "stages", "sleep_ms", "fail_task_indices"} <= set(schema["properties"])
    assert schema["properties"]["tasks"]["maximum"] == 100_000
    assert types["hello_world"].description


def test_health_is_200_when_database_and_queues_answer(rt: Runtime) -> None:
    status, body = call_http("health", "GET")

    assert status == 200
    assert HealthBody.model_validate(body) == HealthBody(
        status="ok", checks={"database": "ok", "queues": "ok"}, auth="on"
    )


def test_health_is_503_naming_the_queues_when_storage_does_not_answer(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = free_port()
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string(dead))
    reset_runtime()
    try:
        status, body = call_http("health", "GET")
    finally:
        reset_runtime()

    assert status == 503
    health = HealthBody.model_validate(body)
    assert health.status == "unavailable"
    assert health.checks["database"] == "ok"
    assert "unreachable" in health.checks["queues"]
    assert f"127.0.0.1:{dead}" in health.checks["queues"]


def test_cancel_is_202_then_409(rt: Runtime, azurite: str, queue_names: QueueNames) -> None:
    job_id = submitted("hello_world", {"n": 2})

    first = call_http("cancel_job", "POST", {"job_id": job_id})
    second = call_http("cancel_job", "POST", {"job_id": job_id})

    assert first == (202, {"job_id": job_id, "status": "cancelled"})
    parsed = error(*second, 409, "conflict")
    assert "cancelled" in parsed.message
    # The job message sent before the cancel finds a cancelled job and builds nothing.
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))
    view = job(job_id)
    assert view.status == "cancelled" and view.finished_at is not None
    assert {s.status for s in view.stages} == {"cancelled"}
    assert rt.queues.peek(queue_names.tasks) == []


MALFORMED_TASK_MESSAGES = [
    pytest.param(b"not json at all", "body", id="not-json"),
    pytest.param(b'{"job_id": "nope"}', "job_id", id="bad-job-id"),
    pytest.param(b'{"job_id": "' + b"ab" * 32 + b'", "stage": 1}', "task_ids", id="no-tasks"),
    pytest.param(
        json.dumps({"job_id": "ab" * 32, "stage": 1, "task_ids": [f"{'ab' * 32}-s2-t0"]}).encode(),
        "not of job",
        id="task-of-another-stage",
    ),
    pytest.param(
        json.dumps(
            {"job_id": "ab" * 32, "stage": 1, "task_ids": [f"{'ab' * 32}-s1-t0"], "x": 1}
        ).encode(),
        "x",
        id="extra-field",
    ),
    pytest.param(b"\xff\xfe{}", "body", id="not-utf8"),
]


@pytest.mark.parametrize(("body", "named"), MALFORMED_TASK_MESSAGES)
def test_malformed_task_message_is_recorded_as_poison_and_nothing_raises(
    rt: Runtime,
    db: psycopg.Connection[dict[str, Any]],
    queue_names: QueueNames,
    body: bytes,
    named: str,
) -> None:
    msg = queue_message(body, dequeue_count=1)

    deliver("tasks_queue", msg)
    deliver("tasks_queue", msg)  # the same message again: recorded once

    rows = db.execute("SELECT * FROM poison_messages").fetchall()
    assert len(rows) == 1
    (row,) = rows
    assert (row["queue_name"], row["message_id"]) == (queue_names.tasks, msg.id)
    assert row["body"] == body.decode("utf-8", errors="replace")
    assert row["dequeue_count"] == 1
    with pytest.raises(ContractViolation) as parsing:
        parse_message(TaskQueueMessage, body)
    assert row["reason"] == str(parsing.value)  # what is wrong, said once
    assert row["reason"].startswith("malformed TaskQueueMessage: ")
    assert named in row["reason"]
    assert row["job_id"] is None and row["task_ids"] == []


def test_malformed_job_message_is_recorded_as_poison_and_nothing_raises(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]], queue_names: QueueNames
) -> None:
    msg = queue_message(b'{"job_id": "' + b"ab" * 32 + b'", "stage": 0}')

    deliver("jobs_queue", msg)

    (row,) = db.execute("SELECT * FROM poison_messages").fetchall()
    assert row["queue_name"] == queue_names.jobs
    assert row["reason"] == (
        "malformed JobQueueMessage: stage: Input should be greater than or equal to 1"
    )


def test_tasks_poison_trigger_fails_the_tasks_so_the_job_does_not_hang(
    rt: Runtime, db: psycopg.Connection[dict[str, Any]], azurite: str, queue_names: QueueNames
) -> None:
    job_id = submitted("noop_fanout", {"tasks": 2, "stages": 1})
    deliver("jobs_queue", queue_message(take(azurite, queue_names.jobs)[0]))
    (task_text,) = take(azurite, queue_names.tasks)  # both tasks travel in one message
    poisoned = queue_message(task_text, dequeue_count=5)

    deliver("tasks_poison", poisoned)

    (row,) = db.execute("SELECT * FROM poison_messages").fetchall()
    assert (row["queue_name"], row["message_id"]) == (queue_names.tasks_poison, poisoned.id)
    assert "maxDequeueCount" in row["reason"]
    assert row["job_id"] == job_id
    assert row["task_ids"] == [make_task_id(JobId(job_id), 1, i) for i in range(2)]
    view = job(job_id)
    assert view.status == "failed"
    assert view.error is not None
    assert view.error["failed_task_ids"] == row["task_ids"]
    assert {e["type"] for e in view.error["errors"]} == {"PoisonMessage"}
