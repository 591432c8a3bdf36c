"""The same fan-out/fan-in as a Celery chord on Redis, with a time limit."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.services import LOGS, ROOT

REQUIREMENTS = ROOT / "bench" / "requirements.txt"


@dataclass(frozen=True)
class ChordRun:
    seconds: float | None  # None: not finished within the limit
    done: int


def install() -> None:
    """Install celery and redis into this interpreter's environment (bench only)."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True
        )


def chord_run(tasks: int, limit_s: float, workers: int = 2) -> ChordRun:
    """Run a chord of `tasks` no-ops and a callback on `workers` prefork processes."""
    install()
    queue = f"lightsout-bench-{secrets.token_hex(3)}"
    env = {**os.environ, "BENCH_CELERY_QUEUE": queue}
    os.environ["BENCH_CELERY_QUEUE"] = queue
    LOGS.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
        "--concurrency", str(workers), "--pool", "prefork", "-Q", queue, "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with (LOGS / "celery.log").open("ab") as log:
        worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        return _timed_chord(tasks, limit_s, queue)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _timed_chord(tasks: int, limit_s: float, queue: str) -> ChordRun:
    from celery import chord
    from celery.exceptions import TimeoutError as CeleryTimeout

    import bench.celery_app as capp

    capp.app.conf.task_default_queue = queue
    started = time.monotonic()
    result = chord(capp.noop.s(i) for i in range(tasks))(capp.collect.s())
    try:
        count = int(result.get(timeout=limit_s, interval=0.05))
    except CeleryTimeout:
        done = sum(1 for r in result.parent.results if r.ready()) if result.parent else 0
        return ChordRun(None, done)
    finally:
        capp.app.control.purge()
    return ChordRun(time.monotonic() - started, count)
