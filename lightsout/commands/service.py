"""Run the app: host (serve function_app.py) and migrate (the schema)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from lightsout.commands.common import command
from lightsout.host.errors import HostConfigError
from lightsout.host.roles import ALL_KINDS, parse_kinds
from repositories.db import migrations_conninfo
from repositories.migrations import migrate, status
from schemas.http import MAX_BODY_BYTES
from schemas.settings import DatabaseSettings, Settings, load
from triggers.shards import unused_shard_functions

APP_DIR = Path(__file__).resolve().parents[2]
DB_ENV = "environment: DATABASE_URL (or PGHOST, PGPORT, ...), LIGHTSOUT_SCHEMA"


def register(sub: Any) -> None:
    host = command(
        sub,
        "host",
        "serve function_app.py like the Azure Functions host",
        _host,
        api=False,
        epilog=f"{DB_ENV}, AzureWebJobsStorage, LIGHTSOUT_LOG_FORMAT (text or json), and the "
        "rest of the README's configuration table; local.settings.json Values fill in what "
        "the environment does not set.",
    )
    host.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1")
    host.add_argument("--concurrency", type=int, help="in-flight messages per queue")
    host.add_argument("--app-dir", type=Path, default=APP_DIR, help="the Functions app root")
    host.add_argument("--no-migrate", action="store_true", help="do not migrate up at start")
    host.add_argument(
        "--functions",
        type=_kinds,
        default=ALL_KINDS,
        help="what to serve: http, queues, timers, any combination (default all)",
    )

    mig = command(
        sub, "migrate", "apply or revert the schema migrations", _migrate, api=False, epilog=DB_ENV
    )
    mig.add_argument("direction", choices=["up", "down", "status"])
    mig.add_argument("--to", type=int, help="target version (down defaults to 0)")


def _host(args: argparse.Namespace) -> int:
    from lightsout.host import load_local_settings, serve

    # The Azure SDK logs every request at INFO: far too much for a worker's log.
    logging.getLogger("azure").setLevel(logging.WARNING)
    load_local_settings(args.app_dir, os.environ)
    settings = load(Settings)
    # The triggers name their queues and schedule as %SETTING%: give the host the defaults.
    os.environ.setdefault("LIGHTSOUT_JOBS_QUEUE", settings.jobs_queue)
    os.environ.setdefault("LIGHTSOUT_TASKS_QUEUE", settings.tasks_queue)
    os.environ.setdefault("LIGHTSOUT_JANITOR_SCHEDULE", settings.janitor_schedule)
    # Task queue shards past LIGHTSOUT_TASK_QUEUE_SHARDS are not polled unless a
    # AzureWebJobs.<function>.Disabled=false says so (to drain them after lowering the count).
    for name in unused_shard_functions(settings.task_queue_shards):
        os.environ.setdefault(f"AzureWebJobs.{name}.Disabled", "true")
    # One host on a laptop or in CI: repair what the last run left at once (off in Azure).
    os.environ.setdefault("LIGHTSOUT_JANITOR_RUN_ON_STARTUP", "true")
    # The host refuses a larger body from its Content-Length, before reading any of it.
    os.environ.setdefault("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", str(MAX_BODY_BYTES))
    if not args.no_migrate:
        migrate(migrations_conninfo(settings), settings.schema_name)
    return serve(args.app_dir, port=args.port, concurrency=args.concurrency, kinds=args.functions)


def _kinds(text: str) -> frozenset[str]:
    try:
        return parse_kinds(text)
    except HostConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _migrate(args: argparse.Namespace) -> int:
    settings = load(DatabaseSettings)
    if args.direction == "status":
        applied, pending = status(migrations_conninfo(settings), settings.schema_name)
        print(f"schema {settings.schema_name}: applied {applied}, pending {pending}")
        return 0
    target = args.to if args.direction == "up" else (args.to or 0)
    applied = migrate(migrations_conninfo(settings), settings.schema_name, target)
    print(f"schema {settings.schema_name} at version {max(applied, default=0)}")
    return 0
