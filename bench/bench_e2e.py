"""End-to-end throughput: noop_fanout through real Azurite, PostgreSQL and local hosts.

Prints tasks/s from submission to completion (median of --runs), for each host count.
Run: .venv/bin/python -m bench.bench_e2e [--tasks 2000] [--stages 3] [--hosts 1 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from lightsout.client import ApiClient
from lightsout.devservices import ensure_azurite, ensure_postgres, free_port
from lightsout.keys import new_key

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
KEY, KEYS_ENTRY = new_key("bench", ["jobs:read", "jobs:submit"])  # the hosts run with auth on


@contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def hosts(count: int, env: dict[str, str]) -> Iterator[list[str]]:
    procs, urls = [], []
    logs = RUN_DIR / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        port = free_port()
        log = (logs / f"host-{n}.log").open("wb")
        cmd = [sys.executable, "-m", "lightsout", "host", "--port", str(port)]
        host_env = {**env, "LIGHTSOUT_WORKER_NAME": f"bench-{n}"}
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=host_env, stdout=log, stderr=log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_healthy(url)
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)


def wait_healthy(url: str, timeout_s: float = 60) -> None:
    client, deadline = ApiClient(url, 5, key=KEY), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.request("GET", "health")[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"host at {url} did not become healthy")


def run_once(url: str, tasks: int, stages: int, seed: int) -> float:
    client = ApiClient(url, key=KEY)
    started = time.monotonic()
    # A distinct sleep_ms of 0 would repeat the job id: vary an inert list instead.
    job = client.submit(
        "noop_fanout", {"tasks": tasks, "stages": stages, "fail_task_indices": [tasks + seed]}
    )
    while True:
        status = client.job(str(job["job_id"]))["status"]
        if status not in ("queued", "processing"):
            break
        time.sleep(0.1)
    if status != "completed":
        raise RuntimeError(f"job ended {status}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    postgres, azurite = ensure_postgres(RUN_DIR), ensure_azurite(RUN_DIR)

    try:
        with scratch_database(postgres.dsn) as dsn:
            base = {
                **os.environ,
                "DATABASE_URL": dsn,
                "AzureWebJobsStorage": azurite.connection_string,
                "LIGHTSOUT_API_KEYS": KEYS_ENTRY,
                "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
            }
            for count in args.hosts:
                tag = secrets.token_hex(3)
                env = {
                    **base,
                    "LIGHTSOUT_JOBS_QUEUE": f"b{tag}-jobs",
                    "LIGHTSOUT_TASKS_QUEUE": f"b{tag}-tasks",
                }
                with hosts(count, env) as urls:
                    times = [
                        run_once(urls[0], args.tasks, args.stages, count * 1000 + seed)
                        for seed in range(args.runs)
                    ]
                total = args.tasks * args.stages
                median = statistics.median(times)
                print(
                    f"hosts={count} tasks={args.tasks} stages={args.stages}: "
                    f"median {median:.2f} s, {total / median:.0f} tasks/s "
                    f"(runs: {', '.join(f'{t:.2f}' for t in times)})",
                    flush=True,
                )
    finally:
        azurite.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
