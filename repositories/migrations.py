"""Apply and revert the numbered migrations in sql/, each in one transaction with its row."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from repositories.db import set_search_path
from repositories.errors import translated
from schemas.exceptions import MigrationError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Path
    down: Path


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Return the migrations in version order; each needs an up and a down file."""
    found: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sql_dir.glob("*.sql"):
        match = FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name} is not named NNNN_name.up.sql / .down.sql")
        version = int(match["version"])
        if names.get(version, match["name"]) != match["name"]:
            # Two branches took one number: refuse rather than let one file win silently.
            raise MigrationError(
                f"two migrations share version {version}: {names[version]} and {match['name']}"
            )
        found.setdefault(version, {})[match["direction"]] = path
        names[version] = match["name"]
    migrations = []
    for version in sorted(found):
        files = found[version]
        if set(files) != {"up", "down"}:
            raise MigrationError("migration lacks its up or down file", version=version)
        migrations.append(Migration(version, names[version], files["up"], files["down"]))
    if migrations and migrations[0].version < 1:
        raise MigrationError("migration versions start at 1", version=migrations[0].version)
    # Gaps are allowed: numbers are reserved per branch, so one may land before a lower one.
    return migrations


@contextmanager
def _in_schema(conn: psycopg.Connection[Any], schema: str) -> Iterator[None]:
    """Run one transaction in `schema`, setting nothing for the session."""
    # Nothing of the session: through a transaction pooler the next one may run elsewhere.
    with conn.transaction():
        set_search_path(conn, schema)
        yield


def _prepare(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    with _in_schema(conn, schema):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )


def applied_versions(conn: psycopg.Connection[Any]) -> list[int]:
    """Return the versions recorded in schema_migrations, ascending."""
    rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [int(row[0]) for row in rows]


def _apply(conn: psycopg.Connection[Any], schema: str, migration: Migration, up: bool) -> None:
    script = (migration.up if up else migration.down).read_text()
    with translated("migrate", version=migration.version, up=up), _in_schema(conn, schema):
        # Take the lock inside the transaction so concurrent runners apply each version once;
        # a transaction-scoped lock also holds through a transaction pooler.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('lightsout.migrations'))")
        present = migration.version in applied_versions(conn)
        if present == up:
            return
        conn.execute(script.encode())
        if up:
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        else:
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (migration.version,))


def migrate(conninfo: str, schema: str = "lightsout", target: int | None = None) -> list[int]:
    """Move the schema to `target` (default: the newest); return the versions applied afterwards."""
    migrations = discover()
    latest = migrations[-1].version if migrations else 0
    goal = latest if target is None else target
    if not 0 <= goal <= latest:
        raise MigrationError(f"target must be between 0 and {latest}", target=target)
    with translated("migrate", schema=schema), _connect(conninfo) as conn:
        _prepare(conn, schema)
        with _in_schema(conn, schema):
            current = applied_versions(conn)
        for migration in migrations:
            if migration.version <= goal and migration.version not in current:
                _apply(conn, schema, migration, up=True)
        for migration in reversed(migrations):
            if migration.version > goal and migration.version in current:
                _apply(conn, schema, migration, up=False)
        with _in_schema(conn, schema):
            return applied_versions(conn)


def status(conninfo: str, schema: str = "lightsout") -> tuple[list[int], list[int]]:
    """Return (applied, pending) versions."""
    with translated("migration status", schema=schema), _connect(conninfo) as conn:
        _prepare(conn, schema)
        with _in_schema(conn, schema):
            applied = applied_versions(conn)
    return applied, [m.version for m in discover() if m.version not in applied]


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    # Autocommit: each step is its own explicit transaction; no prepared statements, which
    # a transaction pooler could not carry (migrations are meant for the direct port anyway).
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
