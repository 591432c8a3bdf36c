"""One job is one trace: from the POST through both queue hops, retries included, to its last
task; and PostgreSQL sees the trace of each statement.

The registered functions are called in-process against real PostgreSQL and Azurite, with an
in-memory span exporter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controllers import tracing
from repositories.tracecontext import TracedCursor, current_traceparent
from schemas.messages import JobQueueMessage, TaskQueueMessage
from tests.fixtures_services import TEST_KEY, QueueNames
from tests.functions import FUNCTIONS
from tests.integration.test_triggers import KEY_HEADER, deliver, job, queue_message, take
from triggers.runtime import Runtime, reset_runtime, runtime

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
FINISHED = {"completed", "completed_with_errors", "failed", "cancelled"}


class Switchable(SpanProcessor):
    """Export finished spans while on: a process has one tracer provider, tests come and go."""

    def __init__(self) -> None:
        self.exporter, self.on = InMemorySpanExporter(), False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.exporter.export([span])


_PROCESSOR = Switchable()


@pytest.fixture
def spans(settings_env: dict[str, str]) -> Iterator[InMemorySpanExporter]:
    tracing.configure()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if not getattr(provider, "_lightsout_test_processor", False):
        provider.add_span_processor(_PROCESSOR)
        provider._lightsout_test_processor = True  # type: ignore[attr-defined]
    _PROCESSOR.exporter.clear()
    _PROCESSOR.on = True
    yield _PROCESSOR.exporter
    _PROCESSOR.on = False


@pytest.fixture
def rt(spans: InMemorySpanExporter) -> Iterator[Runtime]:
    reset_runtime()
    yield runtime()
    reset_runtime()


def post(job_type: str, params: dict[str, Any]) -> dict[str, Any]:
    request = func.HttpRequest(
        method="POST",
        url=f"http://localhost/api/jobs/{job_type}",
        headers={"content-type": "application/json", "traceparent": PARENT, KEY_HEADER: TEST_KEY},
        params={},
        route_params={"job_type": job_type},
        body=json.dumps(params).encode(),
    )
    response = FUNCTIONS["submit_job"].get_user_function()(request)
    assert response.status_code == 202, response.get_body()
    body: dict[str, Any] = json.loads(response.get_body())
    return body


def run_to_the_end(connection: str, queues: QueueNames, job_id: str) -> list[str]:
    """Deliver every message of both queues until the job ends; return the message texts."""
    texts: list[str] = []
    deadline = time.monotonic() + 120
    while job(job_id).status.value not in FINISHED:
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        batch = [("jobs_queue", t) for t in take(connection, queues.jobs)]
        batch += [("tasks_queue", t) for t in take(connection, queues.tasks)]
        for name, text in batch:
            deliver(name, queue_message(text))
        texts += [text for _, text in batch]
        if not batch:
            time.sleep(0.2)  # a retry is scheduled with a delay
    return texts


def test_one_job_is_one_trace_from_the_post_to_its_last_task(
    rt: Runtime, spans: InMemorySpanExporter, settings_env: dict[str, str], queue_names: QueueNames
) -> None:
    params = {"tasks": 3, "stages": 2, "flaky_task_indices": [1]}
    job_id = str(post("noop_fanout", params)["job_id"])
    texts = run_to_the_end(settings_env["AzureWebJobsStorage"], queue_names, job_id)

    assert job(job_id).status.value == "completed"
    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    assert {format(s.context.trace_id, "032x") for s in finished} == {TRACE_ID}
    # Task 1 of each stage fails its first attempt: (3 + 1) task runs per stage.
    assert names.count("task run") == 8
    for name in ("POST /api/jobs/{job_type}", "submit"):
        assert names.count(name) == 1, names
    for name in ("stage build", "dispatch", "fan-in"):
        assert names.count(name) == 2, names
    runs = [s for s in finished if s.name == "task run"]
    retried = [_attr(s, "task_id") for s in runs if _attr(s, "attempt") == 2]
    assert retried == [f"{job_id}-s1-t1", f"{job_id}-s2-t1"]
    # Every span hangs from another span of the trace, except the POST (from the caller).
    ids = {s.context.span_id for s in finished}
    roots = [s.name for s in finished if s.parent is None or s.parent.span_id not in ids]
    assert roots == ["POST /api/jobs/{job_type}"]
    # Every message carried the trace: stage 1's job message (the process that ends stage 1
    # builds stage 2 itself), 2 task messages (3 tasks each), 2 retries.
    parents = [_traceparent(text) for text in texts]
    assert len(parents) == 5 and all(p and p.split("-")[1] == TRACE_ID for p in parents)


def _attr(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(f"lightsout.{name}")


def _traceparent(text: str) -> str | None:
    body = json.loads(text)
    model = TaskQueueMessage if "task_ids" in body else JobQueueMessage
    return model.model_validate(body).traceparent


def test_postgres_sees_the_trace_of_each_transaction(
    spans: InMemorySpanExporter, database_url: str
) -> None:
    name = "SELECT current_setting('application_name') AS name"
    with psycopg.connect(database_url, cursor_factory=TracedCursor) as conn:
        with tracing.span("a test"):
            parent = current_traceparent()
            first, second = (str(conn.execute(name).fetchone()) for _ in range(2))
        conn.commit()
        after = str(conn.execute(name).fetchone())
        conn.commit()
    assert parent is not None
    # Every statement of the traced transaction runs under the trace; the next one does not.
    assert parent in first and parent in second
    assert parent not in after
    # The statement text is left alone, so psycopg can still prepare it.
    autocommit = psycopg.connect(database_url, autocommit=True, cursor_factory=TracedCursor)
    with autocommit as conn, tracing.span("autocommit"):
        text = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert text is not None and str(text[0]).startswith("SELECT query")


def test_an_operators_retry_sends_the_tasks_again_in_the_callers_trace(
    rt: Runtime, settings_env: dict[str, str], queue_names: QueueNames
) -> None:
    job_id = str(post("noop_fanout", {"tasks": 2, "fail_task_indices": [1]})["job_id"])
    run_to_the_end(settings_env["AzureWebJobsStorage"], queue_names, job_id)
    assert job(job_id).status.value == "failed"
    retry_trace = "0af7651916cd43dd8448eb211c80319c"
    request = func.HttpRequest(
        method="POST",
        url=f"http://localhost/api/jobs/{job_id}/retry",
        headers={"traceparent": f"00-{retry_trace}-b7ad6b7169203331-01", KEY_HEADER: TEST_KEY},
        params={},
        route_params={"job_id": job_id},
        body=b"",
    )
    response = FUNCTIONS["retry_job"].get_user_function()(request)
    assert response.status_code == 202, response.get_body()
    sent = take(settings_env["AzureWebJobsStorage"], queue_names.tasks)
    assert [TaskQueueMessage.model_validate_json(t).task_ids for t in sent] == [[f"{job_id}-s1-t1"]]
    assert [str(_traceparent(t)).split("-")[1] for t in sent] == [retry_trace]
