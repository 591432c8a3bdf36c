"""The command line: host, migrate, submit, status, bench."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lightsout.client import ApiClient, ApiError, parse_assignments, watch
from lightsout.host.errors import HostConfigError
from lightsout.host.roles import ALL_KINDS, parse_kinds
from repositories.migrations import migrate, status
from schemas.exceptions import LightsoutError
from schemas.settings import DatabaseSettings, Settings, load

APP_DIR = Path(__file__).resolve().parent.parent
DEFAULT_URL = "http://127.0.0.1:7071"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightsout", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    host = sub.add_parser("host", help="serve function_app.py like the Azure Functions host")
    host.add_argument("--port", type=int, default=7071)
    host.add_argument("--concurrency", type=int, default=None, help="in-flight messages per queue")
    host.add_argument("--app-dir", type=Path, default=APP_DIR)
    host.add_argument("--no-migrate", action="store_true", help="do not migrate up at start")
    host.add_argument(
        "--functions",
        type=_kinds,
        default=ALL_KINDS,
        help="what to serve: http, queues, timers, any combination (default all)",
    )

    mig = sub.add_parser("migrate", help="apply or revert the schema migrations")
    mig.add_argument("direction", choices=["up", "down", "status"])
    mig.add_argument("--to", type=int, default=None, help="target version (down defaults to 0)")

    submit = sub.add_parser("submit", help="submit a job over HTTP")
    submit.add_argument("job_type")
    submit.add_argument("params", nargs="*", metavar="key=value", help="values are JSON or text")
    submit.add_argument("--json", type=Path, help="a file with the parameters object")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    submit.add_argument("--timeout", type=float, default=600.0)
    submit.add_argument("--url", default=os.environ.get("LIGHTSOUT_URL", DEFAULT_URL))

    bench = sub.add_parser("bench", help="run the benchmarks (bench/suite.py)", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)

    stat = sub.add_parser("status", help="show a job")
    stat.add_argument("job_id")
    stat.add_argument("--url", default=os.environ.get("LIGHTSOUT_URL", DEFAULT_URL))
    return parser


def _kinds(text: str) -> frozenset[str]:
    try:
        return parse_kinds(text)
    except HostConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    if not args.no_migrate:
        migrate(settings.conninfo, settings.schema_name)
    return serve(args.app_dir, port=args.port, concurrency=args.concurrency, kinds=args.functions)


def _migrate(args: argparse.Namespace) -> int:
    settings = load(DatabaseSettings)
    if args.direction == "status":
        applied, pending = status(settings.conninfo, settings.schema_name)
        print(f"schema {settings.schema_name}: applied {applied}, pending {pending}")
        return 0
    target = args.to if args.direction == "up" else (args.to or 0)
    applied = migrate(settings.conninfo, settings.schema_name, target)
    print(f"schema {settings.schema_name} at version {max(applied, default=0)}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    params: dict[str, object] = {}
    if args.json:
        loaded = json.loads(args.json.read_text())
        if not isinstance(loaded, dict):
            raise SystemExit(f"{args.json}: the parameters must be a JSON object")
        params.update(loaded)
    params.update(parse_assignments(args.params))
    client = ApiClient(args.url)
    answer = client.submit(args.job_type, params)
    print(f"{'submitted' if answer['created'] else 'already known'}: {answer['job_id']}")
    if not args.wait:
        return 0
    job = watch(client, str(answer["job_id"]), args.timeout, sys.stdout)
    return 0 if job["status"] in ("completed", "completed_with_errors") else 1


def _status(args: argparse.Namespace) -> int:
    job = ApiClient(args.url).job(args.job_id)
    print(json.dumps(job, indent=2))
    return 0


def _bench(argv: Sequence[str]) -> int:
    from bench.suite import main as bench_main  # the bench ships with the repository only

    return bench_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options are its own (bench/suite.py)
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    commands = {"host": _host, "migrate": _migrate, "submit": _submit, "status": _status}
    try:
        return commands[args.command](args)
    except (LightsoutError, ApiError) as exc:
        print(f"lightsout {args.command}: {exc}", file=sys.stderr)
        return 2
