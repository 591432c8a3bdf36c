"""The engine cases of tests/unit/test_engine.py against real PostgreSQL.

The same CASES run there against the in-memory fakes; here the stores are the real
repositories (the bus stays the fake: queues are tested in test_queues.py), so any
difference between the fakes and the stored procedures fails one of the two runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from repositories.db import open_pool
from repositories.jobs import JobRepository
from repositories.poison import PoisonRepository
from repositories.tasks import TaskRepository
from schemas.settings import load_settings
from tests.fakes import FakeBus
from tests.unit.test_engine import CASES, Case, World

pytestmark = pytest.mark.integration


@pytest.fixture
def world(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("LIGHTSOUT_SCHEMA", "lightsout")
    with open_pool(load_settings()) as pool:
        yield World(JobRepository(pool), TaskRepository(pool), PoisonRepository(pool), FakeBus())


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("test_") for c in CASES])
def test_engine_case_on_postgres(case: Case, world: World) -> None:
    case(world)
