"""The README's example job type (examples/word_count.py) runs, and the README shows it as is."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from controllers.registry import Registry, registry
from examples import word_count
from schemas.results import StageResultContract
from schemas.status import JobStatus
from tests.fakes import FakeBus, FakeDatabase, FakeJobStore, FakePoisonStore, FakeTaskStore
from tests.unit.test_engine import World

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "word_count.py"


def word_count_world() -> World:
    own = Registry()
    word_count.register(own)
    db = FakeDatabase()
    return World(FakeJobStore(db), FakeTaskStore(db), FakePoisonStore(db), FakeBus(), own)


@pytest.mark.parametrize(
    ("documents", "top", "expected"),
    [
        (4, 3, [["task", 4], ["the", 3], ["out", 2]]),
        (8, 2, [["task", 8], ["the", 6]]),
        (1, 4, [["lights", 1], ["out", 1], ["the", 1], ["task", 1]]),
    ],
)
def test_word_count_runs_to_completion(documents: int, top: int, expected: list[Any]) -> None:
    world = word_count_world()
    job = world.run("word_count", {"documents": documents, "top": top})
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result == {"documents": documents, "top": expected}
    counts = StageResultContract.model_validate(job.stage_results["2"])
    assert counts.task_count == documents  # stage 1's result decided stage 2's fan-out
    first_document = world.task_rows(job.job_id, stage=2)[0]
    assert first_document.parameters == {"text": "lights out the task"}
    assert first_document.result == {"lights": 1, "out": 1, "the": 1, "task": 1}


def test_importing_the_example_leaves_the_apps_registry_alone() -> None:
    assert "word_count" not in registry
    assert inspect.signature(word_count.register).parameters["into"].default is registry


def test_the_readme_shows_the_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, re.DOTALL | re.MULTILINE)
    assert EXAMPLE.read_text(encoding="utf-8") in blocks, (
        "README.md must show examples/word_count.py, unchanged, in a ```python block"
    )
