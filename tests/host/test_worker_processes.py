"""FUNCTIONS_WORKER_PROCESS_COUNT: worker processes behind one port, watched and stopped."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lightsout.devservices import free_port
from lightsout.host import serve
from tests.host.conftest import SampleApp, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE = (
    "import sys; from pathlib import Path; from lightsout.host import serve; "
    "sys.exit(serve(Path(sys.argv[1]), port=int(sys.argv[2])))"
)


@contextmanager
def served(
    app: SampleApp, count: int, **extra_env: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FUNCTIONS_WORKER_PROCESS_COUNT": str(count)}
    env.update(extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(app.dir), str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def answering_pid(port: int) -> int | None:
    """The pid of the process that answered GET /api/pid on a new connection, if one did."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/api/pid")
        return int(json.loads(conn.getresponse().read())["pid"])
    except OSError:
        return None
    finally:
        conn.close()


def pids_answering(port: int, want: int, seconds: float = 30) -> set[int]:
    """The pids answering new connections, until `want` of them did or `seconds` passed."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    # The kernel spreads new connections by a hash of their ports; an extra process may
    # still be starting.
    while len(seen) < want and time.monotonic() < deadline:
        if (pid := answering_pid(port)) is not None:
            seen.add(pid)
    return seen


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_two_processes_serve_one_port_and_stop_together(sample_app: SampleApp) -> None:
    with served(sample_app, 2) as (proc, port):
        wait_for(lambda: answering_pid(port), timeout=30, message="the host to answer")
        # The host answers once every process serves: both answer at once.
        pids = pids_answering(port, 2, seconds=2)
        assert proc.pid in pids
        assert len(pids) == 2, pids
        (extra,) = pids - {proc.pid}
        # Timers run once, in the first process.
        wait_for(lambda: len(sample_app.read("tick")) >= 3, message="three timer runs")
        assert {r["pid"] for r in sample_app.read("tick")} == {proc.pid}
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output.decode()
    assert not alive(extra)


def test_a_worker_process_that_dies_stops_the_host(sample_app: SampleApp) -> None:
    with served(sample_app, 2) as (proc, port):
        wait_for(lambda: answering_pid(port), timeout=30, message="the host to answer")
        (extra,) = pids_answering(port, 2) - {proc.pid}
        os.kill(extra, signal.SIGKILL)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"Worker process {extra} exited with -9: stopping the host" in output.decode()


def test_worker_processes_stop_when_the_first_is_killed(sample_app: SampleApp) -> None:
    with served(sample_app, 2) as (proc, port):
        wait_for(lambda: answering_pid(port), timeout=30, message="the host to answer")
        (extra,) = pids_answering(port, 2) - {proc.pid}
        proc.kill()
        proc.wait()
        wait_for(lambda: not alive(extra), timeout=30, message="the orphaned process to stop")
    assert answering_pid(port) is None


def test_a_worker_process_that_cannot_start_stops_the_start(sample_app: SampleApp) -> None:
    with served(sample_app, 3, SAMPLE_FAIL_IN_PROCESS="3") as (proc, port):
        output, _ = proc.communicate(timeout=60)
        assert answering_pid(port) is None
    assert proc.returncode == 1
    text = output.decode()
    assert "sample app told to fail in this worker process" in text
    assert "The host cannot start: a worker process exited while starting" in text


def test_one_process_by_default_serves_alone(sample_app: SampleApp) -> None:
    with served(sample_app, 1) as (proc, port):
        wait_for(lambda: answering_pid(port), timeout=30, message="the host to answer")
        assert pids_answering(port, 2, seconds=5) == {proc.pid}
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


@pytest.mark.parametrize("value", ["0", "11", "two"])
def test_a_count_out_of_range_stops_the_start(
    sample_app: SampleApp,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FUNCTIONS_WORKER_PROCESS_COUNT", value)
    with caplog.at_level(logging.ERROR):
        assert serve(sample_app.dir, 0) == 1
    assert f"FUNCTIONS_WORKER_PROCESS_COUNT must be a whole number from 1 to 10, not '{value}'" in (
        caplog.text
    )
