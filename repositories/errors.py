"""Translate psycopg errors into the Lightsout exception tree, once, here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.exceptions import (
    Conflict,
    ContractViolation,
    DatabaseError,
    DatabaseUnavailable,
    NotFound,
    TransactionConflict,
)

ROW_IDS = ("job_id", "task_id", "stage", "poison_id", "event_id")


@contextmanager
def translated(action: str, **context: object) -> Iterator[None]:
    """Run a database action; re-raise its psycopg errors as LightsoutError with the ids."""
    try:
        yield
    except pg_errors.NoDataFound as exc:
        raise NotFound(f"{action}: {exc.diag.message_primary or exc}", **context) from exc
    # Before OperationalError: psycopg files SQLSTATE classes 40 and 55 under it.
    except (pg_errors.TransactionRollback, pg_errors.DeadlockDetected) as exc:
        raise TransactionConflict(
            f"{action}: {exc.diag.message_primary or exc}", **context
        ) from exc
    except (pg_errors.UniqueViolation, pg_errors.ObjectNotInPrerequisiteState) as exc:
        raise Conflict(f"{action}: {exc.diag.message_primary or exc}", **context) from exc
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"{action}: database unavailable: {exc}", **context) from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"{action}: {exc.diag.message_primary or exc}", **context) from exc


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def parse_row(model: type[M], row: object) -> M:
    """Return a database row as `model`, or raise ContractViolation naming the row and field."""
    try:
        return model.model_validate(row)
    except ValidationError as exc:
        ids = {k: v for k, v in row.items() if k in ROW_IDS} if isinstance(row, dict) else {}
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ContractViolation(
            f"a {model.__name__} row breaks its contract: {problems}", **ids
        ) from exc


def parse_json(adapter: TypeAdapter[T], text: str | bytes, what: str, **ids: object) -> T:
    """Return JSON rows the database built as `adapter`'s type, or raise ContractViolation."""
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContractViolation(
            f"{what} breaks its contract at {where}: {first['msg']}", **ids
        ) from exc
