"""The one exception tree of Lightsout; each docstring is the default message."""

from __future__ import annotations


class LightsoutError(Exception):
    """Lightsout failed."""

    def __init__(self, message: str | None = None, **context: object) -> None:
        self.context = context
        text = message or (self.__doc__ or "").strip()
        if context:
            text += " (" + ", ".join(f"{k}={v!r}" for k, v in context.items()) + ")"
        super().__init__(text)


class ConfigurationError(LightsoutError):
    """A setting is missing or invalid."""


class IllegalTransition(LightsoutError):
    """A status change is not declared in the transition table."""


class ContractViolation(LightsoutError):
    """Data crossing a boundary does not match its contract."""


class InvalidParameters(ContractViolation):
    """The job's parameters do not match its job type's model."""

    def __init__(self, message: str, errors: list[dict[str, object]], **context: object) -> None:
        super().__init__(message, **context)
        self.errors = errors


class NotFound(LightsoutError):
    """The requested record does not exist."""


class Conflict(LightsoutError):
    """The request conflicts with the record's current state."""


class DatabaseError(LightsoutError):
    """The database refused or failed an operation."""


class TransactionConflict(DatabaseError):
    """The database rolled a transaction back (deadlock, serialization); it may be retried."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached."""


class QueueError(LightsoutError):
    """The queue service refused or failed an operation."""


class QueueUnavailable(QueueError):
    """The queue service cannot be reached."""


class MessageTooLarge(QueueError):
    """A queue message exceeds the 64 KiB limit."""


class MigrationError(DatabaseError):
    """A migration could not be applied or reverted."""


class JobTypeError(LightsoutError):
    """A job type is unknown or declared wrongly."""


class PermanentTaskError(LightsoutError):
    """A task failed in a way that retrying cannot fix."""
