"""Steer jobs: cancel and retry one job or every job matching a filter; pause and resume a type."""

from __future__ import annotations

import argparse
from typing import Any

from lightsout.client import ApiClient
from lightsout.commands.common import UsageError, client, command
from lightsout.commands.jobs import JOB_STATUSES
from schemas.records import Json

PAST = {"cancel": "cancelled", "retry": "retried"}


def register(sub: Any) -> None:
    cancel = command(
        sub, "cancel", "cancel a job, or every job matching --type and --status", _cancel
    )
    retry = command(
        sub,
        "retry",
        "re-run a failed job's failed tasks, or those of every job matching --type and --status",
        _retry,
    )
    for parser in (cancel, retry):
        parser.add_argument("job_id", nargs="?", help="one job (or use --type / --status)")
        parser.add_argument("--type", dest="job_type", help="every job of this job type")
        parser.add_argument("--status", choices=JOB_STATUSES, help="every job in this status")
    pause = command(sub, "pause", "pause a job type: its jobs are accepted and wait", _pause)
    resume = command(sub, "resume", "resume a job type: its jobs go on where they stopped", _resume)
    for parser in (pause, resume):
        parser.add_argument("job_type")


def _cancel(args: argparse.Namespace) -> int:
    body = _one_or_many(args, "cancel")
    if body is not None:
        print(f"job {body['job_id']}: {body['status']}")
    return 0


def _retry(args: argparse.Namespace) -> int:
    body = _one_or_many(args, "retry")
    if body is not None:
        n = body["retried_tasks"]
        tasks = f"{n} failed task{'' if n == 1 else 's'} of stage {body['stage']}"
        print(f"job {body['job_id']}: {tasks} run again")
    return 0


def _one_or_many(args: argparse.Namespace, action: str) -> Json | None:
    """Act on the job named, returning the answer; or on every match, printing how many."""
    api: ApiClient = client(args)
    has_filter = bool(args.job_type or args.status)
    if bool(args.job_id) == has_filter:
        raise UsageError(f"{action}: give a job id, or --type and/or --status (not both)")
    if args.job_id:
        return api.post(f"jobs/{args.job_id}/{action}")
    body = api.post(f"jobs/{action}", job_type=args.job_type, status=args.status)
    print(f"{body.get('matched')} jobs matched, {body.get(PAST[action])} {PAST[action]}")
    return None


def _pause(args: argparse.Namespace) -> int:
    body = client(args).post(f"job-types/{args.job_type}/pause")
    print(f"{body['job_type']}: paused by {body.get('paused_by')} at {body.get('paused_at')}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    body = client(args).post(f"job-types/{args.job_type}/resume")
    print(f"{body['job_type']}: {'still paused' if body.get('paused') else 'running'}")
    return 0
