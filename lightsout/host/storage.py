"""Queue clients as the host uses them: raw text (no encode/decode policy), quick retries."""

from __future__ import annotations

import contextlib

import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import LinearRetry, QueueClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

POISON_SUFFIX = "-poison"


def queue_client(connection: str, queue_name: str, pool_size: int = 4) -> QueueClient:
    """A client that sends and receives message text as it is stored.

    The host decodes base64 itself: the SDK's decode policy fails on a message that is
    not base64 with an AttributeError from inside the SDK, before we could see the text.
    """
    # Few, short retries: the poll loop has its own back-off and must notice a stop soon.
    retry = LinearRetry(backoff=1, retry_total=1, random_jitter_range=1)
    return QueueClient.from_connection_string(
        connection,
        queue_name,
        retry_policy=retry,
        connection_timeout=10,
        read_timeout=30,
        session=_session(pool_size),
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


def poison_client(connection: str, queue_name: str) -> QueueClient:
    return queue_client(connection, f"{queue_name}{POISON_SUFFIX}")


def ensure_queue(client: QueueClient) -> None:
    """Create the queue unless it exists."""
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
