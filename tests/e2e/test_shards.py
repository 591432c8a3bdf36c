"""A job through four task queue shards, on local hosts over HTTP and the real queues."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import pytest

from controllers.jobtypes.noop_fanout import RUN_LOG_ENV, TASKS_PER_MESSAGE
from schemas.ids import JobId, make_task_id
from schemas.messages import TaskQueueMessage
from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import finished, peek, rows, wait_for
from tests.fixtures_services import QueueNames

pytestmark = pytest.mark.e2e
SHARDS = 4
TASKS = 8 * TASKS_PER_MESSAGE  # 8 messages (noop_fanout's packing): 2 per shard
DISABLED = "Disabled by AzureWebJobs.<name>.Disabled: "


def shard(queues: QueueNames, k: int) -> str:
    return queues.tasks if k == 0 else f"{queues.tasks}-{k}"


def waiting(connection: str, queue: str) -> list[TaskQueueMessage]:
    return [
        TaskQueueMessage.model_validate_json(base64.b64decode(text))
        for text in peek(connection, queue)
    ]


def disabled(log: str) -> list[str]:
    (line,) = [line for line in log.splitlines() if DISABLED in line]
    return line.split(DISABLED, 1)[1].split(", ")


def test_a_job_spreads_its_tasks_over_four_shards_and_each_task_runs_once(
    start_hosts: StartHosts,
    settings_env: dict[str, str],
    queue_names: QueueNames,
    database_url: str,
    tmp_path: Path,
) -> None:
    storage, run_log = settings_env["AzureWebJobsStorage"], tmp_path / "runs.log"
    env = {"LIGHTSOUT_TASK_QUEUE_SHARDS": str(SHARDS), RUN_LOG_ENV: str(run_log)}
    unused = [f"tasks_{kind}_{k}" for kind in ("poison", "queue") for k in range(SHARDS, 8)]
    # First a host that builds the stage but runs no task: its messages stay on the shards.
    # (Nor does it keep the stage's first message to run itself: controllers/localrun.py.)
    task_functions = ["tasks_queue", *(f"tasks_queue_{k}" for k in range(1, SHARDS))]
    no_tasks = {f"AzureWebJobs.{name}.Disabled": "true" for name in task_functions}
    no_tasks["LIGHTSOUT_LOCAL_RUNS"] = "0"
    (builder,) = start_hosts(extra_env=env | no_tasks)
    job_id = JobId(builder.api.submit("noop_fanout", {"tasks": TASKS, "stages": 2})["job_id"])

    def all_sent() -> dict[int, list[TaskQueueMessage]] | None:
        found = {k: waiting(storage, shard(queue_names, k)) for k in range(SHARDS)}
        return (
            found
            if sum(len(msgs) for msgs in found.values()) == TASKS // TASKS_PER_MESSAGE
            else None
        )

    on_shards = wait_for(all_sent, 60, "stage 1's task messages on the shards")
    assert {k: len(msgs) for k, msgs in on_shards.items()} == dict.fromkeys(range(SHARDS), 2)
    sent = Counter(t for msgs in on_shards.values() for m in msgs for t in m.task_ids)
    assert sent == Counter(make_task_id(job_id, 1, i) for i in range(TASKS))
    assert sorted(disabled(builder.log)) == sorted([*task_functions, *unused])
    assert builder.terminate() == 0

    # Then a host with the defaults: it reads the four shards and no others.
    (worker,) = start_hosts(extra_env=env)
    job = finished(worker.api, job_id, timeout=120)

    assert job["status"] == "completed", job["error"]
    assert sorted(disabled(worker.log)) == sorted(unused)
    tasks = rows(database_url, "SELECT status, attempt FROM tasks WHERE job_id = %s", job_id)
    assert Counter((t["status"], t["attempt"]) for t in tasks) == {("completed", 1): 2 * TASKS}
    runs = Counter(line.split()[0] for line in run_log.read_text().splitlines())
    assert len(runs) == 2 * TASKS and set(runs.values()) == {1}
    for k in range(SHARDS):
        assert peek(storage, shard(queue_names, k)) == []
