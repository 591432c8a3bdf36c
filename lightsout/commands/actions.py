"""Steer jobs: cancel, retry (one job, or every job matching a filter), pause and resume a type."""

from __future__ import annotations

import argparse
from typing import Any

from lightsout.client import ApiError
from lightsout.commands.common import client, command
from lightsout.commands.jobs import JOB_STATUSES

PAST = {"cancel": "cancelled", "retry": "retried"}


def register(sub: Any) -> None:
    for name, verb in (("cancel", "cancel"), ("retry", "retry the failed tasks of")):
        parser = command(
            sub,
            name,
            f"{verb} a job, or every job matching --type and --status",
            _bulk_or_one(name),
        )
        parser.add_argument("job_id", nargs="?", help="one job (or use --type / --status)")
        parser.add_argument("--type", dest="job_type", help="every job of this job type")
        parser.add_argument("--status", choices=JOB_STATUSES, help="every job in this status")
    for name, verb in (("pause", "pause"), ("resume", "resume")):
        parser = command(
            sub,
            name,
            f"{verb} a job type: while paused, its jobs are accepted and wait"
            if name == "pause"
            else "resume a paused job type: its jobs continue where they stopped",
            _pause_or_resume(name),
        )
        parser.add_argument("job_type")


def _bulk_or_one(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        api = client(args)
        if args.job_id and (args.job_type or args.status):
            raise ApiError(f"{action}: give a job id or --type/--status, not both")
        if args.job_id:
            body = api.post(f"jobs/{args.job_id}/{action}")
            if action == "retry":
                n = body["retried_tasks"]
                tasks = f"{n} failed task{'' if n == 1 else 's'} of stage {body['stage']}"
                print(f"job {body['job_id']}: {tasks} run again")
            else:
                print(f"job {body['job_id']}: {body['status']}")
            return 0
        if not (args.job_type or args.status):
            raise ApiError(f"{action}: give a job id, or --type and/or --status for many jobs")
        body = api.post(f"jobs/{action}", job_type=args.job_type, status=args.status)
        past = PAST[action]
        print(f"{body.get('matched')} jobs matched, {body.get(past)} {past}")
        return 0

    return run


def _pause_or_resume(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        body = client(args).post(f"job-types/{args.job_type}/{action}")
        if body.get("paused"):
            print(
                f"{body['job_type']}: paused by {body.get('paused_by')} at {body.get('paused_at')}"
            )
        else:
            print(f"{body['job_type']}: running")
        return 0

    return run
