"""The command line against a real local host, for the routes that host serves."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lightsout.cli import main
from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import HostProcess, finished, send_raw, wait_for
from tests.fixtures_services import TEST_KEY

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def host(start_hosts: StartHosts) -> HostProcess:
    return start_hosts()[0]


@pytest.fixture
def run(
    host: HostProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("LIGHTSOUT_URL", host.url)
    monkeypatch.setenv("LIGHTSOUT_API_KEY", TEST_KEY)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().out

    return run


def test_submit_wait_show_tasks_jobs_through_a_host(run: Run) -> None:
    code, out = run("submit", "noop_fanout", "tasks=3", "stages=2", "--wait")
    assert code == 0, out
    job_id = out.splitlines()[0].removeprefix("submitted: ")
    lines = out.splitlines()
    assert f"job {job_id}: completed" in lines
    assert any(line.startswith("  stage 2") and "3/3  completed" in line for line in lines)

    code, out = run("show", job_id)
    assert code == 0 and "completed" in out and "3/3" in out and "result" in out
    code, raw = run("show", job_id, "--json")
    assert json.loads(raw)["job_id"] == job_id
    code, out = run("tasks", job_id, "--stage", "2")
    assert code == 0 and out.count("completed") == 3
    code, out = run("jobs", "--type", "noop_fanout", "--status", "completed")
    assert code == 0 and job_id in out


def test_a_failed_job_waits_to_exit_1_and_retry_runs_it_again(run: Run, host: HostProcess) -> None:
    code, out = run("submit", "noop_fanout", "tasks=2", "fail_task_indices=[1]", "--wait")
    assert code == 1
    job_id = out.splitlines()[0].removeprefix("submitted: ")
    assert "2/2 (1 failed)  failed" in out and f"job {job_id}: failed" in out
    code, out = run("tasks", job_id, "--status", "failed")
    assert code == 0 and "InjectedFailure: task 1 fails on every attempt" in out
    code, out = run("retry", job_id)
    assert code == 0 and out == f"job {job_id}: 1 failed task of stage 1 run again\n"
    assert finished(host.api, job_id)["status"] == "failed"  # it fails on every attempt


def test_cancel_a_job_and_cancel_an_unknown_one(run: Run, host: HostProcess) -> None:
    code, out = run("submit", "noop_fanout", "tasks=2", "sleep_ms=5000")
    job_id = out.split()[-1]
    code, out = run("cancel", job_id)
    assert code == 0 and out == f"job {job_id}: cancelled\n"
    code, _ = run("cancel", job_id)
    assert code == 2  # 409: it has finished


def test_poison_lists_and_replays(
    run: Run, host: HostProcess, settings_env: dict[str, str]
) -> None:
    send_raw(
        settings_env["AzureWebJobsStorage"], settings_env["LIGHTSOUT_JOBS_QUEUE"], '{"oops": 1}'
    )

    def listed() -> str | None:
        code, out = run("poison")
        return out if code == 0 and "malformed" in out else None

    out = wait_for(listed, 60, "the poison message to be recorded")
    poison_id = out.splitlines()[1].split()[0]
    code, out = run("poison", "replay", poison_id)
    assert code == 0 and "sent again" in out
