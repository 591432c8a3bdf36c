"""Look at jobs: jobs, show, tasks, events, diagnose, and submit (with --wait)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lightsout.client import parse_assignments
from lightsout.commands.common import (
    UsageError,
    add_json,
    client,
    command,
    console,
    next_page,
    print_json,
    short,
    table,
    when,
)
from lightsout.progress import STYLES, stages_table, watch
from schemas.records import Json

JOB_STATUSES = ["queued", "processing", "completed", "completed_with_errors", "failed", "cancelled"]
TASK_STATUSES = ["queued", "processing", "retrying", "completed", "failed", "cancelled"]


def register(sub: Any) -> None:
    submit = command(sub, "submit", "submit a job, and with --wait follow it to its end", _submit)
    submit.add_argument("job_type")
    submit.add_argument("params", nargs="*", metavar="key=value", help="values are JSON or text")
    submit.add_argument("--json", type=Path, help="a file with the parameters object")
    submit.add_argument("--wait", action="store_true", help="draw its progress until it ends")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")

    jobs = command(sub, "jobs", "list jobs, newest first", _jobs)
    jobs.add_argument("--status", choices=JOB_STATUSES, help="only jobs in this status")
    jobs.add_argument("--type", dest="job_type", help="only jobs of this job type")
    jobs.add_argument("-q", "--quiet", action="store_true", help="print the job ids only")
    _paging(jobs, 50)

    show = command(sub, "show", "a job: its stages with bars, counts, result or error", _show)
    show.add_argument("job_id")
    add_json(show)

    status = command(
        sub, "status", "a job as the API answers it (JSON; same as show --json)", _status
    )
    status.add_argument("job_id")

    tasks = command(sub, "tasks", "a job's tasks, with their attempts and errors", _tasks)
    tasks.add_argument("job_id")
    tasks.add_argument("--stage", type=int, help="only this stage's tasks")
    tasks.add_argument("--status", choices=TASK_STATUSES, help="only tasks in this status")
    _paging(tasks, 100)

    events = command(sub, "events", "a job's history, oldest first", _events)
    events.add_argument("job_id")
    _paging(events, 100)

    diagnose = command(
        sub, "diagnose", "why a job is where it is: a verdict and its evidence", _diagnose
    )
    diagnose.add_argument("job_id")
    add_json(diagnose)


def _paging(parser: argparse.ArgumentParser, limit: int) -> None:
    parser.add_argument("--limit", type=int, default=limit, help="rows per page")
    parser.add_argument("--cursor", help="the page after this cursor (printed under a full page)")
    add_json(parser)


def _submit(args: argparse.Namespace) -> int:
    params: dict[str, object] = {}
    if args.json:
        loaded = json.loads(args.json.read_text())
        if not isinstance(loaded, dict):
            raise UsageError(f"{args.json}: the parameters must be a JSON object")
        params.update(loaded)
    params.update(parse_assignments(args.params))
    api = client(args)
    answer = api.submit(args.job_type, params)
    job_id = str(answer["job_id"])
    print(f"{'submitted' if answer['created'] else 'already known'}: {job_id}")
    if not args.wait:
        return 0
    try:
        job = watch(api, job_id, args.timeout, sys.stdout)
    except KeyboardInterrupt:
        print(f"\nstopped watching; job {job_id} keeps running (lightsout show {job_id})")
        return 130
    return 0 if job["status"] in ("completed", "completed_with_errors") else 1


def _jobs(args: argparse.Namespace) -> int:
    body = client(args).get(
        "jobs", status=args.status, job_type=args.job_type, limit=args.limit, cursor=args.cursor
    )
    if args.json:
        print_json(body)
        return 0
    if args.quiet:
        print("\n".join(j["job_id"] for j in body["jobs"]))
        return 0
    rows = [
        (
            j["job_id"],
            j["job_type"],
            j["status"],
            f"{j['stage']}/{j['total_stages']}",
            when(j["created_at"]),
            when(j["finished_at"]),
        )
        for j in body["jobs"]
    ]
    console().print(table(("job", "type", "status", "stage", "created", "finished"), rows))
    next_page(body)
    return 0


def _show(args: argparse.Namespace) -> int:
    job = client(args).job(args.job_id)
    if args.json:
        print_json(job)
        return 0
    style = STYLES.get(job["status"], "white")
    console().print(f"job {job['job_id']}  [bold]{job['job_type']}[/]  [{style}]{job['status']}[/]")
    console().print(
        f"stage {job['stage']}/{job['total_stages']}  created {when(job['created_at'])}"
        f"  finished {when(job['finished_at']) or '-'}"
        + (f"  re-run of {job['rerun_of']}" if job.get("rerun_of") else "")
    )
    # Piped, a bar is text: without colours an empty bar would be blank.
    console().print(stages_table(job, plain=not sys.stdout.isatty()))
    _print_outcome(job)
    return 0


def _print_outcome(job: Json) -> None:
    if job.get("error"):
        console().print("[red]error[/]")
        console().print_json(data=job["error"])
    elif job.get("result") is not None:
        console().print("result")
        console().print_json(data=job["result"])


def _status(args: argparse.Namespace) -> int:
    print_json(client(args).job(args.job_id))
    return 0


def _tasks(args: argparse.Namespace) -> int:
    body = client(args).get(
        f"jobs/{args.job_id}/tasks",
        stage=args.stage,
        status=args.status,
        limit=args.limit,
        cursor=args.cursor,
    )
    if args.json:
        print_json(body)
        return 0
    rows = [
        (
            t["stage"],
            t["task_index"],
            t["status"],
            t["attempt"],
            when(t["updated_at"]),
            _error_line(t.get("error")),
        )
        for t in body["tasks"]
    ]
    console().print(table(("stage", "task", "status", "attempt", "updated", "error"), rows))
    next_page(body)
    return 0


def _error_line(error: Json | None) -> str:
    return "" if not error else f"{error.get('type', '')}: {error.get('message', '')}"


def _events(args: argparse.Namespace) -> int:
    body = client(args).get(f"jobs/{args.job_id}/events", limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json(body)
        return 0
    rows = [
        (
            when(e["created_at"]),
            e["kind"],
            e.get("stage"),
            _task_of(e.get("task_id")),
            _change(e),
            e.get("actor"),
            e.get("reason"),
        )
        for e in body["events"]
    ]
    console().print(table(("time", "kind", "stage", "task", "change", "actor", "reason"), rows))
    next_page(body)
    return 0


def _task_of(task_id: object) -> str:
    """The task's index from its id (`{job}-s{stage}-t{index}`)."""
    return "" if not task_id else str(task_id).rpartition("-t")[2]


def _change(event: Json) -> str:
    before, after = event.get("from_status"), event.get("to_status")
    return f"{before or ''} -> {after}" if after else ""


def _diagnose(args: argparse.Namespace) -> int:
    body = client(args).get(f"jobs/{args.job_id}/diagnose")
    if args.json:
        print_json(body)
        return 0
    style = STYLES.get(str(body.get("status")), "white")
    console().print(
        f"job {short(body['job_id'])}…  [{style}]{body.get('status')}[/]"
        f"  stage {body.get('stage')}  state {body.get('state')}"
    )
    console().print(f"[bold]{body.get('verdict')}[/]")
    console().print_json(data=body.get("evidence", {}))
    return 0
