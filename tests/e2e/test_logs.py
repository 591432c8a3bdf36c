"""LIGHTSOUT_LOG_FORMAT=json: every line of a host's log is a JSON object carrying its ids."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from tests.e2e.hosts import HostProcess, finished
from tests.fixtures_services import TEST_KEY

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def submit_traced(url: str, job_type: str, params: dict[str, object]) -> str:
    request = urllib.request.Request(
        f"{url}/api/jobs/{job_type}",
        json.dumps(params).encode(),
        {
            "Content-Type": "application/json",
            "traceparent": TRACEPARENT,
            "x-functions-key": TEST_KEY,
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["job_id"])


def test_every_line_of_a_json_log_parses_and_carries_the_ids(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**os.environ, **settings_env, "LIGHTSOUT_LOG_FORMAT": "json"}
    host = HostProcess("json-host", env, tmp_path)
    try:
        host.wait_ready()
        job_id = submit_traced(host.url, "noop_fanout", {"tasks": 3, "fail_task_indices": [2]})
        assert finished(host.api, job_id)["status"] == "failed"
    finally:
        assert host.terminate() == 0

    lines = [json.loads(line) for line in host.log.splitlines()]
    assert lines and all(isinstance(line, dict) for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    failures = [line for line in lines if "failed for good" in line["message"]]
    assert len(failures) == 1, lines
    assert (
        failures[0]
        | {
            "job_id": job_id,
            "stage": 1,
            "task_id": f"{job_id}-s1-t2",
            "trace_id": TRACE_ID,
        }
        == failures[0]
    )
    assert failures[0]["attempt"] >= 1 and failures[0]["invocation_id"]
    # Every line the engine wrote about this job names it and the trace.
    about_job = [line for line in lines if job_id in line["message"]]
    assert about_job and all(line.get("trace_id") == TRACE_ID for line in about_job), about_job


def test_text_stays_the_default(settings_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **settings_env}
    env.pop("LIGHTSOUT_LOG_FORMAT", None)
    host = HostProcess("text-host", env, tmp_path)
    try:
        host.wait_ready()
    finally:
        assert host.terminate() == 0
    first = host.log.splitlines()[0]
    assert not first.startswith("{") and " INFO " in first
