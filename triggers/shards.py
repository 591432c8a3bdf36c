"""The names of the task queue shards' functions, shared by their triggers and the local host."""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from schemas.settings import MAX_TASK_QUEUE_SHARDS

# Shard 0 keeps the names it had before sharding: tasks_queue and tasks_poison.
SHARDS = range(1, MAX_TASK_QUEUE_SHARDS)


def queue_function(shard: int) -> str:
    """The function that runs the messages of task queue shard `shard` (1 and up)."""
    return f"tasks_queue_{shard}"


def poison_function(shard: int) -> str:
    """The function that records the poison messages of task queue shard `shard`."""
    return f"tasks_poison_{shard}"


def declare(
    bp: func.Blueprint,
    name: str,
    queue_name: str,
    connection: str,
    doc: str,
    fn: Callable[[func.QueueMessage], None],
) -> None:
    """Register `fn` on `bp` as the queue function `name`, triggered by `queue_name`.

    Shard functions are made in a loop, so each gets its own name (and docstring) here.
    """
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    trigger = bp.queue_trigger(arg_name="msg", queue_name=queue_name, connection=connection)
    bp.function_name(name)(trigger(fn))


def unused_shard_functions(shards: int) -> list[str]:
    """The functions of the shards at or past the configured count, `shards`."""
    return [name(k) for k in SHARDS if k >= shards for name in (queue_function, poison_function)]
