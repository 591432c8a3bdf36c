"""100 malformed messages on each queue: each becomes one poison record, nothing else stops.

A third of them is not JSON, a third is JSON with wrong fields, a third is not even base64
(what the Functions host expects on the wire). Jobs submitted meanwhile complete.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.storage.queue import QueueClient

from tests.chaos.hosts import Fleet, say, wait_for
from tests.chaos.probe import Probe, check_completed_once
from tests.fixtures_services import QueueNames

pytestmark = pytest.mark.chaos

PER_QUEUE = 100
JOBS = [{"tasks": 100 + n, "stages": 2, "sleep_ms": 1} for n in range(3)]
HEX = "ab" * 32


def malformed(queue: str, n: int) -> tuple[str, str]:
    """The n-th bad message for `queue` as (kind, wire text)."""
    if n % 3 == 0:
        return "not base64", f"<<not base64 #{n}: {{}}!>>"
    if n % 3 == 1:
        return "not JSON", _b64(f'{{"job_id": "{HEX}", "stage": {n}')
    wrong: list[dict[str, object]] = [
        {"job_id": "not-a-hash", "stage": 1, "task_ids": [f"x-s1-t{n}"]},
        {"job_id": HEX, "stage": 0, "task_ids": [f"{HEX}-s0-t{n}"]},
        {"job_id": HEX, "stage": 1, "task_ids": [], "extra": n},
        {"job_id": HEX, "stage": "1", "task_ids": [f"{'cd' * 32}-s1-t{n}"]},
    ]
    body = wrong[n % len(wrong)]
    if queue.endswith("-jobs"):
        body = {k: v for k, v in body.items() if k != "task_ids"} | {"task_ids": n}
    return "wrong fields", _b64(json.dumps(body))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def flood(connection: str, queue: str) -> Counter[str]:
    client = QueueClient.from_connection_string(connection, queue)
    bodies = [malformed(queue, n) for n in range(PER_QUEUE)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kb: client.send_message(kb[1]), bodies))
    return Counter(kind for kind, _ in bodies)


def test_poison_messages_are_recorded_and_work_goes_on(
    fleet: Fleet, probe: Probe, queue_names: QueueNames, azurite: str
) -> None:
    host = fleet.start("poison")
    started = time.monotonic()
    jobs = [str(host.api.submit("noop_fanout", params)["job_id"]) for params in JOBS[:1]]
    for queue in (queue_names.jobs, queue_names.tasks):
        say(f"sent to {queue}: {dict(flood(azurite, queue))}")
    jobs += [str(host.api.submit("noop_fanout", params)["job_id"]) for params in JOBS[1:]]

    def recorded() -> Counter[str]:
        # Malformed messages are recorded on their queue, undecodable ones on its poison queue.
        rows = probe.rows(
            "SELECT regexp_replace(queue_name, '-poison$', '') AS queue, count(*) AS n"
            " FROM poison_messages GROUP BY 1"
        )
        return Counter({str(r["queue"]): int(r["n"]) for r in rows})

    expected = Counter({queue_names.jobs: PER_QUEUE, queue_names.tasks: PER_QUEUE})
    try:
        wait_for(lambda: recorded() == expected, 90, "100 poison records per queue")
    finally:
        took = time.monotonic() - started
        say(f"poison records per queue after {took:.1f} s: {dict(recorded())}")
    reasons = probe.rows(
        "SELECT queue_name, left(reason, 40) AS reason, count(*) AS n FROM poison_messages"
        " GROUP BY 1, 2 ORDER BY 1, 3 DESC"
    )
    say(
        "poison reasons:\n  "
        + "\n  ".join(f"{r['n']:3d} {r['queue_name']}: {r['reason']}" for r in reasons)
    )
    assert probe.value("SELECT count(DISTINCT (queue_name, message_id)) FROM poison_messages") == (
        2 * PER_QUEUE
    )

    for job_id, params in zip(jobs, JOBS, strict=True):
        probe.wait_until_ended(job_id, 60)
        check_completed_once(probe, job_id, params["tasks"], params["stages"])
    status, _ = host.api.request("GET", "health")
    say(f"host still running: exit code {host.exit_code}, health {status}")
    assert host.exit_code is None and status == 200
