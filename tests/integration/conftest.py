"""In-process integration tests deliver every queue message themselves, one at a time."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_local_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stage's first message run on a thread of the runtime (controllers/localrun.py)
    # would race the test's own deliveries; tests/integration/test_local_runs.py and the
    # end-to-end and chaos tests run with it on, as hosts do by default.
    monkeypatch.setenv("LIGHTSOUT_LOCAL_RUNS", "0")
