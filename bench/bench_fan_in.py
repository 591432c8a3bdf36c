"""Completions/s of complete_task_and_check_stage from 8 connections (median of 3):
10,000 tasks of one stage (worst contention), and 10,000 tasks spread over 100 jobs.

Run: .venv/bin/python -m bench.bench_fan_in   (DATABASE_URL, default the local server)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import threading
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bench.bench_create_stage import DEFAULT_DSN, scratch_schema

Conn = psycopg.Connection[dict[str, Any]]


def connect(dsn: str, schema: str, synchronous_commit: bool) -> Conn:
    conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    if not synchronous_commit:
        conn.execute("SET synchronous_commit TO off")
    return conn


def create_stages(conn: Conn, label: str, jobs: int, tasks: int) -> list[tuple[str, int]]:
    """Create `jobs` one-stage jobs of `tasks` claimed tasks; return (task_id, attempt) pairs."""
    work: list[tuple[str, int]] = []
    for n in range(jobs):
        job = hashlib.sha256(f"{label}-{n}".encode()).hexdigest()
        with conn.transaction():
            conn.execute("SELECT submit_job(%s, 'bench', '{}', ARRAY['one'])", (job,))
            conn.execute("SELECT start_stage(%s, 1, %s)", (job, tasks))
            conn.execute(
                "INSERT INTO tasks (task_id, job_id, stage, task_index, task_type)"
                " SELECT %(job)s || '-s1-t' || i, %(job)s, 1, i, 'noop'"
                " FROM generate_series(0, %(n)s - 1) AS i",
                {"job": job, "n": tasks},
            )
        ids = [f"{job}-s1-t{i}" for i in range(tasks)]
        rows = conn.execute("SELECT task_id, attempt FROM claim_tasks(%s, 'bench')", (ids,))
        work += [(str(r["task_id"]), int(r["attempt"])) for r in rows.fetchall()]
    random.Random(label).shuffle(work)
    return work


def complete_all(
    conns: list[Conn], work: list[tuple[str, int]], batch: int = 1
) -> tuple[float, int]:
    """Complete the work from one thread per connection; return (seconds, lasts seen).

    With batch > 1 each call is complete_tasks_and_check_stage over `batch` tasks, as the
    task runner group-commits the tasks of one message.
    """
    barrier = threading.Barrier(len(conns) + 1)
    lasts = [0] * len(conns)

    def worker(n: int) -> None:
        conn = conns[n]
        share = work[n :: len(conns)]
        barrier.wait()
        if batch == 1:
            for task_id, attempt in share:
                row = conn.execute(
                    "SELECT is_last_task FROM complete_task_and_check_stage(%s, %s, 'completed')",
                    (task_id, attempt),
                ).fetchone()
                lasts[n] += bool(row and row["is_last_task"])
            return
        share.sort()  # the runner's order: fan-in locks are taken in task_id order
        for i in range(0, len(share), batch):
            chunk = share[i : i + batch]
            rows = conn.execute(
                "SELECT is_last_task FROM complete_tasks_and_check_stage"
                "(%s, %s, %s, %s::jsonb[], %s::jsonb[])",
                (
                    [t for t, _ in chunk],
                    [a for _, a in chunk],
                    ["completed"] * len(chunk),
                    [None] * len(chunk),
                    [None] * len(chunk),
                ),
            ).fetchall()
            lasts[n] += sum(bool(r["is_last_task"]) for r in rows)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(conns))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sum(lasts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="SET synchronous_commit TO off on the racing connections (shows the WAL flush cost)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="completions per call (group commit), as 25 tasks per message",
    )
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    commit = "synchronous_commit off" if args.async_commit else "synchronous_commit as configured"
    print(
        f"fan-in: {args.tasks} completions from {args.connections} connections,"
        f" {args.batch} per call; {commit}; {dsn}"
    )
    print(f"{'layout':>22} {'median/s':>9} {'min/s':>7} {'max/s':>7}")
    with scratch_schema(dsn) as schema:
        setup = connect(dsn, schema, True)
        conns = [connect(dsn, schema, not args.async_commit) for _ in range(args.connections)]
        for jobs in (1, 100):
            rates = []
            for run in range(args.runs):
                work = create_stages(setup, f"fan-{jobs}-{run}", jobs, args.tasks // jobs)
                seconds, lasts = complete_all(conns, work, args.batch)
                assert lasts == jobs, f"{lasts} lasts for {jobs} stages"
                rates.append(len(work) / seconds)
            layout = "1 stage" if jobs == 1 else f"{jobs} jobs x {args.tasks // jobs} tasks"
            print(
                f"{layout:>22} {statistics.median(rates):>9,.0f}"
                f" {min(rates):>7,.0f} {max(rates):>7,.0f}"
            )
        for conn in [setup, *conns]:
            conn.close()


if __name__ == "__main__":
    main()
