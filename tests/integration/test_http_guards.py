"""What the HTTP functions refuse or hide, called in-process: credentials, hostile input, 500s.

The two 500s that random requests found (issue 7) are regression cases here: a JSON body
nested 5,000 deep (RecursionError) and a NUL in a string parameter (a DatabaseError).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator

import psycopg
import pytest
from azure.functions.decorators.http import HttpTrigger
from psycopg.rows import dict_row

from schemas.http import ErrorBody
from schemas.records import Json
from tests.fixtures_services import TEST_KEY
from tests.functions import FUNCTIONS
from tests.integration.test_triggers import KEY_HEADER, call_http, submit
from triggers.runtime import Runtime, reset_runtime, runtime

UNKNOWN = "ab" * 32
ROUTES = {
    "submit_job": ("POST", {"job_type": "hello_world"}),
    "get_job": ("GET", {"job_id": UNKNOWN}),
    "list_jobs": ("GET", {}),
    "list_tasks": ("GET", {"job_id": UNKNOWN}),
    "cancel_job": ("POST", {"job_id": UNKNOWN}),
    "retry_job": ("POST", {"job_id": UNKNOWN}),
    "list_poison": ("GET", {}),
    "replay_poison": ("POST", {"poison_id": "1"}),
    "job_types": ("GET", {}),
    "job_events": ("GET", {"job_id": UNKNOWN}),
    "diagnose_job": ("GET", {"job_id": UNKNOWN}),
    "pause_job_type": ("POST", {"job_type": "hello_world"}),
    "resume_job_type": ("POST", {"job_type": "hello_world"}),
    "cancel_jobs": ("POST", {}),
    "retry_jobs": ("POST", {}),
    "list_workers": ("GET", {}),
    "purge_jobs": ("POST", {}),
}


@pytest.fixture
def rt(settings_env: dict[str, str]) -> Iterator[Runtime]:
    reset_runtime()
    yield runtime()
    reset_runtime()


def refused(status: int, body: Json, expected: int, error: str) -> ErrorBody:
    assert status == expected, body
    parsed = ErrorBody.model_validate(body)
    assert parsed.error == error
    return parsed


def test_every_protected_function_is_guarded() -> None:
    http = {n for n, f in FUNCTIONS.items() if isinstance(f.get_trigger(), HttpTrigger)}
    assert http - set(ROUTES) == {"health", "openapi"}


def test_the_openapi_document_needs_no_credential(rt: Runtime) -> None:
    status, body = call_http("openapi", "GET", headers={KEY_HEADER: ""})

    assert (status, body["openapi"]) == (200, "3.1.0")


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_without_a_key_every_function_answers_401(rt: Runtime, name: str) -> None:
    method, route = ROUTES[name]
    status, body = call_http(name, method, route, body=b"{}", headers={KEY_HEADER: ""})

    assert "no credential" in refused(status, body, 401, "unauthorized").message


def test_a_json_body_nested_5000_deep_is_400_not_a_recursion_error(rt: Runtime) -> None:
    deep = b"[" * 5000 + b"]" * 5000

    parsed = refused(*submit("hello_world", deep), 400, "bad_request")

    assert "deeper than 64" in parsed.message


def test_nesting_is_allowed_to_64_levels_and_refused_past_them(rt: Runtime) -> None:
    def nested(depth: int) -> bytes:
        return b'{"n": 2, "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    assert submit("hello_world", nested(64))[0] == 422  # deep enough, but "x" is not allowed
    assert (
        "deeper than 64" in refused(*submit("hello_world", nested(65)), 400, "bad_request").message
    )


def test_a_nul_in_a_string_parameter_is_422_naming_the_field_not_a_database_error(
    rt: Runtime,
) -> None:
    body = json.dumps({"n": 2, "name": "nul\u0000x"}).encode()

    parsed = refused(*submit("hello_world", body), 422, "invalid_parameters")

    assert [f.loc for f in parsed.fields] == [["name"]]
    assert "NUL" in parsed.fields[0].msg


def test_a_nul_in_a_key_or_a_nested_string_is_422_naming_where(rt: Runtime) -> None:
    body = json.dumps({"n\u0000": 1, "deep": [{"a": "\u0000"}]}).encode()

    parsed = refused(*submit("hello_world", body), 422, "invalid_parameters")

    assert sorted(f.loc for f in parsed.fields) == [["deep", 0, "a"], ["n\x00"]]


def test_integers_past_the_safe_range_are_422(rt: Runtime) -> None:
    body = json.dumps({"tasks": 1, "fail_task_indices": [2**53, -(2**60), 5]}).encode()

    parsed = refused(*submit("noop_fanout", body), 422, "invalid_parameters")

    assert sorted(f.loc for f in parsed.fields) == [
        ["fail_task_indices", 0],
        ["fail_task_indices", 1],
    ]
    assert submit("noop_fanout", {"tasks": 1, "fail_task_indices": [2**53 - 1]})[0] == 202


def test_a_nul_in_a_query_parameter_is_400(rt: Runtime) -> None:
    status, body = call_http("list_jobs", "GET", params={"job_type": "a\x00b"})

    assert "NUL" in refused(status, body, 400, "bad_request").message


def test_a_nul_in_the_actor_note_is_400_and_submits_nothing(rt: Runtime) -> None:
    # It reached PostgreSQL in the submission's events, which refused it: a 500.
    body = json.dumps({"n": 1, "name": "noted"}).encode()
    headers = {KEY_HEADER: TEST_KEY, "x-lightsout-actor": "a\x00b"}

    status, answer = call_http(
        "submit_job", "POST", {"job_type": "hello_world"}, body=body, headers=headers
    )

    assert refused(status, answer, 400, "bad_request").message == (
        "header 'x-lightsout-actor' contains a NUL character"
    )
    assert rt.jobs.find(job_type="hello_world").items == []


def test_a_500_carries_an_error_id_that_the_log_has_and_never_the_exception_text(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("password=hunter2 in a connection string")

    monkeypatch.setattr(rt.jobs, "find", broken)
    caplog.set_level(logging.ERROR, logger="triggers")

    status, body = call_http("list_jobs", "GET")

    parsed = refused(status, body, 500, "internal_error")
    assert parsed.error_id and parsed.error_id in parsed.message
    assert "hunter2" not in json.dumps(body)
    (record,) = [r for r in caplog.records if parsed.error_id in r.getMessage()]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


def principal(name: str, roles: list[str]) -> str:
    claims = [{"typ": "roles", "val": r} for r in roles] + [{"typ": "name", "val": name}]
    return base64.b64encode(json.dumps({"name_typ": "name", "claims": claims}).encode()).decode()


def test_easy_auth_is_the_identity_only_when_trusted(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    easy = {KEY_HEADER: "", "x-ms-client-principal": principal("alice", ["jobs:submit"])}
    body = b'{"n": 2, "name": "easy"}'
    reset_runtime()
    untrusted = call_http(
        "submit_job", "POST", {"job_type": "hello_world"}, body=body, headers=easy
    )
    monkeypatch.setenv("LIGHTSOUT_TRUST_EASY_AUTH", "true")
    reset_runtime()
    try:
        trusted = call_http(
            "submit_job", "POST", {"job_type": "hello_world"}, body=body, headers=easy
        )
        reader = call_http("list_jobs", "GET", headers=easy)
    finally:
        reset_runtime()

    assert untrusted[0] == 401
    assert trusted[0] == 202, trusted
    assert refused(*reader, 403, "forbidden").message.count("jobs:read") == 1
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET search_path TO lightsout")
        actors = {r["actor"] for r in conn.execute("SELECT actor FROM job_events").fetchall()}
    assert "easy-auth:alice" in actors
