"""OpenTelemetry spans of the engine, and where they are exported.

One job is one trace: the HTTP request's `traceparent` (or a new root) is the parent of the
submit span; every queue message carries the trace of the span that sent it (stamped by
the queue repository), and its trigger continues that trace. Spans: submit, stage build,
dispatch, each task run, each fan-in, and the processing of each queue message.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind

from controllers.logcontext import log_ids
from schemas.messages import JobQueueMessage, TaskQueueMessage
from schemas.records import Claim

P = ParamSpec("P")
R = TypeVar("R")
SpanValue = str | int | float | bool
ATTRIBUTES = ("job_id", "job_type", "stage", "task_id", "attempt")
_tracer = trace.get_tracer("lightsout")
_CONFIGURING = threading.Lock()


def span(name: str, **attributes: SpanValue | None) -> AbstractContextManager[Span]:
    """Run the block in a span, a child of the current one, with lightsout.* attributes."""
    return continued(name, None, SpanKind.INTERNAL, attributes)


def continued(
    name: str, parent: str | None, kind: SpanKind, attributes: Mapping[str, SpanValue | None]
) -> AbstractContextManager[Span]:
    """Run the block in a span, a child of `parent` (a traceparent) or of the current span."""
    context = propagate.extract({"traceparent": parent}) if parent else None
    attrs = {f"lightsout.{k}": v for k, v in attributes.items() if v is not None}
    # What start_as_current_span does, without its two generator layers (a submission has
    # two spans, and no exporter may be configured at all).
    started = _tracer.start_span(name, context=context, kind=kind, attributes=attrs)
    return trace.use_span(started, end_on_exit=True)


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function in a span named `name`, with its job, stage and task ids as attributes."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        # Found once: binding the signature at each call cost a submission more than its span.
        places = _id_places(inspect.signature(fn))

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with continued(name, None, SpanKind.INTERNAL, _attributes(places, args, kwargs)):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def _id_places(signature: inspect.Signature) -> list[tuple[str, int | None]]:
    """Each id parameter's name and position (None when it can only be passed by keyword)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        (p.name, n if p.kind in positional else None)
        for n, p in enumerate(signature.parameters.values())
        if p.name in ATTRIBUTES
    ]


def _attributes(
    places: list[tuple[str, int | None]], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, SpanValue]:
    """The ids passed in this call (defaults left out), by name."""
    found: dict[str, SpanValue] = {}
    for key, n in places:
        value = args[n] if n is not None and n < len(args) else kwargs.get(key)
        if isinstance(value, str | int):
            found[key] = value
    return found


@contextmanager
def message_span(queue: str, msg: JobQueueMessage | TaskQueueMessage) -> Iterator[Span]:
    """Continue the message's trace while it is processed, with its ids on every log line."""
    tasks = len(msg.task_ids) if isinstance(msg, TaskQueueMessage) else None
    with (
        continued(
            f"process {queue}",
            msg.traceparent,
            SpanKind.CONSUMER,
            {"job_id": msg.job_id, "stage": msg.stage, "tasks": tasks},
        ) as s,
        log_ids(job_id=msg.job_id, stage=msg.stage),
    ):
        yield s


class TaskRun(Protocol):
    def __call__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...


def in_task_span(claim: Claim) -> TaskRun:
    """Return a runner of `fn(*args)` in a copy of the current context and the task's span.

    For a thread pool: a new thread starts with an empty context, which would cut the
    task's span off the message's trace and its log lines off the message's ids.
    """
    context = contextvars.copy_context()

    def run(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        def in_span() -> R:
            with task_span(claim):
                return fn(*args, **kwargs)

        return context.run(in_span)

    return run


@contextmanager
def task_span(claim: Claim) -> Iterator[Span]:
    """Run one attempt of a task in its span, with its ids on every log line."""
    ids: dict[str, str | int] = {
        "job_id": claim.job_id,
        "stage": claim.stage,
        "task_id": claim.task_id,
        "attempt": claim.attempt,
    }
    with continued("task run", None, SpanKind.INTERNAL, ids) as s, log_ids(**ids):
        yield s


def configure(environ: Mapping[str, str] = os.environ) -> None:
    """Set up the tracer provider once: exporters only where the environment names one.

    APPLICATIONINSIGHTS_CONNECTION_STRING exports to Azure Monitor, OTEL_EXPORTER_OTLP_ENDPOINT
    over OTLP/HTTP (both if both are set). With neither, spans still give every log line
    and message its trace id, and go nowhere.
    """
    with _CONFIGURING:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return  # configured already (by us, a test, or the platform)
        processors: list[SpanProcessor] = []
        if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        if environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(span_processors=processors)
            return
        service = environ.get("OTEL_SERVICE_NAME", "lightsout")
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        for processor in processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
