"""Azure Storage Queues as the Functions host uses them, shared by the app and the local host.

One reading of each piece both sides need: the storage connection settings
(`AzureWebJobsStorage` or its identity form), the queue clients made from them, the
message codec of host.json's `messageEncoding`, and host.json itself. It imports
nothing of ours, so the engine and the local host may both build on it.
"""

from azstorage.clients import ClientOptions, ensure_queue, queue_client
from azstorage.codec import (
    MessageEncoding,
    NotEncoded,
    UndecodedMessage,
    decode_body,
    decode_text,
    wire_size,
    wire_text,
)
from azstorage.connection import (
    POISON_SUFFIX,
    ConnectionString,
    IdentityConnection,
    StorageConnection,
    read_connection,
)
from azstorage.errors import StorageConfigError
from azstorage.hostjson import HOST_JSON, HostJson, QueuesOptions, load_host_json, parse_timespan

__all__ = [
    "HOST_JSON",
    "POISON_SUFFIX",
    "ClientOptions",
    "ConnectionString",
    "HostJson",
    "IdentityConnection",
    "MessageEncoding",
    "NotEncoded",
    "QueuesOptions",
    "StorageConfigError",
    "StorageConnection",
    "UndecodedMessage",
    "decode_body",
    "decode_text",
    "ensure_queue",
    "load_host_json",
    "parse_timespan",
    "queue_client",
    "read_connection",
    "wire_size",
    "wire_text",
]
