"""Every command against a fake API on 127.0.0.1: what it asks, and what it prints."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from typing import Any

import pytest

import lightsout.progress
from lightsout.cli import main, parser
from lightsout.client import ApiClient
from tests.cli.fakeapi import FakeApi, serve

JOB = "ab" * 32
KEY = "k" * 32


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    with serve(FakeApi()) as fake:
        monkeypatch.setenv("LIGHTSOUT_URL", fake.url)
        monkeypatch.setenv("LIGHTSOUT_API_KEY", KEY)
        monkeypatch.setattr(lightsout.progress, "POLL_S", 0.01)
        yield fake


def job_view(status: str, stages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "job_id": JOB,
        "job_type": "noop_fanout",
        "status": status,
        "stage": 1,
        "total_stages": len(stages),
        "stages": stages,
        "result": None,
        "error": None,
        "created_at": "2026-12-01T12:00:00Z",
        "finished_at": None,
        **extra,
    }


def stage(
    n: int, status: str, total: int, completed: int = 0, failed: int = 0, remaining: int = 0
) -> dict[str, Any]:
    return {
        "stage": n,
        "name": f"s{n}",
        "status": status,
        "task_count": total,
        "completed": completed,
        "failed": failed,
        "remaining": remaining,
    }


def test_every_command_sends_the_key_and_prints_its_answer(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {
        "event_id": 1,
        "job_id": JOB,
        "stage": 1,
        "task_id": f"{JOB}-s1-t3",
        "kind": "task_failed",
        "actor": "host-1",
        "from_status": "processing",
        "to_status": "retrying",
        "reason": "boom",
        "detail": {},
        "created_at": "2026-12-01T12:00:01Z",
    }
    api.routes.update(
        {
            ("GET", f"jobs/{JOB}/events"): (200, {"events": [event], "next_cursor": "c2"}),
            ("GET", f"jobs/{JOB}/diagnose"): (
                200,
                {
                    "job_id": JOB,
                    "status": "processing",
                    "stage": 1,
                    "state": "dead_worker",
                    "verdict": "stage 1 is waiting on 3 tasks whose worker stopped heartbeating",
                    "evidence": {"stale_claims": 3},
                },
            ),
            ("POST", "job-types/noop_fanout/pause"): (
                200,
                {
                    "job_type": "noop_fanout",
                    "paused": True,
                    "paused_by": "alice",
                    "paused_at": "2026-12-01T12:00:02Z",
                },
            ),
            ("POST", "job-types/noop_fanout/resume"): (
                200,
                {"job_type": "noop_fanout", "paused": False, "paused_by": None, "paused_at": None},
            ),
            ("POST", "jobs/cancel"): (200, {"matched": 4, "cancelled": 3}),
            ("POST", "jobs/retry"): (200, {"matched": 2, "retried": 2}),
            ("GET", "workers"): (
                200,
                {
                    "workers": [
                        {
                            "worker": "host-1",
                            "last_heartbeat_at": "2026-12-01T12:00:03Z",
                            "last_claim_at": "2026-12-01T12:00:00Z",
                            "tasks_in_hand": 5,
                            "jobs": [JOB],
                        }
                    ]
                },
            ),
        }
    )
    expected = {
        ("events", JOB): ["task_failed", "processing -> retrying", "boom", "--cursor c2"],
        ("diagnose", JOB): ["worker stopped heartbeating", "dead_worker", "stale_claims"],
        ("pause", "noop_fanout"): ["paused by alice"],
        ("resume", "noop_fanout"): ["noop_fanout: running"],
        ("cancel", "--type", "noop_fanout", "--status", "queued"): ["4 jobs matched, 3 cancelled"],
        ("retry", "--status", "failed"): ["2 jobs matched, 2 retried"],
        ("workers",): ["host-1", "5", JOB[:12]],
    }
    for argv, words in expected.items():
        assert main(list(argv)) == 0, argv
        out = capsys.readouterr().out
        assert all(w in out for w in words), (argv, out)
    assert {s.headers.get("x-functions-key") for s in api.seen} == {KEY}
    bulk = [s.query for s in api.seen if s.path in ("jobs/cancel", "jobs/retry")]
    assert bulk == [{"job_type": "noop_fanout", "status": "queued"}, {"status": "failed"}]


def test_json_prints_the_raw_answer(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("GET", "workers")] = (200, {"workers": []})
    assert main(["workers", "--json"]) == 0
    assert capsys.readouterr().out == '{\n  "workers": []\n}\n'


def test_an_error_answer_is_one_line_and_exit_2(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.routes[("GET", f"jobs/{JOB}/diagnose")] = (
        401,
        {"error": "unauthorized", "message": "no key"},
    )
    assert main(["diagnose", JOB, "--key", "other"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("lightsout diagnose: HTTP 401 unauthorized: no key")
        and "LIGHTSOUT_API_KEY" in err
    )
    assert api.seen[-1].headers["x-functions-key"] == "other"  # --key wins over the variable


def test_cancel_needs_a_job_or_a_filter(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cancel"]) == 2
    assert "give a job id" in capsys.readouterr().err
    assert api.seen == []


def test_submit_wait_writes_one_line_per_change_when_not_a_terminal(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    views = iter(
        [
            job_view(
                "processing", [stage(1, "processing", 4, remaining=4), stage(2, "pending", 0)]
            ),
            job_view(
                "processing", [stage(1, "processing", 4, remaining=4), stage(2, "pending", 0)]
            ),
            job_view(
                "processing",
                [stage(1, "processing", 4, completed=2, remaining=2), stage(2, "pending", 0)],
            ),
            job_view(
                "cancelled", [stage(1, "cancelled", 4, completed=2), stage(2, "cancelled", 0)]
            ),
        ]
    )
    api.routes[("POST", "jobs/noop_fanout")] = (202, {"job_id": JOB, "created": True})
    api.routes[("GET", f"jobs/{JOB}")] = lambda: (200, next(views))
    assert main(["submit", "noop_fanout", "tasks=4", "--wait"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"submitted: {JOB}"
    progress = [line for line in lines if line.startswith("  stage")]
    # Two lines at first, then only the line that changed: four in all, never a repeat.
    assert len(progress) == 5 and len(set(progress)) == 5, progress
    assert progress[-2].endswith("4/4 (2 cancelled)  cancelled")
    assert "[" + "-" * 30 + "]" in progress[-1]  # stage 2 never started: an empty bar
    assert lines[-2:] == [f"job {JOB}: cancelled", "null"]


def test_ctrl_c_while_waiting_says_the_job_keeps_running(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.routes[("POST", "jobs/noop_fanout")] = (202, {"job_id": JOB, "created": True})
    api.routes[("GET", f"jobs/{JOB}")] = (
        200,
        job_view("processing", [stage(1, "processing", 4, remaining=4)]),
    )

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("lightsout.progress.time.sleep", interrupt)
    assert main(["submit", "noop_fanout", "--wait"]) == 130
    captured = capsys.readouterr()
    assert f"job {JOB} keeps running" in captured.out
    assert "Traceback" not in captured.out + captured.err


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_lists_every_option_with_its_default_and_the_variables(name: str) -> None:
    command = commands()[name]
    text = " ".join(command.format_help().split())
    for action in command._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, (name, action.dest)
    if name == "keys":  # it talks to nobody: it prints a key and its settings entry
        assert "LIGHTSOUT_API_KEYS" in text
    elif name not in ("host", "migrate", "dev", "bench"):
        assert "LIGHTSOUT_URL" in text and "LIGHTSOUT_API_KEY" in text and "x-functions-key" in text
    else:
        assert "DATABASE_URL" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bars_are_redrawn_in_place(api: FakeApi) -> None:
    views = iter(
        [
            job_view("processing", [stage(1, "processing", 4, remaining=4)]),
            job_view("completed", [stage(1, "completed", 4, completed=4)], result={"n": 4}),
        ]
    )
    api.routes[("GET", f"jobs/{JOB}")] = lambda: (200, next(views))
    out = Terminal()
    job = lightsout.progress.watch(ApiClient(api.url), JOB, 60, out)
    text = out.getvalue()
    assert job["status"] == "completed"
    assert "\x1b[" in text  # cursor movements: the table is redrawn, not appended
    assert "4/4" in text and text.endswith(f'job {JOB}: completed\n{{\n  "n": 4\n}}\n')


def test_show_draws_each_stage_and_the_error(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    error = {"message": "stage 1 (s1) failed: 1 of 4 tasks failed", "failed_count": 1}
    view = job_view(
        "failed",
        [stage(1, "failed", 4, completed=3, failed=1), stage(2, "cancelled", 0)],
        error=error,
    )
    api.routes[("GET", f"jobs/{JOB}")] = (200, view)
    assert main(["show", JOB]) == 0
    out = capsys.readouterr().out
    row1, row2 = (line for line in out.splitlines() if line.lstrip().startswith(("1 ", "2 ")))
    assert "[" + "#" * 30 + "]" in row1 and "4/4 (1 failed)" in row1 and "failed" in row1
    assert "[" + "-" * 30 + "]" in row2 and "0/0" in row2 and "cancelled" in row2
    assert "1 of 4 tasks failed" in out
