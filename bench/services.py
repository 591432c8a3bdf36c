"""What the bench runs against: Azurite, a scratch database, and local hosts it starts."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from lightsout.client import ApiClient
from lightsout.devservices import AzuriteService, PostgresService, free_port
from lightsout.keys import new_key

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
LOGS = RUN_DIR / "bench-logs"
# The hosts run with authentication on, as in the tests: one key of this run, in
# LIGHTSOUT_API_KEYS, sent by every client of the bench.
BENCH_KEY, BENCH_KEYS = new_key("bench", ["jobs:read", "jobs:submit"])


@dataclass(frozen=True)
class Services:
    postgres: PostgresService
    azurite: AzuriteService


def host_env(
    dsn: str, storage: str, tag: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the environment of every host the bench starts (the one place to add a setting).

    Authentication is on: the hosts accept the bench's key (BENCH_KEY) and only it.
    """
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "AzureWebJobsStorage": storage,
        "LIGHTSOUT_JOBS_QUEUE": f"b{tag}-jobs",
        "LIGHTSOUT_TASKS_QUEUE": f"b{tag}-tasks",
        "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
        "LIGHTSOUT_AUTH": "on",
        "LIGHTSOUT_API_KEYS": BENCH_KEYS,
        "LIGHTSOUT_POOL_MAX_SIZE": "20",
        "PYTHONUNBUFFERED": "1",
    }
    return {**env, **dict(extra or {})}


@contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    """Create an empty database for one bench row and drop it afterwards."""
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@dataclass
class Host:
    proc: subprocess.Popen[bytes]
    url: str

    def peak_rss_mb(self) -> float:
        """The host's peak resident memory so far (VmHWM), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextmanager
def hosts(count: int, env: Mapping[str, str], args: tuple[str, ...] = ()) -> Iterator[list[Host]]:
    """Start `count` local hosts with `env` and wait until each is healthy."""
    LOGS.mkdir(parents=True, exist_ok=True)
    started: list[Host] = []
    try:
        for n in range(count):
            port = free_port()
            log = (LOGS / f"host-{n}.log").open("ab")
            cmd = [sys.executable, "-m", "lightsout", "host", "--port", str(port), *args]
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**env, "LIGHTSOUT_WORKER_NAME": f"bench-{n}"},
                stdout=log,
                stderr=log,
            )
            started.append(Host(proc, f"http://127.0.0.1:{port}"))
        for host in started:
            wait_healthy(host)
        yield started
    finally:
        for host in started:
            host.proc.send_signal(signal.SIGTERM)
        for host in started:
            try:
                host.proc.wait(60)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait()


def wait_healthy(host: Host, timeout_s: float = 90) -> None:
    client, deadline = ApiClient(host.url, 5), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if host.proc.poll() is not None:
            raise RuntimeError(f"host at {host.url} exited with {host.proc.returncode}")
        try:
            if client.request("GET", "health")[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"host at {host.url} did not become healthy")


def wait_job(url: str, job_id: str, timeout_s: float) -> str:
    """Poll the job until it ends; return its status."""
    client, deadline = ApiClient(url, key=BENCH_KEY), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.job(job_id)["status"])
        if status not in ("queued", "processing"):
            return status
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish in {timeout_s:.0f} s")
