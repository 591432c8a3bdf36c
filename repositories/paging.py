"""Keyset pagination cursors: opaque to clients, validated when they come back."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from schemas.exceptions import ContractViolation

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*key: object) -> str:
    """Return an opaque cursor for the last key of a page."""
    text = "\x1f".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in key)
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_cursor(cursor: str | None, *kinds: Callable[[str], object]) -> tuple[str, ...] | None:
    """Return the key parts of a cursor made by encode_cursor, or raise ContractViolation.

    With `kinds`, the cursor must have one part per kind, each parsing as its kind, so a
    forged cursor is refused here instead of failing the query.
    """
    if cursor is None:
        return None
    try:
        parts = tuple(base64.urlsafe_b64decode(cursor.encode()).decode().split("\x1f"))
        if kinds and len(parts) != len(kinds):
            raise ValueError(f"{len(parts)} parts, not {len(kinds)}")
        for part, kind in zip(parts, kinds, strict=False):
            kind(part)
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ContractViolation("cursor is not one this API returned", cursor=cursor) from exc
    return parts
