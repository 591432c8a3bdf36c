"""Connection pools bound to the Lightsout schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from schemas.settings import Settings

Connection = psycopg.Connection[dict[str, object]]


def set_search_path(conn: psycopg.Connection[object], schema: str) -> None:
    """Point unqualified names at `schema` for the rest of the session."""
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))


@contextmanager
def autocommit(pool: ConnectionPool[Connection]) -> Iterator[Connection]:
    """Check out a connection in autocommit mode, for one self-contained statement."""
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:  # a broken connection is thrown away by the pool
                conn.autocommit = False


def open_pool(settings: Settings, name: str = "lightsout") -> ConnectionPool[Connection]:
    """Open a pool whose connections use dict rows and the configured schema."""

    def configure(conn: Connection) -> None:
        set_search_path(conn, settings.schema_name)
        conn.commit()

    return ConnectionPool(
        settings.conninfo,
        connection_class=psycopg.Connection[dict[str, object]],
        kwargs={"row_factory": dict_row, "autocommit": False},
        configure=configure,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        name=name,
        open=True,
        timeout=10.0,
    )
