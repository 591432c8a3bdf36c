"""A message as a queue stores it, received undecoded (the janitor's poison clean-up)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RawMessage:
    """A received message as the queue stores it, with what deleting it takes."""

    message_id: str
    pop_receipt: str
    text: str
    dequeue_count: int
