"""Ride out a short outage of PostgreSQL or the queues inside one message delivery."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from schemas.exceptions import DatabaseUnavailable, QueueUnavailable

log = logging.getLogger(__name__)


T = TypeVar("T")


def while_unavailable(action: Callable[[], T], wait_s: float) -> T:
    """Run `action`, retrying with backoff for up to `wait_s` while a dependency is down.

    A message whose handler raises is delivered again and, after maxDequeueCount
    deliveries, poisoned; waiting here keeps an outage from poisoning healthy work, and
    keeps finished tasks' results until they can be written. Actions are idempotent
    (DESIGN invariant 7), so running one again is safe.
    """
    deadline, delay = time.monotonic() + wait_s, 0.5
    while True:
        try:
            return action()
        except (DatabaseUnavailable, QueueUnavailable) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("dependency unavailable, retrying in %.1f s: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
