"""The hosts that claimed work recently, with their last heartbeat and tasks in hand."""

from __future__ import annotations

import argparse
from typing import Any

from lightsout.commands.common import add_json, client, command, console, print_json, table, when


def register(sub: Any) -> None:
    workers = command(sub, "workers", "the hosts that claimed work recently", _workers)
    add_json(workers)


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


def _jobs(jobs: object) -> str:
    if isinstance(jobs, list):
        return ", ".join(str(j)[:12] for j in jobs)
    return "" if jobs is None else str(jobs)
