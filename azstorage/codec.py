"""Message text as the queue stores it, by host.json's extensions.queues.messageEncoding."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Literal

from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import TextBase64EncodePolicy

MessageEncoding = Literal["base64", "none"]


class NotEncoded(ValueError):
    """A message read from a queue is not in the encoding host.json names."""

    def __init__(self, encoding: MessageEncoding) -> None:
        super().__init__(f"not {encoding} as host.json messageEncoding says")


def wire_text(text: str, encoding: MessageEncoding) -> str:
    """Return the message text as the queue service stores it."""
    if encoding == "base64":
        # The SDK's own policy, so the bytes are exactly what the Functions host decodes.
        return TextBase64EncodePolicy().encode(text)
    return text


def wire_size(text: str, encoding: MessageEncoding) -> int:
    """Return the bytes a message counts against the 64 KiB limit (base64 adds a third)."""
    if encoding == "base64":
        return 4 * math.ceil(len(text.encode("utf-8")) / 3)
    return len(text.encode("utf-8"))


def decode_body(wire: str, encoding: MessageEncoding) -> bytes:
    """Return a stored message's body as the function sees it, or raise NotEncoded."""
    if encoding == "none":
        return wire.encode("utf-8")
    try:
        # Like .NET's Convert.FromBase64String, which the Functions host uses: whitespace
        # inside the text is ignored.
        return base64.b64decode("".join(wire.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotEncoded(encoding) from exc


def decode_text(wire: str, encoding: MessageEncoding) -> str:
    """Return a stored message's body as UTF-8 text, or raise NotEncoded."""
    try:
        return decode_body(wire, encoding).decode("utf-8")
    except UnicodeError as exc:
        raise NotEncoded(encoding) from exc


class UndecodedMessage(FunctionQueueMessage):
    """A poison-queue message handed to its function as stored, because it cannot be decoded.

    Only the local host makes these. The Functions host moves a message it cannot decode
    to `<queue>-poison`, and from a poison queue on to `<queue>-poison-poison`, where no
    function sees it; the local host instead gives the poison queue's function the raw
    text and `reason`, so the message is recorded at once.
    """

    def __init__(self, *, reason: str, **fields: Any) -> None:
        super().__init__(**fields)  # type: ignore[no-untyped-call]  # untyped in azure.functions
        self.reason = reason
