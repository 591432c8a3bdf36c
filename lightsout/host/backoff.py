"""Randomized exponential back-off between polls of an empty (or unreachable) queue."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `minimum` up to `maximum`, each drawn at random near the step.

    Like the Functions host's queue listener: poll again at once after finding messages,
    wait longer after each empty poll, never longer than maxPollingInterval.
    """

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = min(minimum, maximum)
        self.maximum = maximum
        self._step = 0.0

    def reset(self) -> None:
        self._step = 0.0

    def next(self) -> float:
        """Return the next delay in seconds."""
        self._step = self.minimum if self._step == 0 else min(self._step * 2, self.maximum)
        # Jitter keeps several hosts polling one queue from falling into step.
        return min(self.maximum, random.uniform(self._step * 0.8, self._step * 1.2))
