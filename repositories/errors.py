"""Translate psycopg errors into the Lightsout exception tree, once, here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from schemas.exceptions import (
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    NotFound,
    TransactionConflict,
)


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
