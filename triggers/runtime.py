"""The process-wide engine: settings, the database pool and the queues, made once."""

from __future__ import annotations

import functools
import gc
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from psycopg_pool import ConnectionPool

import controllers.jobtypes  # noqa: F401  (registers the built-in job types)
from controllers import limits, logcontext, tracing
from controllers.dispatcher import BatchDispatcher
from controllers.engine import Engine, default_worker_name
from controllers.faults import with_injected_faults
from controllers.limits import Limits
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
from triggers.credentials import Authenticator

log = logging.getLogger(__name__)
# The Azure SDK logs every HTTP request at INFO, and the Functions worker forwards each
# record to the host (4 per health check): the app quiets it itself, in Azure as locally.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
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
    auth: Authenticator
    retention: Retention

    def close(self) -> None:
        self.engine.close()  # its local runs first: they use the pool and the queues
        self.queues.close()
        self.pool.close()


def _freeze_start_up_objects() -> None:
    """Leave what start-up made (modules, schemas, clients) out of later garbage collections.

    It lives as long as the process, yet each full collection walked all of it: 26-60 ms
    with every thread stopped, about once a second in a busy host (bench/PROFILE.md).
    """
    gc.collect()
    gc.freeze()


def runtime() -> Runtime:
    """Return the runtime, made on first use from the environment's settings."""
    # functools.cache alone lets threads that ask at the same moment (a host starts its
    # janitor, queue and HTTP threads together) each build one, leaking all but one pool.
    with _MAKING:
        return _make_runtime()


@functools.cache
def _make_runtime() -> Runtime:
    settings = load_settings()
    tracing.configure()
    logcontext.install()
    limits.configure(Limits(settings.max_tasks_per_stage, settings.max_result_bytes))
    pool = open_pool(settings)
    queues = QueueRepository.from_settings(settings, read_message_encoding(APP_ROOT / "host.json"))
    _create_queues(queues)
    jobs, tasks, poison = JobRepository(pool), TaskRepository(pool), PoisonRepository(pool)
    worker = settings.worker_name or default_worker_name()
    sends = with_injected_faults(queues)  # the queues themselves unless a chaos test asks
    engine = Engine(
        jobs,
        tasks,
        sends,
        poison,
        registry,
        worker=worker,
        task_concurrency=settings.task_concurrency,
        heartbeat_s=settings.heartbeat_s,
        outage_wait_s=settings.dependency_wait_s,
        dispatch_lease_s=settings.task_lease_s,
        local_runs=settings.local_runs,
    )
    timings = Timings(
        lease=timedelta(seconds=settings.task_lease_s),
        sweep_grace=timedelta(seconds=settings.sweep_grace_s),
        stall=timedelta(seconds=settings.stall_s),
    )
    if settings.submit_dispatch == "batched":
        engine.dispatcher = BatchDispatcher(sends, jobs)
    recovery = Recovery(engine, RecoveryRepository(pool), sends, poison, timings)
    retention = Retention(RetentionRepository(pool), settings.retention_days)
    log.info("lightsout runtime ready: schema %s, queues %s", settings.schema_name, queues.queues)
    auth = Authenticator(settings)
    _log_auth_notice(settings)
    _freeze_start_up_objects()
    return Runtime(settings, pool, queues, jobs, tasks, poison, engine, recovery, auth, retention)


def _log_auth_notice(settings: Settings) -> None:
    """Say once, at start, when the API is open to anyone or closed to everyone."""
    notice = auth_notice(settings)
    if notice:
        log.warning("%s", notice)


def auth_notice(settings: Settings) -> str | None:
    """The warning that authentication is off, or that no credential can pass; else None."""
    if settings.auth == "off":
        return "LIGHTSOUT_AUTH=off: authentication is off and every route is open to anyone"
    if not settings.credentials_configured:
        return (
            "no credentials are configured, so every route but /api/health and "
            "/api/openapi.json answers 401: make a key with `python -m lightsout keys new "
            "NAME --scopes jobs:read,jobs:submit` and put its entry in LIGHTSOUT_API_KEYS"
        )
    return None


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
