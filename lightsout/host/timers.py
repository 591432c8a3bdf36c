"""Run timer-triggered functions on their NCRONTAB (or TimeSpan) schedules, in UTC."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from azure.functions.timer import TimerRequest

from lightsout.host import ncrontab
from lightsout.host.discovery import TimerFunction
from lightsout.host.errors import HostConfigError
from lightsout.host.hostjson import parse_timespan
from lightsout.host.invoke import Invoker

log = logging.getLogger(__name__)
PAST_DUE_AFTER = timedelta(seconds=1)  # woken this late (e.g. after a suspend): past due


class Schedule(Protocol):
    def next_after(self, t: datetime) -> datetime: ...


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule ("00:05:00"): every interval after the previous run."""

    interval: timedelta

    def next_after(self, t: datetime) -> datetime:
        return t + self.interval


def parse_schedule(function: TimerFunction) -> Schedule:
    """An NCRONTAB expression, or a TimeSpan as App Service plans allow."""
    text = function.schedule
    try:
        if ":" in text and len(text.split()) == 1:
            return IntervalSchedule(parse_timespan(text))
        return ncrontab.parse(text)
    except ValueError as exc:
        raise HostConfigError(f"timer function {function.name!r}: {exc}") from exc


class TimerRunner:
    """One thread per timer function; a run never overlaps the function's previous run."""

    def __init__(self, function: TimerFunction, invoker: Invoker) -> None:
        self.function, self.invoker = function, invoker
        self.schedule = parse_schedule(function)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"timer-{function.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        if self.function.run_on_startup:
            self._run(past_due=False)
        anchor = datetime.now(UTC)
        while not self._stopping.is_set():
            due = self.schedule.next_after(anchor)
            if self._stopping.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            self._run(past_due=datetime.now(UTC) - due > PAST_DUE_AFTER)
            # Occurrences missed while the function ran are skipped, as the Functions host does.
            anchor = max(due, datetime.now(UTC))

    def _run(self, past_due: bool) -> None:
        # The invoker logs a failure; a failing run never stops the timer.
        with contextlib.suppress(Exception):
            self.invoker.call(self.function, TimerRequest(past_due=past_due))
