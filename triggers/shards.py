"""The names of the task queue shards' functions, shared by their triggers and the local host."""

from __future__ import annotations

from schemas.settings import MAX_TASK_QUEUE_SHARDS

# Shard 0 keeps the names it had before sharding: tasks_queue and tasks_poison.
SHARDS = range(1, MAX_TASK_QUEUE_SHARDS)


def queue_function(shard: int) -> str:
    """The function that runs the messages of task queue shard `shard` (1 and up)."""
    return f"tasks_queue_{shard}"


def poison_function(shard: int) -> str:
    """The function that records the poison messages of task queue shard `shard`."""
    return f"tasks_poison_{shard}"


def unused_shard_functions(shards: int) -> list[str]:
    """The functions of the shards at or past the configured count, `shards`."""
    return [name(k) for k in SHARDS if k >= shards for name in (queue_function, poison_function)]
