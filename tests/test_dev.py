"""`lightsout dev` starts PostgreSQL and Azurite that outlive it, writes the host's settings,
and `dev --stop` (another process) stops them: run as a user would, in subprocesses."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from lightsout.client import ApiClient
from lightsout.devservices import http_answers, postgres_answers, queue_endpoint
from tests.e2e.hosts import REPO_ROOT, HostProcess, finished


def lightsout(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightsout", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def exported(stdout: str) -> dict[str, str]:
    """The values of the `export NAME='value'` lines, as a shell would read them."""
    pairs = [shlex.split(line.removeprefix("export "))[0] for line in stdout.splitlines()]
    return dict(pair.split("=", 1) for pair in pairs)


def test_dev_runs_the_services_until_dev_stop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AzureWebJobsStorage")}
    app = ["--app-dir", str(tmp_path)]
    first = lightsout(env, "dev", *app)
    assert first.returncode == 0, first.stderr
    settings = exported(first.stdout)
    try:
        assert set(settings) == {
            "DATABASE_URL",
            "AzureWebJobsStorage",
            "LIGHTSOUT_URL",
            "LIGHTSOUT_API_KEY",
        }
        # The dev process has exited; what it started still answers.
        assert postgres_answers(settings["DATABASE_URL"])
        assert http_answers(queue_endpoint(settings["AzureWebJobsStorage"]))
        values = json.loads((tmp_path / "local.settings.json").read_text())["Values"]
        keys = json.loads(values["LIGHTSOUT_API_KEYS"])
        assert keys["dev"]["key"] == settings["LIGHTSOUT_API_KEY"] and len(keys["dev"]["key"]) >= 24
        assert keys["dev"]["scopes"] == ["jobs:read", "jobs:submit", "jobs:admin"]
        assert values["DATABASE_URL"] == settings["DATABASE_URL"]

        again = lightsout(env, "dev", *app)
        assert again.returncode == 0 and "already running" in again.stderr
        assert exported(again.stdout) == settings  # same services, same key

        # A host on those settings runs a job (the schema was migrated by dev).
        host_env = {**env, **settings, "LIGHTSOUT_API_KEYS": values["LIGHTSOUT_API_KEYS"]}
        host = HostProcess("dev-host", host_env, tmp_path, ["--no-migrate"])
        try:
            host.wait_ready()
            api = ApiClient(host.url, key=settings["LIGHTSOUT_API_KEY"])
            job_id = str(api.submit("hello_world", {"n": 2})["job_id"])
            assert finished(api, job_id)["status"] == "completed"
        finally:
            host.terminate()
    finally:
        stop = lightsout(env, "dev", "--stop", *app)
    assert stop.returncode == 0 and "stopped" in stop.stderr, stop.stderr
    assert not postgres_answers(settings["DATABASE_URL"], timeout=2)
    assert not http_answers(queue_endpoint(settings["AzureWebJobsStorage"]), timeout=2)
    assert not (tmp_path / ".run" / "dev.json").exists()
    assert "nothing to stop" in lightsout(env, "dev", "--stop", *app).stderr
