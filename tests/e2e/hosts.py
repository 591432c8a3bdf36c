"""Local hosts as subprocesses, and what the end-to-end tests ask of them over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psycopg
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient
from psycopg.rows import dict_row

from lightsout.client import FINISHED, ApiClient, ApiError
from lightsout.devservices import free_port
from schemas.records import Json
from tests.fixtures_services import TEST_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 40.0  # the host's own grace period is 30 s
T = TypeVar("T")


class HostProcess:
    """`python -m lightsout host` serving the repository root on a free port."""

    def __init__(
        self, name: str, env: Mapping[str, str], log_dir: Path, args: Sequence[str] = ()
    ) -> None:
        self.name, self.port = name, free_port()
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-m", "lightsout", "host", "--port", str(self.port), *args]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**env, "LIGHTSOUT_WORKER_NAME": name, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest reaches the fixture, not the host
            )
        self.api = ApiClient(self.url, timeout_s=30, key=TEST_KEY)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Wait until /api/health answers 200: database reachable, queues created."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log}")
            try:
                if self.api.request("GET", "health")[0] == 200:
                    return
            except ApiError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not healthy after {START_TIMEOUT_S} s:\n{self.log}"
                )
            time.sleep(0.2)

    def terminate(self) -> int:
        """SIGTERM the host and wait for it to exit; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT_S} s") from None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def raw_request(
    base_url: str,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    key: str | None = TEST_KEY,
) -> tuple[int, Json]:
    """Send bytes as they are (ApiClient always sends valid JSON); return (status, JSON body).

    The test key goes as x-functions-key unless `key` is None; `headers` add to or replace it.
    """
    sent = {"Content-Type": "application/json", **({"x-functions-key": key} if key else {})}
    sent.update(headers or {})
    request = urllib.request.Request(f"{base_url}/api/{path}", data, sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def finished(api: ApiClient, job_id: str, timeout: float = 60) -> Json:
    """Wait until the job has finished, whatever its status; return it."""

    def check() -> Json | None:
        job = api.job(job_id)
        return job if job["status"] in FINISHED else None

    return wait_for(check, timeout, f"job {job_id} to finish")


def rows(database_url: str, query: str, *params: object) -> list[Json]:
    """Run a query against the lightsout schema and return its rows."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET search_path TO lightsout")
        return conn.execute(query, params).fetchall()


def send_raw(connection: str, queue: str, text: str, *, encode: bool = True) -> None:
    """Put text on a queue as a foreign producer would: base64 (as the host expects) or not."""
    wire = base64.b64encode(text.encode()).decode() if encode else text
    QueueClient.from_connection_string(connection, queue).send_message(wire)


def peek(connection: str, queue: str) -> list[str]:
    """Raw texts of the visible messages of a queue (none when it does not exist)."""
    client = QueueClient.from_connection_string(connection, queue)
    try:
        return [str(m.content) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def queue_exists(connection: str, queue: str) -> bool:
    try:
        QueueClient.from_connection_string(connection, queue).get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True
