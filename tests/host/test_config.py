"""local.settings.json, %NAME% expressions, host.json and function discovery."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from azstorage import ConnectionString
from lightsout.host import (
    Host,
    HostConfigError,
    HttpFunction,
    QueueFunction,
    TimerFunction,
    discover,
    load_app,
    load_host_json,
    load_local_settings,
    parse_timespan,
    resolve,
)
from tests.host.conftest import SampleApp


def test_local_settings_fill_only_unset_keys(tmp_path: Path) -> None:
    settings = {"Values": {"A": "from-file", "B": "from-file"}}
    (tmp_path / "local.settings.json").write_text(json.dumps(settings))
    environ = {"A": "from-env"}
    copied = load_local_settings(tmp_path, environ)
    assert copied == ["B"]
    assert environ == {"A": "from-env", "B": "from-file"}


def test_local_settings_values_must_be_strings(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"N": 3}}))
    with pytest.raises(HostConfigError, match="N"):
        load_local_settings(tmp_path, {})


def test_missing_local_settings_is_fine(tmp_path: Path) -> None:
    assert load_local_settings(tmp_path, {}) == []


def test_resolve_expressions() -> None:
    env = {"PREFIX": "lightsout", "Q": "tasks"}
    assert resolve("%PREFIX%-%Q%", env, "x") == "lightsout-tasks"
    assert resolve("plain", env, "x") == "plain"
    with pytest.raises(HostConfigError, match=r"'MISSING'.*not set"):
        resolve("%MISSING%", env, "function 'f' queue_name")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00:30", timedelta(seconds=30)),
        ("00:01:00", timedelta(minutes=1)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("00:00:00.500", timedelta(milliseconds=500)),
        ("00:10", timedelta(minutes=10)),
    ],
)
def test_parse_timespan(text: str, expected: timedelta) -> None:
    assert parse_timespan(text) == expected


@pytest.mark.parametrize("text", ["30", "00:61:00", "abc", "", "-00:00:01"])
def test_parse_timespan_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timespan(text)


def test_host_json_defaults(tmp_path: Path) -> None:
    host = load_host_json(tmp_path)
    queues = host.extensions.queues
    assert (queues.batch_size, queues.batch_threshold, queues.max_dequeue_count) == (16, 8, 5)
    assert queues.max_polling_interval == timedelta(minutes=1)
    assert queues.visibility_timeout == timedelta(0)
    assert queues.message_encoding == "base64"
    assert host.extensions.http.route_prefix == "api"


def test_host_json_reads_values_and_keeps_unknown_keys(tmp_path: Path) -> None:
    doc = {
        "version": "2.0",
        "functionTimeout": "-1",
        "logging": {"logLevel": {"default": "Warning"}},
        "extensions": {
            "queues": {"batchSize": 6, "visibilityTimeout": "00:00:05", "messageEncoding": "None"},
            "http": {"routePrefix": ""},
        },
    }
    (tmp_path / "host.json").write_text(json.dumps(doc))
    host = load_host_json(tmp_path)
    assert host.function_timeout is None
    assert host.extensions.queues.batch_threshold == 3  # batchSize / 2
    assert host.extensions.queues.visibility_timeout == timedelta(seconds=5)
    assert host.extensions.queues.message_encoding == "none"
    assert host.extensions.http.route_prefix == ""


@pytest.mark.parametrize(
    "queues",
    [
        {"batchSize": 33},
        {"batchSize": 0},
        {"maxDequeueCount": 0},
        {"messageEncoding": "utf8"},
        {"maxPollingInterval": 2000},
    ],
)
def test_host_json_rejects_bad_values(tmp_path: Path, queues: dict[str, object]) -> None:
    doc = {"version": "2.0", "extensions": {"queues": queues}}
    (tmp_path / "host.json").write_text(json.dumps(doc))
    with pytest.raises(HostConfigError, match=r"host\.json"):
        load_host_json(tmp_path)


def test_discover_sample_app(sample_app: SampleApp) -> None:
    env = {
        "SAMPLE_WORK_QUEUE": "w-queue",
        "SAMPLE_ASYNC_QUEUE": "a-queue",
        "SAMPLE_INBOX_QUEUE": "i-queue",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    functions = {f.name: f for f in discover(load_app(sample_app.dir), env, sample_app.dir)}
    get_item, work, tick = functions["get_item"], functions["work"], functions["tick"]
    assert isinstance(get_item, HttpFunction)
    assert (get_item.route, get_item.methods) == ("items/{item_id}", frozenset({"GET"}))
    assert isinstance(functions["boom"], HttpFunction) and functions["boom"].methods is None
    assert isinstance(work, QueueFunction)
    assert (work.queue_name, work.arg_name) == ("w-queue", "msg")
    assert work.connection == ConnectionString("UseDevelopmentStorage=true")
    assert isinstance(tick, TimerFunction)
    assert (tick.schedule, tick.run_on_startup) == ("*/1 * * * * *", True)
    assert functions["with_context"].wants_context


def test_start_fails_naming_a_missing_setting(sample_app: SampleApp) -> None:
    sample_app.write_settings(
        {"AzureWebJobsStorage": sample_app.connection, "SAMPLE_ASYNC_QUEUE": "a-queue"}
    )
    with pytest.raises(HostConfigError, match="SAMPLE_WORK_QUEUE"):
        Host(sample_app.dir, port=0).start()


def test_start_fails_naming_a_missing_connection(sample_app: SampleApp) -> None:
    sample_app.write_settings({"SAMPLE_WORK_QUEUE": "w-queue", "SAMPLE_ASYNC_QUEUE": "a-queue"})
    with pytest.raises(HostConfigError, match="AzureWebJobsStorage"):
        Host(sample_app.dir, port=0).start()


def test_start_fails_on_an_invalid_queue_name(sample_app: SampleApp) -> None:
    sample_app.write_settings(
        {
            "AzureWebJobsStorage": sample_app.connection,
            "SAMPLE_WORK_QUEUE": "Bad_Name",
            "SAMPLE_ASYNC_QUEUE": "a-queue",
        }
    )
    with pytest.raises(HostConfigError, match="Bad_Name"):
        Host(sample_app.dir, port=0).start()


def test_import_error_is_reported(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text("raise ImportError('no such thing')\n")
    with pytest.raises(HostConfigError, match="no such thing"):
        load_app(tmp_path)
