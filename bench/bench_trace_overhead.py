"""What tracing costs: a span, and naming the trace in each PostgreSQL transaction.

Prints the median of --runs rounds of --n one-statement transactions, each committed, on a
plain psycopg cursor, on the engine's TracedCursor outside any span, and inside a span
(which adds the transaction-local application_name); and the cost of one span with no
exporter. Needs only DATABASE_URL; it creates nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psycopg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from repositories.tracecontext import TracedCursor

QUERY = "SELECT relname FROM pg_class WHERE relname = %s"


def per_transaction(
    dsn: str, cursor: type[psycopg.Cursor[tuple[object, ...]]], in_span: bool, n: int
) -> float:
    tracer = trace.get_tracer("bench")
    with psycopg.connect(dsn, cursor_factory=cursor) as conn:
        started = time.perf_counter()
        for _ in range(n):
            if in_span:
                with tracer.start_as_current_span("bench"):
                    conn.execute(QUERY, ("pg_class",)).fetchall()
                    conn.commit()
            else:
                conn.execute(QUERY, ("pg_class",)).fetchall()
                conn.commit()
        return (time.perf_counter() - started) / n * 1e6


def span_cost(n: int) -> float:
    tracer = trace.get_tracer("bench")
    started = time.perf_counter()
    for _ in range(n):
        with tracer.start_as_current_span("bench"):
            pass
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="transactions per round")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    trace.set_tracer_provider(TracerProvider())
    cases = {
        "plain cursor": (psycopg.Cursor, False),
        "TracedCursor, no span": (TracedCursor, False),
        "TracedCursor, in a span": (TracedCursor, True),
    }
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved: the machine's load drifts
        for name, (cursor, in_span) in cases.items():
            rounds[name].append(per_transaction(dsn, cursor, in_span, args.n))
    for name, values in rounds.items():
        print(f"{name:<26} {statistics.median(values):7.0f} us per transaction")
    print(f"{'one span, no exporter':<26} {span_cost(20 * args.n):7.1f} us")


if __name__ == "__main__":
    main()
