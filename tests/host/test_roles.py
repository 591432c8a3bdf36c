"""`--functions`: a host serves only the kinds of function it is given."""

from __future__ import annotations

import pytest

from lightsout.host import Host, HostConfigError
from lightsout.host.roles import parse_kinds
from lightsout.host.routing import MethodNotAllowed
from tests.host.conftest import SampleApp


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("http", {"http"}),
        ("queues,timers", {"queues", "timers"}),
        ("http|queues", {"http", "queues"}),
        (" timers , http ", {"http", "timers"}),
    ],
)
def test_parse_kinds(text: str, kinds: set[str]) -> None:
    assert parse_kinds(text) == kinds


@pytest.mark.parametrize("text", ["", "web", "http,jobs", ","])
def test_parse_kinds_names_what_it_takes(text: str) -> None:
    with pytest.raises(HostConfigError, match="http, queues, timers"):
        parse_kinds(text)


def test_an_http_only_host_polls_no_queue_and_runs_no_timer(sample_app: SampleApp) -> None:
    with Host(sample_app.dir, port=0, kinds=frozenset({"http"})) as host:
        assert host.listeners == [] and host.timers == []
        assert host.server is not None
        assert host.server.router.match("GET", "/api/items/7") is not None


def test_a_worker_host_serves_queues_and_timers_but_no_route(sample_app: SampleApp) -> None:
    with Host(sample_app.dir, port=0, kinds=frozenset({"queues", "timers"})) as host:
        served = {listener.spec.name for listener in host.listeners}
        assert served == {"work", "inbox", "inbox_poison", "async_work"}
        assert len(host.timers) >= 1
        assert host.server is not None
        found = host.server.router.match("GET", "/api/items/7")
        assert found is None or isinstance(found, MethodNotAllowed)
