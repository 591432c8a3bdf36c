"""The Celery side of the comparison: a no-op task and the chord's callback, on Redis."""

from __future__ import annotations

import os

from celery import Celery

BROKER = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/7")
app = Celery("lightsout_bench", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "lightsout-bench"),
    worker_prefetch_multiplier=16,
    result_expires=3600,
    worker_hijack_root_logger=False,
)


@app.task  # type: ignore[untyped-decorator]
def noop(index: int) -> dict[str, int]:
    return {"attempt": 1, "index": index}


@app.task  # type: ignore[untyped-decorator]
def collect(results: list[dict[str, int]]) -> int:
    return len(results)
