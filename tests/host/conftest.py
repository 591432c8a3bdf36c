"""Fixtures for the local host's tests: a copy of the sample app per test, hosts, queues."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from azstorage import ensure_queue
from lightsout.host import Host

SAMPLE_APP = Path(__file__).parent / "sample_app"
Json = dict[str, Any]


class SampleApp:
    """A copy of sample_app in a temp folder, with its own queues and record folder."""

    def __init__(self, root: Path, connection: str) -> None:
        self.dir = root / "app"
        self.records = root / "records"
        self.connection = connection
        prefix = f"h{secrets.token_hex(4)}"
        self.work_queue, self.async_queue = f"{prefix}-work", f"{prefix}-async"
        self.inbox_queue = f"{prefix}-inbox"
        shutil.copytree(SAMPLE_APP, self.dir, ignore=shutil.ignore_patterns("__pycache__"))
        self.records.mkdir()
        self.write_settings(
            {
                "SAMPLE_WORK_QUEUE": self.work_queue,
                "SAMPLE_ASYNC_QUEUE": self.async_queue,
                "SAMPLE_INBOX_QUEUE": self.inbox_queue,
                "SAMPLE_RECORD_DIR": str(self.records),
                "AzureWebJobsStorage": connection,
            }
        )

    def write_settings(self, values: dict[str, str]) -> None:
        path = self.dir / "local.settings.json"
        path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    def set_queues(self, **options: Any) -> None:
        """Change extensions.queues of this copy's host.json."""
        path = self.dir / "host.json"
        host = json.loads(path.read_text())
        host["extensions"]["queues"].update(options)
        path.write_text(json.dumps(host))

    def host_json(self, **top_level: Any) -> None:
        path = self.dir / "host.json"
        host = json.loads(path.read_text())
        host.update(top_level)
        path.write_text(json.dumps(host))

    def queue(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.connection, name)

    def send(self, queue_name: str, payload: Json | str, *, encode: bool = True) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        if encode:
            text = base64.b64encode(text.encode()).decode()
        client = self.queue(queue_name)
        ensure_queue(client)
        client.send_message(text)

    def read(self, name: str) -> list[Json]:
        path = self.records / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def exists(self, queue_name: str) -> bool:
        try:
            self.queue(queue_name).get_queue_properties()
        except ResourceNotFoundError:
            return False
        return True

    def peek_all(self, queue_name: str) -> list[str]:
        """Texts of the visible messages (up to 32)."""
        try:
            return [m.content for m in self.queue(queue_name).peek_messages(max_messages=32)]
        except Exception:  # the queue does not exist
            return []


def wait_for(check: Callable[[], Any], timeout: float = 15, message: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def isolated_process_state() -> Iterator[None]:
    """Undo what a host changes in the process: os.environ, sys.path, sys.modules entry."""
    environ, path = dict(os.environ), list(sys.path)
    module = sys.modules.get("function_app")
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    if module is None:
        sys.modules.pop("function_app", None)
    else:
        sys.modules["function_app"] = module


@pytest.fixture
def sample_app(
    tmp_path: Path, azurite: str, isolated_process_state: None, monkeypatch: pytest.MonkeyPatch
) -> SampleApp:
    # The copy's local.settings.json supplies these; a developer's environment must not win.
    for key in (
        "AzureWebJobsStorage",
        "SAMPLE_WORK_QUEUE",
        "SAMPLE_ASYNC_QUEUE",
        "SAMPLE_INBOX_QUEUE",
        "SAMPLE_RECORD_DIR",
    ):
        monkeypatch.delenv(key, raising=False)
    return SampleApp(tmp_path, azurite)


@pytest.fixture
def start_host(sample_app: SampleApp) -> Iterator[Callable[..., Host]]:
    """Start a Host for the sample app on a free port; every host is stopped afterwards."""
    hosts: list[Host] = []

    def start(
        concurrency: int | None = None,
        lease_time: timedelta = timedelta(minutes=10),
        grace_seconds: float = 10,
    ) -> Host:
        host = Host(
            sample_app.dir,
            port=0,
            concurrency=concurrency,
            lease_time=lease_time,
            grace_seconds=grace_seconds,
        )
        hosts.append(host)
        host.start()
        return host

    yield start
    for host in hosts:
        if host.server is not None and not host.server.stopping:
            host.stop()
