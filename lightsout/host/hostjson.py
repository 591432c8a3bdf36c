"""host.json as the local host reads it: azstorage's one reading, with the host's error."""

from __future__ import annotations

from pathlib import Path

from azstorage import HOST_JSON, StorageConfigError
from azstorage.hostjson import MAX_BATCH_SIZE, HostJson, QueuesOptions, parse_timespan
from azstorage.hostjson import load_host_json as _load
from lightsout.host.errors import HostConfigError

__all__ = ["MAX_BATCH_SIZE", "HostJson", "QueuesOptions", "load_host_json", "parse_timespan"]


def load_host_json(app_dir: Path) -> HostJson:
    """Read app_dir/host.json; a missing file means every default."""
    try:
        return _load(app_dir / HOST_JSON)
    except StorageConfigError as exc:
        raise HostConfigError(str(exc)) from exc
