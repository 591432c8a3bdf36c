"""The host's log lines: text by default, one JSON object per line with LIGHTSOUT_LOG_FORMAT=json.

A JSON line carries the record's time, level, logger and message, the invocation id of the
function call it was made in, and every other attribute the app put on the record (the
engine adds job_id, stage, task_id, attempt, trace_id): the host needs to know none of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_INVOCATION: ContextVar[str | None] = ContextVar("lightsout_invocation_id", default=None)
# What every LogRecord has: anything else on a record is an id or extra worth showing.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def invocation(invocation_id: str) -> Iterator[None]:
    """Name the function invocation that the records made inside the block belong to."""
    token = _INVOCATION.set(invocation_id)
    try:
        yield
    finally:
        _INVOCATION.reset(token)


class InvocationFilter(logging.Filter):
    """Put the current invocation id on each record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        invocation_id = _INVOCATION.get()
        if invocation_id is not None and not hasattr(record, "invocation_id"):
            record.invocation_id = invocation_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks included as a string)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str) -> None:
    """Log to stderr at INFO in `log_format` (text or json), unless logging is set up already."""
    if log_format not in ("text", "json"):
        raise ValueError(f"LIGHTSOUT_LOG_FORMAT must be text or json, not {log_format!r}")
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT))
    handler.addFilter(InvocationFilter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)  # it logs each request at INFO
