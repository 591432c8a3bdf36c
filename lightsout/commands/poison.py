"""Poison messages: list what was recorded, replay one to the queue it came from."""

from __future__ import annotations

import argparse
from typing import Any

from lightsout.commands.common import (
    UsageError,
    add_json,
    client,
    command,
    console,
    print_json,
    short,
    table,
    when,
)


def register(sub: Any) -> None:
    poison = command(
        sub, "poison", "poison messages: `poison` lists them, `poison replay ID`", _poison
    )
    poison.add_argument("action", nargs="?", choices=("list", "replay"), default="list")
    poison.add_argument("poison_id", nargs="?", type=int, help="the message to replay")
    poison.add_argument("--limit", type=int, default=100, help="how many to list, newest first")
    add_json(poison)


def _poison(args: argparse.Namespace) -> int:
    if args.action == "replay":
        if args.poison_id is None:
            raise UsageError("poison replay: give the id of the message (see `poison`)")
        return _replay(args)
    return _list(args)


def _list(args: argparse.Namespace) -> int:
    body = client(args).get("poison", limit=args.limit)
    if args.json:
        print_json(body)
        return 0
    rows = [
        (
            p["poison_id"],
            p["queue_name"],
            when(p["received_at"]),
            short(p.get("job_id") or ""),
            len(p.get("task_ids") or []),
            p["dequeue_count"],
            when(p.get("replayed_at")) or "-",
            p["reason"],
        )
        for p in body["poison"]
    ]
    columns = ("id", "queue", "received", "job", "tasks", "deliveries", "replayed", "reason")
    console().print(table(columns, rows))
    return 0


def _replay(args: argparse.Namespace) -> int:
    body = client(args).post(f"poison/{args.poison_id}/replay")
    print(f"poison message {body['poison_id']} sent again to {body['queue_name']}")
    return 0
