"""The raw limits each bench figure is read against: Azurite's queue rates, PostgreSQL commits,
and how fast the machine's CPU is at the moment (it is shared, and its speed moves)."""

from __future__ import annotations

import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from azure.storage.queue import QueueClient

THREADS = 16
CPU_REFERENCE_LOOP = 1_000_000


def cpu_reference_ms(repeats: int = 5) -> float:
    """Milliseconds for a fixed pure-Python loop (median of `repeats`): the machine's speed now.

    The same work took 42 ms and 77 ms a few seconds apart on the shared 2-core machine;
    figures measured while it is slow are read against it.
    """
    took = []
    for _ in range(repeats):
        started = time.perf_counter()
        sum(i * i for i in range(CPU_REFERENCE_LOOP))
        took.append(time.perf_counter() - started)
    return 1000 * statistics.median(took)


def azurite_send(connection: str, messages: int) -> float:
    """Messages/s sent from 16 threads, one small message per call (as a submission sends)."""
    queue = _queue(connection)
    clients = [QueueClient.from_connection_string(connection, queue) for _ in range(THREADS)]
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: clients[n % THREADS].send_message(f"m{n}"), range(messages)))
    rate = messages / (time.monotonic() - started)
    clients[0].delete_queue()
    return rate


def azurite_receive_delete(connection: str, messages: int) -> float:
    """Messages/s received (32 per call) and deleted one by one from 16 threads."""
    queue = _queue(connection)
    sender = QueueClient.from_connection_string(connection, queue)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: sender.send_message(f"m{n}"), range(messages)))
    clients = [QueueClient.from_connection_string(connection, queue) for _ in range(THREADS)]

    def drain(client: QueueClient) -> int:
        done = 0
        while True:
            batch = list(client.receive_messages(messages_per_page=32, max_messages=32))
            if not batch:
                return done
            for msg in batch:
                client.delete_message(msg)
            done += len(batch)

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(drain, clients))
    rate = total / (time.monotonic() - started)
    sender.delete_queue()
    return rate


def postgres_commits(dsn: str, commits: int, connections: int = 8) -> float:
    """Commits/s of one-row inserts from 8 autocommit connections (the WAL flush rate)."""
    table = f"bench_commit_{secrets.token_hex(3)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n integer)")

    def insert(count: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for n in range(count):
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (n,))

    started = time.monotonic()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(insert, [commits // connections] * connections))
    rate = (commits // connections * connections) / (time.monotonic() - started)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}")
    return rate


def _queue(connection: str) -> str:
    name = f"raw-{secrets.token_hex(4)}"
    QueueClient.from_connection_string(connection, name).create_queue()
    return name
