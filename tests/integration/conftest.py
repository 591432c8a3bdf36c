"""In-process integration tests deliver every queue message themselves, one at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row


@pytest.fixture(autouse=True)
def _no_local_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stage's first message run on a thread of the runtime (controllers/localrun.py)
    # would race the test's own deliveries; tests/integration/test_local_runs.py and the
    # end-to-end and chaos tests run with it on, as hosts do by default.
    monkeypatch.setenv("LIGHTSOUT_LOCAL_RUNS", "0")


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection of the test's own to the app's schema, each statement committed."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET search_path TO lightsout")
        yield conn
