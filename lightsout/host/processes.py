"""FUNCTIONS_WORKER_PROCESS_COUNT: more than one worker process behind one host's port.

The Functions host starts FUNCTIONS_WORKER_PROCESS_COUNT language worker processes (1 to
10, default 1) and spreads invocations over them: Python runs one thread of Python code at
a time, so more processes is how one instance of a Python app uses more than one core.
The local host does the same with extra processes, each serving the app's HTTP and queue
functions on the same port (SO_REUSEPORT: the kernel spreads new connections over them,
and each process polls the queues on its own). Timer functions run in the first process
only, as the Functions host runs each timer once. The first process watches the others:
when one exits on its own, the host stops with exit code 1 rather than serve short-handed.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lightsout.host.errors import HostConfigError

if TYPE_CHECKING:
    from lightsout.host.runtime import Host

log = logging.getLogger(__name__)
SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"
MAX_PROCESSES = 10  # the Functions host's limit
# Set in the extra processes: their number, which also tells them to share the port.
PROCESS_NUMBER = "LIGHTSOUT_HOST_PROCESS_NUMBER"
WORKER_NAME = "LIGHTSOUT_WORKER_NAME"
# The pipe an extra process writes one byte to once it serves: the host waits for them all.
READY_FD = "LIGHTSOUT_HOST_READY_FD"
READY_TIMEOUT_S = 120.0
ORPHAN_CHECK_S = 1.0
_REPO_ROOT = Path(__file__).resolve().parents[2]
_CHILD = "import sys; from lightsout.host.processes import run_extra; sys.exit(run_extra(sys.argv))"


def process_count(environ: Mapping[str, str]) -> int:
    """The number of worker processes the setting asks for; HostConfigError if it is not one."""
    raw = environ.get(SETTING, "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PROCESSES:
        raise HostConfigError(
            f"{SETTING} must be a whole number from 1 to {MAX_PROCESSES}, not {raw!r}"
        )
    return int(raw)


def shares_port(environ: Mapping[str, str]) -> bool:
    """Whether this process serves its port together with other worker processes."""
    return PROCESS_NUMBER in environ or process_count(environ) > 1


class ExtraProcesses:
    """The worker processes after the first: started, watched and stopped by the first."""

    def __init__(self, count: int, kinds: frozenset[str]) -> None:
        self.count, self.kinds = count, kinds
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, host: Host) -> None:
        """Start them on the host's port and wait until each serves; their output is ours.

        Called once the host's socket is bound and before it serves, so that the host
        answers its first request (its health check) only when every process does.
        """
        args = [str(host.app_dir), str(host.port), str(host.concurrency or "")]
        args.append(",".join(sorted(self.kinds)))
        read_end, write_end = os.pipe()
        try:
            for number in range(2, self.count + 2):
                cmd = [sys.executable, "-c", _CHILD, *args]
                env = _child_env(number, write_end)
                self._procs.append(subprocess.Popen(cmd, env=env, pass_fds=(write_end,)))
            os.close(write_end)
            _wait_ready(read_end, self.count)
        except BaseException:
            self.stop(5)
            raise
        finally:
            os.close(read_end)
        log.info("Worker processes: pids %s", ", ".join(str(p.pid) for p in self._procs))

    def exited(self) -> list[tuple[int, int]]:
        """(pid, exit code) of each process that has exited."""
        return [(p.pid, code) for p in self._procs if (code := p.poll()) is not None]

    def stop(self, timeout: float) -> None:
        """Ask each process to stop (SIGTERM), wait up to `timeout`, then kill what is left."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop in %.0fs: killed", proc.pid, timeout)
                proc.kill()
                proc.wait()


def _child_env(number: int, ready_fd: int) -> dict[str, str]:
    env = {**os.environ, SETTING: "1", PROCESS_NUMBER: str(number), READY_FD: str(ready_fd)}
    path = [str(_REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    if name := os.environ.get(WORKER_NAME):
        env[WORKER_NAME] = f"{name}/{number}"  # their claims name the process that made them
    return env


def _wait_ready(read_end: int, count: int) -> None:
    """Read one byte from each of `count` processes; HostConfigError if one never sends it."""
    deadline, ready = time.monotonic() + READY_TIMEOUT_S, 0
    while ready < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([read_end], [], [], left)[0]:
            raise HostConfigError(f"worker processes not serving after {READY_TIMEOUT_S:.0f}s")
        got = os.read(read_end, count)
        if not got:  # every write end is closed: a process exited before it served
            raise HostConfigError("a worker process exited while starting (its log says why)")
        ready += len(got)


def report_ready(environ: Mapping[str, str]) -> None:
    """In an extra process that now serves: tell the first process so."""
    if fd := environ.get(READY_FD):
        os.write(int(fd), b".")
        os.close(int(fd))


def run_extra(argv: list[str]) -> int:
    """Serve as one of the extra worker processes (the command ExtraProcesses starts)."""
    from lightsout.host.runtime import serve

    app_dir, port, concurrency, kinds = argv[1:5]
    stop = threading.Event()
    watcher = threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), stop), daemon=True)
    watcher.start()
    return serve(
        Path(app_dir),
        int(port),
        int(concurrency) if concurrency else None,
        stop,
        kinds=frozenset(kinds.split(",")),
    )


def _stop_when_orphaned(parent: int, stop: threading.Event) -> None:
    """Stop this process once the first one is gone (killed without a chance to stop us)."""
    while not stop.wait(ORPHAN_CHECK_S):
        if os.getppid() != parent:
            log.warning("The host's first process (%d) is gone: stopping", parent)
            stop.set()
