"""The cost of naming the schema in every transaction (`SET LOCAL search_path`), against a
schema-qualified statement that needs no SET, directly and through PgBouncer.

Each transaction reads one job row by key, the smallest real statement. Microseconds per
transaction, median of 3 runs of 2,000 transactions on one connection.

Run: .venv/bin/python -m bench.bench_search_path   (DATABASE_URL, default the local server)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from bench.bench_create_stage import DEFAULT_DSN, scratch_schema
from lightsout.pgbouncer import start_pgbouncer
from repositories.db import set_search_path

RUN_DIR = Path(__file__).resolve().parents[1] / ".run"
Conn = psycopg.Connection[tuple[object, ...]]
JOB_ID = "0" * 64


def with_set_local(schema: str) -> Callable[[Conn], None]:
    def run(conn: Conn) -> None:
        with conn.transaction():
            set_search_path(conn, schema)
            conn.execute("SELECT job_id FROM jobs WHERE job_id = %s", (JOB_ID,)).fetchall()

    return run


def qualified(schema: str) -> Callable[[Conn], None]:
    query = sql.SQL("SELECT job_id FROM {}.jobs WHERE job_id = %s").format(sql.Identifier(schema))

    def run(conn: Conn) -> None:
        with conn.transaction():
            conn.execute(query, (JOB_ID,)).fetchall()

    return run


def per_transaction_us(dsn: str, transaction: Callable[[Conn], None], count: int) -> float:
    with psycopg.connect(dsn, prepare_threshold=None) as conn:
        for _ in range(100):  # warm up: PgBouncer's server connections, caches
            transaction(conn)
        started = time.perf_counter()
        for _ in range(count):
            transaction(conn)
        return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    bouncer = start_pgbouncer(RUN_DIR, dsn)
    try:
        with scratch_schema(dsn) as schema:
            print(f"{'route':<10} {'statement':<28} {'us/transaction':>15}")
            for route, url in (("direct", dsn), ("pgbouncer", bouncer.url(dsn))):
                figures = {}
                for name, make in (
                    ("SET LOCAL + unqualified", with_set_local),
                    ("schema-qualified, no SET", qualified),
                ):
                    runs = [
                        per_transaction_us(url, make(schema), args.transactions)
                        for _ in range(args.runs)
                    ]
                    figures[name] = statistics.median(runs)
                    print(f"{route:<10} {name:<28} {figures[name]:>15.0f}")
                extra = figures["SET LOCAL + unqualified"] - figures["schema-qualified, no SET"]
                print(f"{route:<10} {'extra of the SET LOCAL':<28} {extra:>15.0f}")
    finally:
        bouncer.stop()


if __name__ == "__main__":
    main()
