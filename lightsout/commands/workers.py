"""The hosts: those that claimed work recently (workers), and whether the app is healthy."""

from __future__ import annotations

import argparse
import time
from typing import Any

from lightsout.client import ApiError
from lightsout.commands.common import add_json, client, command, console, print_json, table, when


def register(sub: Any) -> None:
    workers = command(sub, "workers", "the hosts that claimed work recently", _workers)
    add_json(workers)
    health = command(sub, "health", "whether the app, its database and its queues answer", _health)
    health.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for a healthy answer"
    )


def _workers(args: argparse.Namespace) -> int:
    body = client(args).get("workers")
    if args.json:
        print_json(body)
        return 0
    rows = [
        (
            w["worker"],
            when(w.get("last_heartbeat_at")),
            when(w.get("last_claim_at")),
            w.get("tasks_in_hand"),
            _jobs(w.get("jobs")),
        )
        for w in body["workers"]
    ]
    console().print(
        table(("worker", "last heartbeat", "last claim", "tasks in hand", "jobs"), rows)
    )
    return 0


def _health(args: argparse.Namespace) -> int:
    """Print the health checks; exit 0 when healthy, 1 when not (after --wait seconds)."""
    api, deadline = client(args, timeout_s=10), time.monotonic() + args.wait
    while True:
        try:
            status, body = api.request("GET", "health")
        except ApiError as exc:
            status, body = 0, {"status": "no answer", "checks": {"app": str(exc)}}
        if status == 200 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    checks = ", ".join(f"{name} {state}" for name, state in body.get("checks", {}).items())
    print(f"{api.base_url}: {body.get('status')} ({checks})")
    return 0 if status == 200 else 1


def _jobs(jobs: object) -> str:
    if isinstance(jobs, list):
        return ", ".join(str(j)[:12] for j in jobs)
    return "" if jobs is None else str(jobs)
