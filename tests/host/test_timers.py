"""Timer triggers in a running host."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from lightsout.host import Host
from tests.host.conftest import SampleApp, wait_for


def test_run_on_startup_then_every_second(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    started = time.time()
    start_host()
    first = wait_for(lambda: sample_app.read("tick"), message="the start-up run")[0]
    assert first["at"] - started < 1.0
    assert first["past_due"] is False
    ticks = wait_for(lambda: (t := sample_app.read("tick")) and len(t) >= 3 and t, timeout=5)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(ticks[1:])]
    assert all(0.3 < gap < 2.5 for gap in gaps), gaps  # about 1 s, on a busy machine too


def test_a_failing_timer_keeps_its_schedule(
    sample_app: SampleApp, start_host: Callable[..., Host]
) -> None:
    start_host()
    wait_for(
        lambda: len(sample_app.read("tick_fail")) >= 2,
        timeout=5,
        message="a second run after a failure",
    )
