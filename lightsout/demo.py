"""The README's demo: two jobs through a local host, with their progress and results.

Uses DATABASE_URL and AzureWebJobsStorage when they answer, else starts a throwaway
PostgreSQL cluster and Azurite under .run/. Everything it starts or creates (services,
the host, its schema and queues) is stopped or removed again, also on Ctrl-C or an error.
Exits 0 only if both jobs completed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psycopg
from azure.core.exceptions import AzureError
from azure.storage.queue import QueueServiceClient
from psycopg import sql

from lightsout.client import ApiClient, ApiError
from lightsout.devservices import (
    AzuriteService,
    PostgresService,
    ensure_azurite,
    ensure_postgres,
    free_port,
    queue_endpoint,
)
from lightsout.keys import new_key
from lightsout.progress import watch
from repositories.migrations import migrate
from schemas.exceptions import LightsoutError
from schemas.records import Json

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = REPO_ROOT / ".run"
JOBS: list[tuple[str, dict[str, Any]]] = [
    ("hello_world", {"n": 10}),
    ("prime_count", {"limit": 500_000, "chunk_size": 25_000}),
]
READY_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 40.0  # the host gives running functions 30 s to finish
LOG_TAIL_LINES = 40


class DemoError(Exception):
    """The demo could not run."""


class LocalHost:
    """`python -m lightsout host` as a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, key: str) -> None:
        self.port, self.log_path = free_port(), log_path
        command = [sys.executable, "-m", "lightsout", "host", "--port", str(self.port)]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*command, "--no-migrate"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the host
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = ApiClient(self.url, key=key)

    def wait_ready(self) -> None:
        """Wait until /api/health answers 200, or raise DemoError with the host's log."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._healthy():
            if self.proc.poll() is not None:
                raise DemoError(f"the host exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the host is not healthy after {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.3)

    def _healthy(self) -> bool:
        try:
            return self.client.request("GET", "health")[0] == 200
        except ApiError:
            return False

    def stop(self) -> None:
        """SIGTERM the host (running functions finish), SIGKILL it if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


def say(text: str, out: TextIO = sys.stdout) -> None:
    out.write(f"demo: {text}\n")
    out.flush()


def start_postgres(stack: contextlib.ExitStack) -> PostgresService:
    service = ensure_postgres(RUN_DIR)
    stack.callback(service.stop)
    where = "DATABASE_URL" if service.kind == "external" else f"a throwaway {service.kind}"
    say(f"PostgreSQL: {where}")
    return service


def start_azurite(stack: contextlib.ExitStack) -> AzuriteService:
    service = ensure_azurite(RUN_DIR)
    stack.callback(service.stop)
    if service.location is None:
        say(f"Azurite: AzureWebJobsStorage ({queue_endpoint(service.connection_string)})")
    else:
        say(f"Azurite: started on 127.0.0.1:{service.port}, data in {service.location}")
    return service


def create_schema(stack: contextlib.ExitStack, dsn: str, schema: str) -> None:
    """Migrate a schema of the demo's own, dropped again at the end."""
    stack.callback(drop_schema, dsn, schema)
    version = max(migrate(dsn, schema), default=0)
    say(f"schema {schema} migrated to version {version}")


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def delete_queues(connection: str, prefix: str) -> None:
    """Delete the demo's queues (an Azurite started by the demo goes away with its data)."""
    service = QueueServiceClient.from_connection_string(connection)
    for queue in service.list_queues(name_starts_with=prefix):
        with contextlib.suppress(AzureError):
            service.delete_queue(queue.name)


def start_host(stack: contextlib.ExitStack, env: dict[str, str], key: str) -> LocalHost:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    host = LocalHost(env, RUN_DIR / "demo-host.log", key)
    stack.callback(host.stop)
    say(f"starting a local host on {host.url} (log: {host.log_path})")
    host.wait_ready()
    return host


def run_jobs(host: LocalHost) -> list[Json]:
    """Submit every demo job, then follow each until it ends; return the finished jobs."""
    submitted = []
    for job_type, params in JOBS:
        answer = host.client.submit(job_type, params)
        state = "submitted" if answer["created"] else "already known"
        say(f"{state} {job_type} {params}: job {answer['job_id']}")
        submitted.append((job_type, str(answer["job_id"])))
    finished = []
    for job_type, job_id in submitted:
        say(f"{job_type}:")
        finished.append(watch(host.client, job_id, JOB_TIMEOUT_S, sys.stdout))
    return finished


def demo() -> int:
    run = f"demo{secrets.token_hex(3)}"
    with contextlib.ExitStack() as stack:
        postgres = start_postgres(stack)
        azurite = start_azurite(stack)
        create_schema(stack, postgres.dsn, f"lightsout_{run}")
        stack.callback(delete_queues, azurite.connection_string, run)
        # Authentication stays on: the demo makes a key of its own for this run.
        key, entry = new_key(run, ["jobs:read", "jobs:submit"])
        say(f"API key {run!r} made for this run (python -m lightsout keys new makes yours)")
        env = {
            **os.environ,
            "LIGHTSOUT_API_KEYS": entry,
            "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
            "DATABASE_URL": postgres.dsn,
            "AzureWebJobsStorage": azurite.connection_string,
            "LIGHTSOUT_SCHEMA": f"lightsout_{run}",
            "LIGHTSOUT_JOBS_QUEUE": f"{run}-jobs",
            "LIGHTSOUT_TASKS_QUEUE": f"{run}-tasks",
        }
        host = start_host(stack, env, key)
        try:
            jobs = run_jobs(host)
        except ApiError:
            say(f"the host's log:\n{host.log_tail()}", sys.stderr)
            raise
        say("stopping what the demo started")
    completed = [job["status"] == "completed" for job in jobs]
    for job, ok in zip(jobs, completed, strict=True):
        say(f"{job['job_type']}: {job['status']}{'' if ok else ' (expected completed)'}")
    return 0 if all(completed) else 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="demo: %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # stop what was started, as on Ctrl-C
    try:
        return demo()
    except KeyboardInterrupt:
        say("interrupted; everything the demo started has been stopped", sys.stderr)
        return 130
    except (DemoError, ApiError, LightsoutError, RuntimeError) as exc:
        say(f"failed: {exc}", sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
