"""From a stage's last task to the next stage's first claim, each store call is made once.

Every call is a database round trip on PostgreSQL, and this path is the latency between two
stages. The fakes record the calls, in order and by thread, and the path is compared whole.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from controllers.engine import Engine
from controllers.jobtypes.noop_fanout import TASKS_PER_MESSAGE
from controllers.ports import JobStore, TaskStore
from schemas.status import JobStatus
from tests.fakes import FakeBus, FakeDatabase, FakeJobStore, FakePoisonStore, FakeTaskStore
from tests.unit.test_engine import job_types

Call = tuple[str, str]  # (store.method, thread name)


class Recorded:
    """A store whose method calls are appended to `calls` before they run."""

    def __init__(self, name: str, store: object, calls: list[Call]) -> None:
        self._name, self._store, self._calls = name, store, calls

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._store, attr)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((f"{self._name}.{attr}", threading.current_thread().name))
            return method(*args, **kwargs)

        return recorded


def first_claim_path(calls: list[Call], stage_start: int) -> list[str]:
    """The calls from the stage's last end to its successor's first claim, on that path.

    After start_stage the driver thread goes on to dispatch while a local thread claims:
    from there on, only the claiming thread's calls are on the path.
    """
    last_end = max(i for i, (name, _) in enumerate(calls[:stage_start]) if name == "tasks.end_many")
    claim = next(i for i in range(stage_start, len(calls)) if calls[i][0] == "tasks.claim")
    before = [name for name, _ in calls[last_end + 1 : stage_start + 1]]
    claimer = calls[claim][1]
    return before + [n for n, t in calls[stage_start + 1 : claim + 1] if t == claimer]


def test_no_call_is_repeated_from_a_last_task_to_the_next_stages_first_claim() -> None:
    db, calls = FakeDatabase(), list[Call]()
    jobs = cast(JobStore, Recorded("jobs", FakeJobStore(db), calls))
    tasks = cast(TaskStore, Recorded("tasks", FakeTaskStore(db), calls))
    bus = FakeBus()
    here = Engine(jobs, tasks, bus, FakePoisonStore(db), job_types(), "here", local_runs=2)
    assert here.driver.local is not None
    # Each stage fits one message, so every stage runs here, on the local threads.
    job_id = here.submit("noop_fanout", {"tasks": TASKS_PER_MESSAGE, "stages": 2}).job_id
    bus.drain(here)
    here.close()
    assert jobs.get(job_id).status is JobStatus.COMPLETED

    starts = [i for i, (name, _) in enumerate(calls) if name == "tasks.start_stage"]
    assert len(starts) == 2
    assert first_claim_path(calls, starts[1]) == [
        "jobs.get",  # leave_stage: the job and the stage it leaves
        "jobs.stage",
        "tasks.results",  # the stage's aggregate
        "jobs.advance",
        "jobs.take_dispatch_lease",  # enter_stage
        "jobs.hold_if_paused",  # once, after the build: the local run does not check again
        "tasks.start_stage",
        "tasks.claim",
    ]
    assert "tasks.hold_if_paused" not in {name for name, _ in calls}
