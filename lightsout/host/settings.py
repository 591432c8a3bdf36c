"""App settings: local.settings.json "Values" and %NAME% binding expressions."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from azstorage import StorageConfigError, StorageConnection, read_connection
from lightsout.host.errors import HostConfigError

LOCAL_SETTINGS = "local.settings.json"
_EXPRESSION = re.compile(r"%([^%]+)%")


class LocalSettings(BaseModel):
    """The part of local.settings.json the host reads; the rest is left to other tools."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    IsEncrypted: bool = False
    Values: dict[str, str] = {}


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Copy "Values" into `environ` where a key is not set yet; return the keys copied."""
    path = app_dir / LOCAL_SETTINGS
    if not path.exists():
        return []
    try:
        settings = LocalSettings.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise HostConfigError(f"{path} is not valid: {exc}") from exc
    if settings.IsEncrypted:
        raise HostConfigError(f"{path} is encrypted; the local host reads plain values only")
    copied = [key for key in settings.Values if key not in environ]
    for key in copied:
        environ[key] = settings.Values[key]
    return copied


def resolve(value: str, environ: Mapping[str, str], where: str) -> str:
    """Replace each %NAME% in `value` by the app setting NAME; `where` names the binding."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise HostConfigError(
                f"{where} is {value!r}, but app setting {name!r} is not set "
                f"(set it in the environment or in {LOCAL_SETTINGS} Values)"
            )
        return environ[name]

    return _EXPRESSION.sub(lookup, value)


def storage_connection(
    name: str | None, environ: Mapping[str, str], where: str
) -> StorageConnection:
    """Read the storage connection a binding's `connection` names, as the Functions host does."""
    try:
        return read_connection(name or "AzureWebJobsStorage", environ)
    except StorageConfigError as exc:
        raise HostConfigError(f"{where}: {exc}") from exc


def is_disabled(function_name: str, environ: Mapping[str, str]) -> bool:
    """Whether the app setting AzureWebJobs.<name>.Disabled turns the function off."""
    value = environ.get(f"AzureWebJobs.{function_name}.Disabled", "")
    return value.strip().lower() in ("true", "1")
