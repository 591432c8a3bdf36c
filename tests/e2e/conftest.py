"""Fixtures of the end-to-end tests: local hosts as subprocesses against real services."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.e2e.hosts import HostProcess

StartHosts = Callable[..., list[HostProcess]]
LOG_TAIL_CHARS = 20_000


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so a fixture can tell that its test failed."""
    report = yield
    item.stash.setdefault(PHASES, {})[report.when] = report
    return report


PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture
def start_hosts(
    request: pytest.FixtureRequest, settings_env: dict[str, str], tmp_path: Path
) -> Iterator[StartHosts]:
    """Start hosts (all at once, then wait for each to be healthy); SIGTERM them afterwards.

    When the test failed, every host's log is written to stderr.
    """
    started: list[HostProcess] = []
    env = {**os.environ, **settings_env}

    def start(
        count: int = 1, args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
    ) -> list[HostProcess]:
        host_env = {**env, **(extra_env or {})}
        new = [
            HostProcess(f"host-{len(started) + n + 1}", host_env, tmp_path, args)
            for n in range(count)
        ]
        started.extend(new)
        for host in new:
            host.wait_ready()
        return new

    yield start
    problems = []
    for host in started:
        try:
            host.terminate()
        except AssertionError as exc:
            problems.append(str(exc))
    phases = request.node.stash.get(PHASES, {})
    if problems or any(report.failed for report in phases.values()):
        for host in started:
            sys.stderr.write(f"\n----- {host.name} log ({host.log_path}) -----\n")
            sys.stderr.write(host.log[-LOG_TAIL_CHARS:])
    assert not problems, problems
