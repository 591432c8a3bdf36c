"""The ids a log line is about (job, stage, task, attempt, trace), on every record.

The triggers and the task runner set them where they become known; a log record factory
copies them onto every record made in that context, so a structured formatter (the local
host's `LIGHTSOUT_LOG_FORMAT=json`, or Application Insights' custom dimensions) shows them
without any call site passing `extra=`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace

_IDS: ContextVar[Mapping[str, object] | None] = ContextVar("lightsout_log_ids", default=None)
_INSTALLING = threading.Lock()
_installed = False


@contextmanager
def log_ids(**ids: object) -> Iterator[None]:
    """Add ids (None values are left out) to the records made inside the block."""
    token = _IDS.set({**(_IDS.get() or {}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _IDS.reset(token)


def current_ids() -> dict[str, object]:
    """Return the ids of the current context, with the trace and span ids when in a span."""
    ids = dict(_IDS.get() or {})
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        ids["trace_id"] = format(span.trace_id, "032x")
        ids["span_id"] = format(span.span_id, "016x")
    return ids


def install() -> None:
    """Put the current ids on every log record from now on (idempotent)."""
    global _installed
    with _INSTALLING:
        if _installed:
            return
        make = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = make(*args, **kwargs)
            for key, value in current_ids().items():
                setattr(record, key, value)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
