"""Stopping: in-flight invocations finish, unfinished messages come back, signals work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from lightsout.host import Host, serve
from tests.host.conftest import SampleApp, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def events(app: SampleApp) -> list[str]:
    return [str(r["event"]) for r in app.read("work")]


def test_stop_event_lets_an_in_flight_invocation_finish(sample_app: SampleApp) -> None:
    stop = threading.Event()
    codes: list[int] = []
    server = threading.Thread(target=lambda: codes.append(serve(sample_app.dir, 0, None, stop)))
    server.start()
    sample_app.send(sample_app.work_queue, {"id": "inflight", "action": "sleep", "seconds": 1.5})
    wait_for(lambda: events(sample_app) == ["start"], message="the invocation to start")
    stop.set()
    server.join(timeout=20)
    assert codes == [0]
    assert events(sample_app) == ["start", "end"]
    assert sample_app.peek_all(sample_app.work_queue) == []  # finished, so deleted


def test_unfinished_message_is_redelivered_after_its_lease(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    host = start_host(lease_time=timedelta(seconds=2), grace_seconds=0.5)
    sample_app.send(sample_app.work_queue, {"id": "cut", "action": "sleep", "seconds": 4})
    wait_for(lambda: events(sample_app) == ["start"])
    assert host.stop() is False
    assert sample_app.peek_all(sample_app.work_queue) == []  # still leased
    wait_for(
        lambda: sample_app.peek_all(sample_app.work_queue),
        timeout=10,
        message="the message to become visible again",
    )


def test_sigterm_stops_the_host_after_the_running_function(sample_app: SampleApp) -> None:
    script = (
        "import sys; from pathlib import Path; from lightsout.host import serve; "
        "sys.exit(serve(Path(sys.argv[1]), port=0))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(sample_app.dir)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        sample_app.send(sample_app.work_queue, {"id": "term", "action": "sleep", "seconds": 1.5})
        wait_for(
            lambda: events(sample_app) == ["start"], timeout=30, message="the invocation to start"
        )
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output.decode()
    assert events(sample_app) == ["start", "end"]
    assert b"SIGTERM received" in output
    assert sample_app.peek_all(sample_app.work_queue) == []
