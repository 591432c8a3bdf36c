"""The host's JSON log lines: one object per record, with the invocation and the app's ids."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from lightsout.host.logformat import InvocationFilter, JsonFormatter, configure_logging, invocation


def formatted(record: logging.LogRecord) -> dict[str, object]:
    InvocationFilter().filter(record)
    line: dict[str, object] = json.loads(JsonFormatter().format(record))
    return line


def test_a_record_is_one_line_with_the_invocation_and_the_apps_attributes() -> None:
    record = logging.LogRecord(
        "engine", logging.WARNING, __file__, 1, "task %s\nfailed", ("t1",), None
    )
    record.job_id, record.attempt = "ab" * 32, 2  # what the engine's record factory adds
    with invocation("inv-1"):
        line = formatted(record)
    assert line | {"level": "WARNING", "logger": "engine", "message": "task t1\nfailed"} == line
    assert (line["job_id"], line["attempt"], line["invocation_id"]) == ("ab" * 32, 2, "inv-1")
    assert "\n" not in JsonFormatter().format(record)


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatted(record)
    assert "RuntimeError: boom" in str(line["exception"]) and "invocation_id" not in line


def test_an_unknown_format_stops_the_host_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="LIGHTSOUT_LOG_FORMAT must be text or json"):
        configure_logging("yaml")
