"""The current trace as a W3C traceparent, for queue messages and PostgreSQL transactions.

Storage queues have no headers and PostgreSQL has no trace context, so the engine carries
the trace itself: in the messages' `traceparent` field, and as each transaction's
`application_name`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from opentelemetry import propagate, trace
from psycopg.abc import Params, Query
from psycopg.pq import TransactionStatus
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


SET_TRACE = "SELECT set_config('application_name', %s, true)"


class TracedCursor(psycopg.Cursor[Row]):
    """A cursor that names the current trace in each transaction it starts.

    The first statement of a transaction inside a span is preceded by a transaction-local
    `application_name` = the traceparent, which pg_stat_activity and the server log
    (`%a` in log_line_prefix) show for every statement of the transaction. The statements
    themselves keep their text, so psycopg still prepares the frequent ones. Autocommit
    connections are left alone: a transaction-local setting would not outlive its statement.
    """

    # psycopg overloads execute() for template strings; one signature serves both here.
    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> TracedCursor[Row]:
        self._name_trace()
        super().execute(query, params, prepare=prepare, binary=binary)  # type: ignore[arg-type, misc]
        return self

    def executemany(self, query: Query, params_seq: Any, *, returning: bool = False) -> None:
        self._name_trace()
        super().executemany(query, params_seq, returning=returning)

    def _name_trace(self) -> None:
        conn = self.connection
        if conn.autocommit or conn.info.transaction_status is not TransactionStatus.IDLE:
            return
        parent = current_traceparent()
        if parent is not None:
            super().execute(SET_TRACE, (parent,))
