"""Fixtures of the chaos tests: host fleets, a printed seed, a database probe, durations."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.chaos.hosts import Fleet, host_env, say
from tests.chaos.probe import Probe

DURATIONS: list[tuple[str, float]] = []
FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print each chaos test's duration, and the module's total after its last test."""
    started = time.monotonic()
    say(f"=== {request.node.name}")
    yield
    took = time.monotonic() - started
    DURATIONS.append((request.node.name, took))
    say(f"=== {request.node.name} took {took:.1f} s")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show what each passed chaos test printed, also without -s: CI logs must show it."""
    passed = [
        r
        for r in terminalreporter.stats.get("passed", [])
        if r.when == "call" and "chaos" in r.keywords and r.capstdout
    ]
    if passed:
        terminalreporter.section("chaos reports")
        for report in passed:
            terminalreporter.write_line(f"--- {report.nodeid}")
            terminalreporter.write(report.capstdout)
    if DURATIONS:
        total = sum(t for _, t in DURATIONS)
        lines = [f"  {t:6.1f} s  {name}" for name, t in DURATIONS]
        terminalreporter.section("chaos durations (budget 480 s)")
        for line in [*lines, f"  {total:6.1f} s  total"]:
            terminalreporter.write_line(line)


@pytest.fixture
def seed() -> int:
    """CHAOS_SEED if set, else a new seed; printed so a run can be repeated."""
    value = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    say(f"seed {value} (repeat with CHAOS_SEED={value})")
    return value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def fleets(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[dict[str, str]], Fleet]]:
    """Make fleets of hosts for given settings; all stop at the end, logs shown on failure."""
    made: list[Fleet] = []

    def make(settings: dict[str, str]) -> Fleet:
        made.append(Fleet(host_env(settings), tmp_path))
        return made[-1]

    yield make
    for hosts in made:
        if request.node.stash.get(FAILED, False):
            hosts.report_failures()
        hosts.close()


@pytest.fixture
def fleet(fleets: Callable[[dict[str, str]], Fleet], settings_env: dict[str, str]) -> Fleet:
    """Hosts against this test's database and queues."""
    return fleets(settings_env)


@pytest.fixture
def probe(database_url: str) -> Iterator[Probe]:
    with Probe(database_url) as p:
        yield p
