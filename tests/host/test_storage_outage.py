"""The host outlives its storage: polling fails, is logged, and resumes when storage returns."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from lightsout.devservices import azurite_connection_string, free_port, start_azurite
from lightsout.host import Host
from tests.host.conftest import SampleApp, wait_for


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


def test_host_starts_without_storage_and_resumes_when_it_comes(
    sample_app: SampleApp,
    start_host: Callable[..., Host],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    sample_app.connection = azurite_connection_string(port)  # nothing listens there yet
    sample_app.write_settings(
        {
            "SAMPLE_WORK_QUEUE": sample_app.work_queue,
            "SAMPLE_ASYNC_QUEUE": sample_app.async_queue,
            "SAMPLE_INBOX_QUEUE": sample_app.inbox_queue,
            "SAMPLE_RECORD_DIR": str(sample_app.records),
            "AzureWebJobsStorage": sample_app.connection,
        }
    )
    caplog.set_level(logging.INFO, logger="lightsout.host")
    start_host()
    wait_for(lambda: logged(caplog, "failed, retrying"), message="the polling failure in the log")

    azurite = start_azurite(tmp_path / "azurite", port)
    try:
        sample_app.send(sample_app.work_queue, {"id": "late", "action": "ok"})
        wait_for(lambda: sample_app.read("work"), timeout=30, message="the message to run")
        # The failure seen above may be another listener's (the async queue's), which can
        # log its recovery after the work queue's message already ran: wait, don't race.
        wait_for(lambda: logged(caplog, "reachable again"), timeout=30, message="the recovery log")
    finally:
        azurite.stop()
