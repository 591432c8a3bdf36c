"""host.json: the Functions host settings that the app and the local host honour, validated."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from azstorage.errors import StorageConfigError

HOST_JSON = "host.json"
MAX_BATCH_SIZE = 32
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$")


def parse_timespan(value: object) -> timedelta:
    """Parse a .NET TimeSpan string such as "00:00:30", "1.02:00:00" or "00:00:00.500"."""
    if isinstance(value, timedelta):
        return value
    match = _TIMESPAN.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a TimeSpan like 'hh:mm:ss', got {value!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
        raise ValueError(f"TimeSpan {value!r} is out of range")
    return timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds or 0),
        microseconds=int((fraction or "0").ljust(7, "0")) // 10,
    )


def _parse_function_timeout(value: object) -> timedelta | None:
    if value is None or value == "-1":
        return None
    return parse_timespan(value)


TimeSpan = Annotated[timedelta, BeforeValidator(parse_timespan)]
OptionalTimeout = Annotated[timedelta | None, BeforeValidator(_parse_function_timeout)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)


class QueuesOptions(_Section):
    """extensions.queues, with the Functions host's defaults."""

    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE)
    new_batch_threshold: int | None = Field(None, ge=0)
    max_polling_interval: TimeSpan = timedelta(minutes=1)
    visibility_timeout: TimeSpan = timedelta(0)
    max_dequeue_count: int = Field(5, ge=1)
    # The Functions host binds this setting to an enum, so any letter case works there.
    message_encoding: Annotated[
        Literal["base64", "none"], BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)
    ] = "base64"

    @property
    def batch_threshold(self) -> int:
        """newBatchThreshold, defaulting to batchSize/2 (N = 1 vCPU, as on Consumption)."""
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return self.batch_size // 2


class HttpOptions(_Section):
    """extensions.http."""

    route_prefix: str = "api"


class Extensions(_Section):
    queues: QueuesOptions = QueuesOptions()
    http: HttpOptions = HttpOptions()


class HostJson(_Section):
    """The whole host.json; sections nobody here uses are kept, unchecked."""

    version: str = "2.0"
    function_timeout: OptionalTimeout = timedelta(minutes=30)
    extensions: Extensions = Extensions()


def load_host_json(path: Path) -> HostJson:
    """Read and validate a host.json file; a missing file means every default."""
    if not path.exists():
        return HostJson()
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        host = HostJson.model_validate(raw)
    except ValidationError as exc:
        raise StorageConfigError(f"{path} is not valid: {_problems(exc)}") from exc
    except ValueError as exc:
        raise StorageConfigError(f"{path} is not valid JSON: {exc}") from exc
    if host.version != "2.0":
        raise StorageConfigError(f'{path}: version must be "2.0", got {host.version!r}')
    return host


def _problems(exc: ValidationError) -> str:
    """One line per wrong value: where it is, what is wrong, and what was given."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}, not {err['input']!r}"
        for err in exc.errors()
    )
