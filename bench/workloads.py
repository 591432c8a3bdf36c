"""The engine workloads the bench times, through the public HTTP API of local hosts."""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg

from bench.services import BENCH_KEY, wait_job
from lightsout.client import KEY_HEADER, ApiClient

JOB_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Run:
    seconds: float
    job_id: str


def fanout(url: str, tasks: int, stages: int, seed: str) -> Run:
    """Submit one noop_fanout job and wait for it; return its wall time from POST to done."""
    client = ApiClient(url, key=BENCH_KEY)
    started = time.monotonic()
    # Jobs are idempotent by their parameters: an inert, distinct list makes each run new.
    params = {
        "tasks": tasks,
        "stages": stages,
        "fail_task_indices": [tasks + abs(hash(seed)) % 10**6],
    }
    job = client.submit("noop_fanout", params)
    status = wait_job(url, str(job["job_id"]), JOB_TIMEOUT_S)
    if status != "completed":
        raise RuntimeError(f"noop_fanout {tasks}x{stages} ended {status}")
    return Run(time.monotonic() - started, str(job["job_id"]))


def transition_latencies(dsn: str, job_ids: list[str]) -> list[float]:
    """Seconds from the last task of stage k finished to the first of stage k+1 claimed."""
    query = (
        "WITH s AS (SELECT job_id, stage, max(finished_at) AS last_end,"
        " min(claimed_at) AS first_claim FROM lightsout.tasks WHERE job_id = ANY (%s)"
        " GROUP BY job_id, stage)"
        " SELECT extract(epoch FROM b.first_claim - a.last_end) AS gap"
        " FROM s a JOIN s b ON b.job_id = a.job_id AND b.stage = a.stage + 1"
    )
    with psycopg.connect(dsn) as conn:
        return [float(row[0]) for row in conn.execute(query, (job_ids,)).fetchall()]


@dataclass(frozen=True)
class Submissions:
    rate: float
    p50_ms: float
    p99_ms: float


def submissions(url: str, clients: int, per_client: int, tag: str) -> Submissions:
    """Distinct hello_world submissions from `clients` keep-alive threads; rate and latency."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        mine = []
        with _KeptAlive(url) as conn:
            for i in range(per_client):
                body = json.dumps({"n": 1, "name": f"{tag}-{n}-{i}"}).encode()
                started = time.monotonic()
                status = conn.post_json("/api/jobs/hello_world", body)
                mine.append(time.monotonic() - started)
                if status != 202:
                    with lock:
                        errors.append(str(status))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} submissions failed: {sorted(set(errors))}")
    ordered = sorted(latencies)
    return Submissions(
        len(ordered) / elapsed, 1000 * statistics.median(ordered), 1000 * percentile(ordered, 99)
    )


class _KeptAlive:
    """A lean HTTP/1.1 client on one kept-alive connection, for the submissions row.

    The load comes from the same two cores as the host, PostgreSQL and Azurite, so what the
    client spends is taken from what it measures. http.client spent 0.27 ms of CPU a
    request here (its answer's headers go through the email package); this spends 0.07 ms:
    the head is made once, and an answer is read as its status line, its headers up to the
    blank line and Content-Length bytes of body. What the host sends is the same either way.
    """

    def __init__(self, url: str) -> None:
        split = urlsplit(url)
        host, port = split.hostname or "127.0.0.1", split.port or 80
        self._sock = socket.create_connection((host, port), timeout=60)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._answers = self._sock.makefile("rb")
        self._head = (
            "POST {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"{KEY_HEADER}: {BENCH_KEY}\r\n"
            "Content-Length: {length}\r\n\r\n"
        )

    def post_json(self, path: str, body: bytes) -> int:
        """POST `body` and read the whole answer; return its status."""
        head = self._head.format(path=path, length=len(body)).encode()
        self._sock.sendall(head + body)
        status_line = self._answers.readline()
        if not status_line:
            raise ConnectionError("the host closed the connection")
        length = 0
        while (line := self._answers.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self._answers.read(length)
        return int(status_line.split()[1])

    def __enter__(self) -> _KeptAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._answers.close()
        self._sock.close()


def health_latencies(url: str, requests: int, keep_alive: bool) -> list[float]:
    """Seconds per GET /api/health, on one kept-alive connection or a new one each time."""
    split = urlsplit(url)
    conn: http.client.HTTPConnection | None = None
    took = []
    for _ in range(requests):
        if conn is None or not keep_alive:
            conn = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port, timeout=30)
        started = time.monotonic()
        conn.request("GET", "/api/health")
        conn.getresponse().read()
        took.append(time.monotonic() - started)
        if not keep_alive:
            conn.close()
    if conn is not None:
        conn.close()
    return sorted(took)


def percentile(ordered: list[float], pct: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def load_history(dsn: str, tasks: int, per_job: int = 10_000) -> None:
    """Bulk-load `tasks` finished tasks (in finished one-stage jobs) with generate_series."""
    jobs = max(1, tasks // per_job)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO lightsout")
        conn.execute(
            "INSERT INTO jobs (job_id, job_type, status, stage, total_stages, finished_at,"
            " dispatched_at, created_at, updated_at)"
            " SELECT encode(sha256(('hist' || j)::bytea), 'hex'), 'noop_fanout', 'completed',"
            " 1, 1, now() - interval '1 hour', now(), now() - interval '2 hours',"
            " now() - interval '1 hour' FROM generate_series(1, %s) j",
            (jobs,),
        )
        conn.execute(
            "INSERT INTO job_stages (job_id, stage, name, status, task_count, completed_count,"
            " started_at, finished_at) SELECT job_id, 1, 'noop_1', 'completed', %s, %s,"
            " created_at, finished_at FROM jobs WHERE job_type = 'noop_fanout'"
            " AND status = 'completed'",
            (per_job, per_job),
        )
        conn.execute(
            "INSERT INTO tasks (task_id, job_id, stage, task_index, task_type, status, result,"
            " attempt, claimed_by, claimed_at, dispatched_at, finished_at, created_at, updated_at)"
            " SELECT j.job_id || '-s1-t' || i, j.job_id, 1, i, 'noop_1', 'completed',"
            " '{\"attempt\": 1}', 1, 'history', j.created_at, j.created_at, j.finished_at,"
            " j.created_at, j.finished_at"
            " FROM jobs j CROSS JOIN generate_series(0, %s - 1) i WHERE j.status = 'completed'",
            (per_job,),
        )
        conn.execute("VACUUM ANALYZE")
        # Write the loaded pages out now: a database with a long history does not have
        # a gigabyte of fresh dirty pages, and the run should not pay for the loader's.
        conn.execute("CHECKPOINT")
