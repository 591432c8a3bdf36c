"""Route templates: parameters, precedence, methods, prefix."""

from __future__ import annotations

import pytest

from lightsout.host import HostConfigError, Router
from lightsout.host.routing import MethodNotAllowed, RouteMatch

ROUTES: list[tuple[str, frozenset[str] | None, str]] = [
    ("jobs/{job_id}", frozenset({"GET"}), "get_job"),
    ("jobs/{job_type}", frozenset({"POST"}), "submit"),
    ("jobs/{job_id}/tasks", frozenset({"GET"}), "tasks"),
    ("jobs", frozenset({"GET"}), "list"),
    ("job-types", None, "types"),
    ("{anything}/tasks", frozenset({"GET"}), "any_tasks"),
    ("health", frozenset({"GET"}), "health"),
    ("numbers/{n:int}", frozenset({"GET"}), "number"),
    ("numbers/{name}", frozenset({"GET"}), "number_name"),
    ("opt/{a}/{b?}", frozenset({"GET"}), "optional"),
    ("files/{*path}", frozenset({"GET"}), "files"),
]


def route(method: str, path: str, prefix: str = "api") -> RouteMatch[str] | MethodNotAllowed | None:
    return Router(prefix, ROUTES).match(method, path)


def target(method: str, path: str) -> tuple[str, dict[str, str]]:
    found = route(method, path)
    assert isinstance(found, RouteMatch), found
    return found.target, found.params


def test_parameters_and_methods() -> None:
    assert target("GET", "/api/jobs/abc") == ("get_job", {"job_id": "abc"})
    assert target("POST", "/api/jobs/hello_world") == ("submit", {"job_type": "hello_world"})
    assert target("GET", "/api/jobs") == ("list", {})
    assert target("DELETE", "/api/job-types") == ("types", {})


def test_literal_segments_beat_parameters() -> None:
    assert target("GET", "/api/jobs/abc/tasks") == ("tasks", {"job_id": "abc"})
    assert target("GET", "/api/other/tasks") == ("any_tasks", {"anything": "other"})


def test_constrained_parameter_beats_plain_one() -> None:
    assert target("GET", "/api/numbers/42") == ("number", {"n": "42"})
    assert target("GET", "/api/numbers/forty-two") == ("number_name", {"name": "forty-two"})


def test_optional_and_catch_all() -> None:
    assert target("GET", "/api/opt/x") == ("optional", {"a": "x"})
    assert target("GET", "/api/opt/x/y") == ("optional", {"a": "x", "b": "y"})
    assert route("GET", "/api/opt/x/y/z") is None
    assert target("GET", "/api/files/a/b/c.txt") == ("files", {"path": "a/b/c.txt"})


def test_paths_are_decoded_and_case_insensitive() -> None:
    assert target("GET", "/API/Jobs/a%20b") == ("get_job", {"job_id": "a b"})
    assert target("GET", "/api/jobs/") == ("list", {})


def test_method_not_allowed_lists_the_allowed_methods() -> None:
    found = route("PUT", "/api/jobs/abc")
    assert isinstance(found, MethodNotAllowed)
    assert found.allowed == frozenset({"GET", "POST"})


def test_not_found_and_prefix() -> None:
    assert route("GET", "/api/nothing/here/at/all") is None
    assert route("GET", "/jobs") is None
    assert target_with_prefix("", "/jobs") == "list"
    assert target_with_prefix("v1/api", "/v1/api/health") == "health"


def target_with_prefix(prefix: str, path: str) -> str:
    found = route("GET", path, prefix)
    assert isinstance(found, RouteMatch)
    return found.target


@pytest.mark.parametrize("template", ["a/{b?}/c", "files/{*rest}/more", "x/{y:nope}", "a{b}"])
def test_bad_templates_fail_at_start(template: str) -> None:
    with pytest.raises(HostConfigError):
        Router("api", [(template, None, "t")])
