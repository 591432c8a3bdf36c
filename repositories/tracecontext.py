"""The current trace as a W3C traceparent, for queue messages and SQL statements.

Storage queues have no headers and PostgreSQL has no trace context, so the engine carries
the trace itself: in the messages' `traceparent` field, and as a leading SQL comment
(`/* traceparent='…' */`, the sqlcommenter form) that pg_stat_activity and the server log
show next to each statement.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from opentelemetry import propagate, trace
from psycopg import sql
from psycopg.abc import Params, Query
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
Row = TypeVar("Row")


def current_traceparent() -> str | None:
    """Return the traceparent of the current span, or None outside any trace."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def stamped(msg: M) -> M:
    """Return the message carrying the current trace (unchanged outside any trace)."""
    parent = current_traceparent()
    if parent is None or getattr(msg, "traceparent", parent) == parent:
        return msg
    return msg.model_copy(update={"traceparent": parent})


def commented(query: Query) -> Query:
    """Return the statement with the current trace in a leading comment."""
    parent = current_traceparent()
    if parent is None:
        return query
    comment = f"/* traceparent='{parent}' */ "
    if isinstance(query, str):
        return comment + query
    if isinstance(query, bytes):
        return comment.encode() + query
    if isinstance(query, sql.Composable):
        return sql.SQL(comment) + query
    return query  # a template string: left as it is (the engine sends none)


class TracedCursor(psycopg.Cursor[Row]):
    """A cursor that names the current trace in every statement it sends."""

    # psycopg overloads execute() for template strings; one signature serves both here.
    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> TracedCursor[Row]:
        super().execute(commented(query), params, prepare=prepare, binary=binary)  # type: ignore[arg-type, misc]
        return self

    def executemany(self, query: Query, params_seq: Any, *, returning: bool = False) -> None:
        super().executemany(commented(query), params_seq, returning=returning)
