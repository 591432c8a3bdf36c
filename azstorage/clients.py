"""The one QueueClient factory: raw text in and out, our timeouts, a connection per thread."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import LinearRetry, QueueClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from azstorage.connection import ConnectionString, StorageConnection
from azstorage.errors import StorageConfigError


@dataclass(frozen=True)
class ClientOptions:
    """How patient a client is, and how many threads may use it at once."""

    retries: int = 2
    backoff_s: int = 1
    jitter_s: int = 0
    connect_timeout_s: float = 2
    read_timeout_s: float = 10
    pool_size: int = 10


def queue_client(
    connection: StorageConnection, queue_name: str, options: ClientOptions = ClientOptions()
) -> QueueClient:
    """A client that sends and receives message text exactly as it is stored.

    It has no encode or decode policy: callers encode once (azstorage.codec), so the
    size they check is the size sent, and they see a message that is not base64 as the
    text it is (the SDK's decode policy fails on it with an AttributeError from inside).
    """
    common: dict[str, Any] = {
        "retry_policy": LinearRetry(
            backoff=options.backoff_s,
            retry_total=options.retries,
            random_jitter_range=options.jitter_s,
        ),
        "connection_timeout": options.connect_timeout_s,
        "read_timeout": options.read_timeout_s,
        "session": _session(options.pool_size),
    }
    if isinstance(connection, ConnectionString):
        try:
            return QueueClient.from_connection_string(connection.value, queue_name, **common)
        except ValueError as exc:
            raise StorageConfigError(
                f"{connection.setting} is not a valid storage connection string: {exc}"
            ) from exc
    return QueueClient(
        connection.queue_service_uri, queue_name, credential=connection.credential, **common
    )


def _session(pool_size: int) -> requests.Session:
    """A session keeping `pool_size` connections (requests keeps 10), one per thread using it."""
    session = requests.Session()
    # The SDK's retry policy retries; urllib3 must not retry underneath it.
    adapter = HTTPAdapter(
        pool_maxsize=pool_size,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return session


def ensure_queue(client: QueueClient) -> None:
    """Create the queue unless it exists."""
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
