"""Time TaskRepository.start_stage for stages of 1k, 10k and 100k tasks (median of 3).

Run: .venv/bin/python -m bench.bench_create_stage   (DATABASE_URL, default the local server)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from repositories.db import open_pool
from repositories.jobs import JobRepository
from repositories.migrations import migrate
from repositories.tasks import TaskRepository
from schemas.ids import JobId
from schemas.settings import Settings
from schemas.work import NewTask

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch_schema(dsn: str) -> Iterator[str]:
    """Migrate a schema of its own for the run and drop it afterwards."""
    schema = f"bench_{secrets.token_hex(4)}"
    migrate(dsn, schema)
    try:
        yield schema
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def bench_settings(dsn: str, schema: str, pool_size: int = 2) -> Settings:
    # The storage connection is required by Settings but unused here.
    return Settings.model_validate(
        {
            "DATABASE_URL": dsn,
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "LIGHTSOUT_SCHEMA": schema,
            "LIGHTSOUT_POOL_MIN_SIZE": pool_size,
            "LIGHTSOUT_POOL_MAX_SIZE": pool_size,
        }
    )


def time_stage(jobs: JobRepository, tasks: TaskRepository, size: int, run: int) -> float:
    """Return the seconds one start_stage call takes to create `size` tasks."""
    job = JobId(hashlib.sha256(f"create-{size}-{run}".encode()).hexdigest())
    jobs.submit(job, "bench", {"tasks": size}, ["one"])
    new_tasks = [NewTask("noop", {"index": i, "payload": "x" * 16}) for i in range(size)]
    started = time.perf_counter()
    assert tasks.start_stage(job, 1, new_tasks)
    elapsed = time.perf_counter() - started
    assert jobs.stage(job, 1).remaining == size
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    print(f"start_stage (start_stage() + COPY of the task rows, one transaction); {dsn}")
    print(f"{'tasks':>8} {'median s':>9} {'min s':>7} {'max s':>7} {'rows/s':>9}")
    with scratch_schema(dsn) as schema, open_pool(bench_settings(dsn, schema)) as pool:
        jobs, tasks = JobRepository(pool), TaskRepository(pool)
        for size in args.sizes:
            times = [time_stage(jobs, tasks, size, run) for run in range(args.runs)]
            median = statistics.median(times)
            print(
                f"{size:>8} {median:>9.3f} {min(times):>7.3f} {max(times):>7.3f}"
                f" {size / median:>9,.0f}"
            )


if __name__ == "__main__":
    main()
