"""Jobs through local hosts, over HTTP only: results, fan-out, scale-out, failures, bad input."""

from __future__ import annotations

import math

import pytest

from schemas.records import Json
from schemas.results import StageResultContract
from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import finished, raw_request, rows

pytestmark = pytest.mark.e2e


def primes_below(limit: int) -> list[int]:
    """The sieve of Eratosthenes: an independent answer for prime_count."""
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\0\0"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return [n for n, is_prime in enumerate(sieve) if is_prime]


def stage_results(job: Json) -> dict[str, StageResultContract]:
    return {k: StageResultContract.model_validate(v) for k, v in job["stage_results"].items()}


def test_hello_world_completes_with_a_contract_per_stage_and_the_finalize_result(
    start_hosts: StartHosts,
) -> None:
    (host,) = start_hosts()

    answer = host.api.submit("hello_world", {"n": 50})
    job = finished(host.api, answer["job_id"])

    assert job["status"] == "completed", job["error"]
    results = stage_results(job)
    assert sorted(results) == ["1", "2"]
    for key, result in results.items():
        assert result.key == key
        assert (result.status, result.task_count, result.completed_count) == ("completed", 50, 50)
        assert result.failed_count == 0 and result.failed_task_ids == []
        assert result.aggregate == {"messages": 50}
    assert [r.name for r in results.values()] == ["greet", "reply"]
    assert job["result"] == {"greetings": 50, "replies": 50, "summary": "50 hellos, 50 replies"}
    assert job["progress"] == {
        "fraction": 1.0,
        "total": 100,
        "completed": 100,
        "failed": 0,
        "remaining": 0,
    }


def test_prime_count_fans_out_as_stage_one_decided_and_counts_right(
    start_hosts: StartHosts,
) -> None:
    (host,) = start_hosts()
    limit, chunk = 25_013, 2_000  # 13 ranges, the last one short
    primes = primes_below(limit)

    answer = host.api.submit("prime_count", {"limit": limit, "chunk_size": chunk})
    job = finished(host.api, answer["job_id"])

    assert job["status"] == "completed", job["error"]
    ranges = math.ceil(limit / chunk)
    counts = {k: r.task_count for k, r in stage_results(job).items()}
    assert counts == {"1": 1, "2": ranges, "3": 1}
    assert job["result"] == {
        "limit": limit,
        "ranges": ranges,
        "primes": len(primes),
        "largest": primes[-1],
    }
    status, body = host.api.request("GET", f"jobs/{answer['job_id']}/tasks?stage=2")
    assert status == 200
    per_range = {t["task_index"]: t["result"]["count"] for t in body["tasks"]}
    expected = {
        i: sum(1 for p in primes if i * chunk <= p < min((i + 1) * chunk, limit))
        for i in range(ranges)
    }
    assert per_range == expected


def test_noop_fanout_on_two_hosts_runs_every_task_once_and_advances_each_stage_once(
    start_hosts: StartHosts, database_url: str
) -> None:
    first, second = start_hosts(2)

    answer = first.api.submit("noop_fanout", {"tasks": 2000, "stages": 3})
    job = finished(second.api, answer["job_id"], timeout=120)

    assert job["status"] == "completed", job["error"]
    assert job["result"] == {"stages": 3, "tasks": 6000}
    tasks = rows(
        database_url,
        "SELECT stage, status, attempt, count(*) AS n FROM tasks WHERE job_id = %s"
        " GROUP BY stage, status, attempt ORDER BY stage",
        answer["job_id"],
    )
    assert [(r["stage"], r["status"], r["attempt"], r["n"]) for r in tasks] == [
        (stage, "completed", 1, 2000) for stage in (1, 2, 3)
    ]
    workers = rows(
        database_url,
        "SELECT claimed_by, count(*) AS n FROM tasks WHERE job_id = %s GROUP BY claimed_by",
        answer["job_id"],
    )
    assert {r["claimed_by"] for r in workers} == {first.name, second.name}
    stage_events = rows(
        database_url,
        "SELECT stage, from_status, to_status, count(*) AS n FROM job_events"
        " WHERE job_id = %s AND kind = 'stage_status' GROUP BY 1, 2, 3 ORDER BY 1, 2",
        answer["job_id"],
    )
    assert [(r["stage"], r["from_status"], r["to_status"], r["n"]) for r in stage_events] == [
        (stage, from_status, to_status, 1)
        for stage in (1, 2, 3)
        for from_status, to_status in (("pending", "processing"), ("processing", "completed"))
    ]
    noise = rows(
        database_url,
        "SELECT kind, count(*) AS n FROM job_events WHERE job_id = %s"
        " AND kind NOT IN ('job_status', 'stage_status') GROUP BY kind",
        answer["job_id"],
    )
    assert noise == []


def test_the_same_submission_twice_is_one_job(start_hosts: StartHosts, database_url: str) -> None:
    (host,) = start_hosts()

    first = host.api.request("POST", "jobs/hello_world", {"n": 7, "name": "twice"})
    second = host.api.request("POST", "jobs/hello_world", {"name": "twice", "n": 7})
    job = finished(host.api, first[1]["job_id"])
    after = host.api.request("POST", "jobs/hello_world", {"n": 7, "name": "twice"})

    assert (first[0], second[0], after[0]) == (202, 200, 200)
    assert first[1]["job_id"] == second[1]["job_id"] == after[1]["job_id"]
    assert [first[1]["created"], second[1]["created"], after[1]["created"]] == [True, False, False]
    assert job["status"] == after[1]["status"] == "completed"
    (count,) = rows(
        database_url,
        "SELECT count(*) AS jobs, (SELECT count(*) FROM tasks) AS tasks FROM jobs",
    )
    assert (count["jobs"], count["tasks"]) == (1, 14)
    status, listed = host.api.request("GET", "jobs?job_type=hello_world")
    assert status == 200
    assert [j["job_id"] for j in listed["jobs"]] == [first[1]["job_id"]]


def test_failing_tasks_fail_the_job_by_name_and_flaky_tasks_complete_on_retry(
    start_hosts: StartHosts, database_url: str
) -> None:
    (host,) = start_hosts()

    failing = host.api.submit("noop_fanout", {"tasks": 12, "fail_task_indices": [3, 8]})
    flaky = host.api.submit("noop_fanout", {"tasks": 12, "flaky_task_indices": [0, 11]})
    failed_job = finished(host.api, failing["job_id"])
    flaky_job = finished(host.api, flaky["job_id"])

    failed_ids = [f"{failing['job_id']}-s1-t{i}" for i in (3, 8)]
    assert failed_job["status"] == "failed"
    error = failed_job["error"]
    assert error["stage"] == 1 and error["failed_count"] == 2
    assert error["failed_task_ids"] == failed_ids
    assert "2 of 12 tasks failed" in error["message"]
    assert [(e["task_id"], e["type"], e["message"], e["attempt"]) for e in error["errors"]] == [
        (failed_ids[0], "InjectedFailure", "task 3 fails on every attempt", 3),
        (failed_ids[1], "InjectedFailure", "task 8 fails on every attempt", 3),
    ]
    assert stage_results(failed_job)["1"].failed_task_ids == failed_ids
    assert [s["status"] for s in failed_job["stages"]] == ["failed", "cancelled"]

    assert flaky_job["status"] == "completed", flaky_job["error"]
    attempts = rows(
        database_url,
        "SELECT stage, task_index, attempt FROM tasks WHERE job_id = %s AND attempt <> 1"
        " ORDER BY stage, task_index",
        flaky["job_id"],
    )
    assert [(r["stage"], r["task_index"], r["attempt"]) for r in attempts] == [
        (1, 0, 2),
        (1, 11, 2),
        (2, 0, 2),
        (2, 11, 2),
    ]
    assert {k: r.aggregate for k, r in stage_results(flaky_job).items()} == {
        "1": {"retried": 2},
        "2": {"retried": 2},
    }
    status, body = host.api.request("GET", f"jobs/{flaky['job_id']}/tasks?stage=1&status=completed")
    assert status == 200
    retried = [t for t in body["tasks"] if t["attempt"] == 2]
    assert [t["error"]["message"] for t in retried] == [
        "task 0 fails on its first attempt",
        "task 11 fails on its first attempt",
    ]


UNKNOWN = "ab" * 32
BAD_REQUESTS = [
    ("POST", "jobs/hello_world", b'{"n": ', 400, "bad_request"),
    ("POST", "jobs/hello_world", b"\xff", 400, "bad_request"),
    ("POST", "jobs/no_such_type", b"{}", 400, "unknown_job_type"),
    ("POST", "jobs/hello_world", b'{"n": 0}', 422, "invalid_parameters"),
    ("POST", "jobs/hello_world", b'{"n": 3, "colour": "red"}', 422, "invalid_parameters"),
    ("POST", "jobs/noop_fanout", b'{"tasks": 100001}', 422, "invalid_parameters"),
    ("POST", "jobs/noop_fanout", b"[]", 422, "invalid_parameters"),
    # The two 500s of issue 7: RecursionError, and a DatabaseError from a NUL in jsonb.
    ("POST", "jobs/hello_world", b"[" * 5000 + b"]" * 5000, 400, "bad_request"),
    ("POST", "jobs/hello_world", b'{"n": 2, "name": "nul\\u0000x"}', 422, "invalid_parameters"),
    ("POST", "jobs/hello_world", b'{"n": 9007199254740993}', 422, "invalid_parameters"),
    ("POST", "jobs/hello_world", b"x" * (1024 * 1024 + 1), 413, "payload_too_large"),
    ("GET", "nowhere", None, 404, "not_found"),
    ("DELETE", "jobs", None, 405, "method_not_allowed"),
    ("GET", f"jobs/{UNKNOWN}", None, 404, "not_found"),
    ("GET", f"jobs/{UNKNOWN}/tasks", None, 404, "not_found"),
    ("POST", f"jobs/{UNKNOWN}/cancel", None, 404, "not_found"),
    ("GET", "jobs/not-a-job-id", None, 400, "bad_request"),
    ("GET", f"jobs/{UNKNOWN.upper()}/tasks", None, 400, "bad_request"),
    ("POST", "jobs/nope/cancel", None, 400, "bad_request"),
    ("GET", "jobs?status=sleeping", None, 400, "bad_request"),
    ("GET", "jobs?cursor=Zm9v", None, 400, "bad_request"),
    ("GET", "jobs?limit=-1", None, 400, "bad_request"),
]


def test_bad_requests_are_answered_4xx_naming_the_problem_never_500(
    start_hosts: StartHosts,
) -> None:
    (host,) = start_hosts()

    answers = [
        (method, path, *raw_request(host.url, method, path, data))
        for method, path, data, _, _ in BAD_REQUESTS
    ]

    assert [(m, p, status, body.get("error")) for m, p, status, body in answers] == [
        (m, p, status, error) for m, p, _, status, error in BAD_REQUESTS
    ]
    unknown_type = raw_request(host.url, "POST", "jobs/no_such_type", b"{}")[1]
    assert all(t in unknown_type["message"] for t in ("hello_world", "noop_fanout", "prime_count"))
    for path, data, field in [
        ("jobs/hello_world", b'{"n": 3, "colour": "red"}', "colour"),
        ("jobs/noop_fanout", b'{"tasks": 100001}', "tasks"),
    ]:
        invalid = raw_request(host.url, "POST", path, data)[1]
        assert [f["loc"] for f in invalid["fields"]] == [[field]]
        assert field in invalid["message"]
    assert raw_request(host.url, "GET", "health")[0] == 200
