"""Connection pools bound to the Lightsout schema."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from repositories.tracecontext import TracedCursor
from schemas.settings import Settings

Connection = psycopg.Connection[dict[str, object]]


def set_search_path(conn: psycopg.Connection[object], schema: str) -> None:
    """Point unqualified names at `schema` for the rest of the session."""
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))


def open_pool(settings: Settings, name: str = "lightsout") -> ConnectionPool[Connection]:
    """Open a pool whose connections use dict rows and the configured schema."""

    def configure(conn: Connection) -> None:
        set_search_path(conn, settings.schema_name)
        conn.commit()

    return ConnectionPool(
        settings.conninfo,
        connection_class=psycopg.Connection[dict[str, object]],
        kwargs={"row_factory": dict_row, "autocommit": False, "cursor_factory": TracedCursor},
        configure=configure,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        name=name,
        open=True,
        timeout=10.0,
    )
