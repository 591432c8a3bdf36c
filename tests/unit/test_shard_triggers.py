"""Every task queue shard has a queue trigger and a poison trigger, whatever the count."""

from __future__ import annotations

import json

from azure.functions.decorators.queue import QueueTrigger

from lightsout.host.settings import resolve
from schemas.settings import MAX_TASK_QUEUE_SHARDS, task_shard_queue
from tests.functions import FUNCTIONS
from triggers.shards import unused_shard_functions

ENV = {"LIGHTSOUT_TASKS_QUEUE": "ci-tasks"}


def queue_name(function: str) -> str:
    trigger = FUNCTIONS[function].get_trigger()
    assert isinstance(trigger, QueueTrigger)
    assert trigger.connection == "AzureWebJobsStorage"
    return str(trigger.queue_name)


def test_each_shard_has_a_trigger_on_its_queue_and_one_on_its_poison_queue() -> None:
    shards = {f"tasks_queue_{k}": k for k in range(1, MAX_TASK_QUEUE_SHARDS)}
    poison = {f"tasks_poison_{k}": k for k in range(1, MAX_TASK_QUEUE_SHARDS)}
    assert {name for name in FUNCTIONS if name.startswith("tasks_")} == {
        "tasks_queue",
        "tasks_poison",
        *shards,
        *poison,
    }
    for name, k in shards.items():
        assert queue_name(name) == f"%LIGHTSOUT_TASKS_QUEUE%-{k}"
        assert resolve(queue_name(name), ENV, name) == task_shard_queue("ci-tasks", k)
    for name, k in poison.items():
        assert queue_name(name) == f"%LIGHTSOUT_TASKS_QUEUE%-{k}-poison"
        assert resolve(queue_name(name), ENV, name) == f"ci-tasks-{k}-poison"


def test_shard_zero_keeps_the_names_it_had() -> None:
    assert queue_name("tasks_queue") == "%LIGHTSOUT_TASKS_QUEUE%"
    assert queue_name("tasks_poison") == "%LIGHTSOUT_TASKS_QUEUE%-poison"
    assert task_shard_queue("ci-tasks", 0) == "ci-tasks"


def test_each_shard_trigger_is_indexed_with_its_own_function_and_binding() -> None:
    for k in range(1, MAX_TASK_QUEUE_SHARDS):
        function = FUNCTIONS[f"tasks_queue_{k}"]
        assert function.get_user_function().__name__ == f"tasks_queue_{k}"
        (binding,) = json.loads(function.get_function_json())["bindings"]
        assert binding == {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": f"%LIGHTSOUT_TASKS_QUEUE%-{k}",
            "connection": "AzureWebJobsStorage",
        }


def test_the_functions_of_shards_past_the_count_are_the_ones_to_switch_off() -> None:
    assert unused_shard_functions(MAX_TASK_QUEUE_SHARDS) == []
    assert unused_shard_functions(6) == [
        "tasks_queue_6",
        "tasks_poison_6",
        "tasks_queue_7",
        "tasks_poison_7",
    ]
    assert len(unused_shard_functions(1)) == 2 * (MAX_TASK_QUEUE_SHARDS - 1)
    assert set(unused_shard_functions(1)) <= set(FUNCTIONS)
