"""`python -m lightsout host` subprocesses for the chaos tests: start, kill -9, stop.

Each host gets the test's settings, recovery timings short enough for a test to watch the
janitor and the sweeper work, its own worker name, a free port and its own log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from lightsout.client import ApiClient, ApiError
from lightsout.devservices import free_port
from tests.e2e.hosts import wait_for as wait_for  # shared with the e2e tests
from tests.fixtures_services import TEST_API_KEYS, TEST_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]

# The defaults are a 60 s lease, 15 s grace, 10 min stall and a janitor every 10 s;
# these make every repair happen within seconds.
FAST_RECOVERY = {
    "LIGHTSOUT_TASK_LEASE_S": "6",
    "LIGHTSOUT_HEARTBEAT_S": "1",
    "LIGHTSOUT_SWEEP_GRACE_S": "2",
    "LIGHTSOUT_JANITOR_SCHEDULE": "*/2 * * * * *",
    "LIGHTSOUT_STALL_S": "20",
}
READY_TIMEOUT_S = 60.0


def say(text: str) -> None:
    """Print one line of the test's own report (shown by pytest -s and in CI logs)."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


class HostProcess:
    """One local host process; `kill()` is kill -9, `stop()` the clean SIGTERM stop."""

    def __init__(
        self, name: str, env: Mapping[str, str], log_dir: Path, concurrency: int | None = None
    ) -> None:
        self.name, self.port = name, free_port()
        self.log_path = log_dir / f"host-{name}.log"
        self.api = ApiClient(f"http://127.0.0.1:{self.port}", timeout_s=30, key=TEST_KEY)
        command = [sys.executable, "-m", "lightsout", "host", "--port", str(self.port)]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--no-migrate"],
                cwd=REPO_ROOT,
                env={**env, "LIGHTSOUT_WORKER_NAME": name},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait until the host serves HTTP; return the seconds it took since its start."""
        wait_for(self._serving, timeout, f"host {self.name} to serve HTTP")
        return time.monotonic() - self.started

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"host {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        try:
            status, _ = self.api.request("GET", "health")
        except ApiError:
            return False
        return status in (200, 503)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (a crash point); return its exit code."""
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9: no clean-up runs, leases and claims are left behind."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP) where it is."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, as a platform stops an instance; kill -9 if it does not end in time."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        """How many lines of this host's log contain `needle`."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return sum(needle in line for line in text.splitlines())


class Fleet:
    """The hosts of one test; every one still running is stopped at the end."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = dict(env), log_dir
        self.hosts: list[HostProcess] = []

    def start(
        self, name: str, ready: bool = True, concurrency: int | None = None, **overrides: str
    ) -> HostProcess:
        """Start a host; `concurrency` is its in-flight messages per queue (host default 24)."""
        host = HostProcess(name, {**self.env, **overrides}, self.log_dir, concurrency)
        self.hosts.append(host)
        if ready:
            host.wait_ready()
        return host

    def close(self) -> None:
        """Stop every host still running, all at once."""
        running = [host for host in self.hosts if host.exit_code is None]
        for host in running:
            host.proc.send_signal(signal.SIGTERM)
        for host in running:
            host.stop()

    def report_failures(self) -> None:
        """Print the end of each host's log: the first place to look when a test failed."""
        for host in self.hosts:
            say(f"--- log of host {host.name} (exit {host.exit_code}) ---\n{host.log_tail(25)}")


def host_env(settings: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The environment of a host: ours, the test's settings, fast recovery, overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTSOUT_", "PYTEST"))}
    env.pop("DATABASE_URL", None)
    env.pop("AzureWebJobsStorage", None)
    env.update(LIGHTSOUT_API_KEYS=TEST_API_KEYS, LIGHTSOUT_SELFTEST_JOB_TYPES="true")
    env.update(settings)
    env.update(FAST_RECOVERY)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env
