"""The process-wide engine: settings, the database pool and the queues, made once."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from psycopg_pool import ConnectionPool

import controllers.jobtypes  # noqa: F401  (registers the built-in job types)
from controllers.dispatcher import BatchDispatcher
from controllers.engine import Engine, default_worker_name
from controllers.recovery import Recovery, Timings
from controllers.registry import registry
from controllers.retention import Retention
from repositories.db import Connection, open_pool
from repositories.jobs import JobRepository
from repositories.poison import PoisonRepository
from repositories.queues import QueueRepository, read_message_encoding
from repositories.recovery import RecoveryRepository
from repositories.retention import RetentionRepository
from repositories.tasks import TaskRepository
from schemas.exceptions import QueueError
from schemas.settings import Settings, load_settings

log = logging.getLogger(__name__)
APP_ROOT = Path(__file__).resolve().parent.parent
_MAKING = threading.Lock()


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    pool: ConnectionPool[Connection]
    queues: QueueRepository
    jobs: JobRepository
    tasks: TaskRepository
    poison: PoisonRepository
    engine: Engine
    recovery: Recovery
    retention: Retention

    def close(self) -> None:
        self.queues.close()
        self.pool.close()


def runtime() -> Runtime:
    """Return the runtime, made on first use from the environment's settings."""
    # functools.cache alone lets threads that ask at the same moment (a host starts its
    # janitor, queue and HTTP threads together) each build one, leaking all but one pool.
    with _MAKING:
        return _make_runtime()


@functools.cache
def _make_runtime() -> Runtime:
    settings = load_settings()
    pool = open_pool(settings)
    queues = QueueRepository.from_settings(settings, read_message_encoding(APP_ROOT / "host.json"))
    _create_queues(queues)
    jobs, tasks, poison = JobRepository(pool), TaskRepository(pool), PoisonRepository(pool)
    worker = settings.worker_name or default_worker_name()
    engine = Engine(
        jobs,
        tasks,
        queues,
        poison,
        registry,
        worker=worker,
        task_concurrency=settings.task_concurrency,
        heartbeat_s=settings.heartbeat_s,
        outage_wait_s=settings.dependency_wait_s,
    )
    timings = Timings(
        lease=timedelta(seconds=settings.task_lease_s),
        sweep_grace=timedelta(seconds=settings.sweep_grace_s),
        stall=timedelta(seconds=settings.stall_s),
    )
    if settings.submit_dispatch == "batched":
        engine.dispatcher = BatchDispatcher(queues, jobs)
    recovery = Recovery(engine, RecoveryRepository(pool), queues, poison, timings)
    retention = Retention(RetentionRepository(pool), settings.retention_days)
    log.info("lightsout runtime ready: schema %s, queues %s", settings.schema_name, queues.queues)
    return Runtime(settings, pool, queues, jobs, tasks, poison, engine, recovery, retention)


def _create_queues(queues: QueueRepository) -> None:
    """Create the queues where missing: Azure Functions creates none for queue triggers."""
    try:
        queues.ensure_queues()
    except QueueError as exc:
        # Sends fail naming the problem until the storage answers; the health check says so.
        log.warning("could not create the queues: %s", exc)


def reset_runtime() -> None:
    """Close and forget the runtime (tests switch databases and queues between cases)."""
    with _MAKING:
        if _make_runtime.cache_info().currsize:
            _make_runtime().close()
        _make_runtime.cache_clear()
