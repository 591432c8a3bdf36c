"""The cost of the pause check each task message makes before its claim (sql/0004
hold_tasks_if_paused), against the claim it precedes, through the app's pool.

One job whose 25 tasks are not claimable (the job is queued), so neither call changes a
row: the fixed cost of a message. Microseconds per call, median of 3 runs of 1,000.

Run: .venv/bin/python -m bench.bench_pause_check   (DATABASE_URL, default the local server)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from bench.bench_create_stage import DEFAULT_DSN, bench_settings, scratch_schema
from repositories.db import open_pool
from repositories.jobs import JobRepository
from repositories.tasks import TaskRepository
from schemas.ids import JobId, make_task_id

JOB_ID = JobId("b" * 64)


def per_call_us(call: Callable[[], object], count: int, runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(count):
            call()
        timings.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=25, help="task ids in the message")
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    with scratch_schema(dsn) as schema:
        pool = open_pool(bench_settings(dsn, schema))
        try:
            JobRepository(pool).submit(JOB_ID, "bench", {}, ["one"])
            tasks = TaskRepository(pool)
            ids = [make_task_id(JOB_ID, 1, i) for i in range(args.tasks)]
            check = per_call_us(lambda: tasks.hold_if_paused(JOB_ID, ids), args.calls, args.runs)
            claim = per_call_us(lambda: tasks.claim(ids, "bench"), args.calls, args.runs)
        finally:
            pool.close()
    print(f"pause check, {args.tasks} task ids, not paused: {check:.0f} us per message")
    print(f"claim of the same ids (nothing claimable):   {claim:.0f} us per message")


if __name__ == "__main__":
    main()
