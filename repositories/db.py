"""Connection pools bound to the Lightsout schema, fit for a transaction pooler.

Under transaction pooling (PgBouncer, Azure's built-in one on port 6432) each transaction
may run on another server connection, so nothing set for a session follows the next
transaction: not `SET search_path`, not a prepared statement. Every block of the pool is
therefore one transaction that names its schema first (`SET LOCAL search_path` lasts
until that transaction ends), and prepared statements are off behind such a pooler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from repositories.entra import EntraPassword, entra_password
from repositories.tracecontext import TracedCursor, current_traceparent
from schemas.settings import DatabaseSettings

Connection = psycopg.Connection[dict[str, object]]
log = logging.getLogger(__name__)
PGBOUNCER_PORT = 6432  # PgBouncer's default, and Azure's built-in pooler
# SET LOCAL search_path as a function (quote_ident quotes as SET does), so that the trace
# is named in the same statement (one_trip).
SET_PATH = "SELECT set_config('search_path', quote_ident(%s), true)"
SET_PATH_AND_TRACE = f"{SET_PATH}, set_config('application_name', %s, true)"


def search_path_sql(schema: str) -> sql.Composed:
    """The statement that points unqualified names at `schema` until the transaction ends."""
    return sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema))


def set_search_path(conn: psycopg.Connection[Any], schema: str) -> None:
    """Point unqualified names at `schema` until the current transaction ends."""
    conn.execute(search_path_sql(schema))


def behind_transaction_pooler(settings: DatabaseSettings) -> bool:
    """LIGHTSOUT_DB_POOLER, or with `auto` whether the port is PgBouncer's (6432)."""
    if settings.db_pooler != "auto":
        return settings.db_pooler == "transaction"
    port = conninfo_to_dict(settings.conninfo).get("port") or settings.pgport
    return str(port) == str(PGBOUNCER_PORT)


class SchemaPool(ConnectionPool[Connection]):
    """A pool whose every `connection()` block is one transaction in the configured schema.

    `conn.commit()` inside a block raises (psycopg forbids it inside a transaction block):
    a second transaction in the same block would run without the schema.
    """

    def __init__(self, schema: str, **kwargs: Any) -> None:
        self.schema = schema
        super().__init__(**kwargs)

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        with super().connection(timeout) as conn, conn.transaction():
            set_search_path(conn, self.schema)
            yield conn

    def one_trip(
        self, query: str, params: Sequence[object], timeout: float | None = None
    ) -> list[dict[str, object]]:
        """Run one statement as its own transaction, in one round trip; return its rows.

        The schema, the trace and the statement go to the server as one simple-query string
        (the parameters bound here, as psycopg's ClientCursor binds them), which PostgreSQL
        runs as one implicit transaction and commits when the statement ends: the locks the
        statement takes are released without waiting for this client to read the result (a
        wait that grows with the GIL and the machine's load: bench/PROFILE.md). Still one
        transaction that names its schema first, so it holds behind a transaction pooler.
        Cheaper in this process than pipeline mode, which a submission paid ~30% of its
        CPU for; the statement is parsed each time (no server-side prepare).
        """
        with self._unmanaged(timeout) as conn:  # the string is its own transaction
            return self._named_first(conn, "", query, params)

    @contextmanager
    def begun(
        self, query: str, params: Sequence[object], timeout: float | None = None
    ) -> Iterator[tuple[Connection, list[dict[str, object]]]]:
        """A transaction opened by `query` in one round trip; yield the connection and its rows.

        BEGIN, the schema (and the trace) and `query` go as one simple-query string, as in
        one_trip, instead of BEGIN, SET LOCAL and the query one after another; the block's
        further statements (a COPY) run in the same transaction, committed when it ends and
        rolled back if it raises. For a hot path whose first statement decides the rest
        (TaskRepository.start_stage).
        """
        with self._unmanaged(timeout) as conn:  # the string's BEGIN opens the transaction
            yield conn, self._named_first(conn, "BEGIN; ", query, params)
            conn.execute("COMMIT")

    @contextmanager
    def _unmanaged(self, timeout: float | None) -> Iterator[Connection]:
        """A pooled connection on which psycopg opens no transaction: the caller's SQL does.

        A block that raises leaves no transaction open behind it (ROLLBACK if one is).
        """
        with super().connection(timeout) as conn:
            conn.autocommit = True
            try:
                yield conn
            except BaseException:
                if conn.info.transaction_status is not TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                raise
            finally:
                conn.autocommit = False

    def _named_first(
        self, conn: Connection, start: str, query: str, params: Sequence[object]
    ) -> list[dict[str, object]]:
        """Send `start`, the schema (and the trace), then `query`, as one simple-query string.

        The parameters are bound here, as psycopg's ClientCursor binds them. Returns the
        rows of `query`, the string's last statement.
        """
        parent = current_traceparent()
        prelude = SET_PATH if parent is None else SET_PATH_AND_TRACE
        named = (self.schema,) if parent is None else (self.schema, parent)
        cursor = psycopg.ClientCursor(conn)
        text = cursor.mogrify(f"{start}{prelude}; {query}", (*named, *params)).encode()
        cursor.execute(text, prepare=False)
        while cursor.nextset():  # past BEGIN and the prelude, to the statement's result
            pass
        return cursor.fetchall() if cursor.description else []

    def one_row(
        self, query: str, params: Sequence[object], timeout: float | None = None
    ) -> dict[str, object] | None:
        """one_trip for a statement that answers one row (or none)."""
        rows = self.one_trip(query, params, timeout)
        return rows[0] if rows else None


def open_pool(settings: DatabaseSettings, name: str = "lightsout") -> SchemaPool:
    """Open a pool whose connections use dict rows, the configured schema and its auth."""
    pooled = behind_transaction_pooler(settings)
    options: dict[str, Any] = {
        "row_factory": dict_row,
        "autocommit": False,
        "cursor_factory": TracedCursor,  # names the trace in each traced transaction
    }
    # psycopg prepares a statement on the server after 5 executions by default; PgBouncer
    # before 1.21 cannot follow it to the next transaction's server connection.
    options["prepare_threshold"] = None if pooled else 5
    password = entra_password(settings) if settings.db_auth == "entra" else None
    if password:
        password()  # at start-up, a credential that gives no token names itself at once
    log.info(
        "database pool %s: %s (LIGHTSOUT_DB_POOLER=%s), server-side prepared statements %s, %s",
        name,
        "through a transaction pooler" if pooled else "no transaction pooler",
        settings.db_pooler,
        "off" if pooled else "on",
        "Microsoft Entra tokens as password" if password else "password from the settings",
    )
    return SchemaPool(
        settings.schema_name,
        conninfo=settings.conninfo,
        connection_class=psycopg.Connection[dict[str, object]],
        kwargs=_with_token(options, password) if password else options,
        check=password.check if password else None,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        name=name,
        open=True,
        timeout=10.0,
    )


def _with_token(options: dict[str, Any], password: EntraPassword) -> Callable[[], dict[str, Any]]:
    """Connection options asked for at each new connection, so each gets a current token."""
    return lambda: {**options, "password": password()}


def migrations_conninfo(settings: DatabaseSettings) -> str:
    """The direct connection string for migrations, with a token as password under Entra."""
    if settings.db_auth != "entra":
        return settings.migrations_conninfo
    return make_conninfo(settings.migrations_conninfo, password=entra_password(settings)())
