"""A storage connection as the Functions host reads it: a connection string or an identity.

For a connection named N (`AzureWebJobsStorage` for the host's own storage), the host
reads the app setting N as a connection string; when it is empty or absent, the
section N__* describes an identity-based connection: N__accountName (the queue service
is then https://{name}.queue.core.windows.net) or N__queueServiceUri, and N__credential
= managedidentity with N__clientId for a user-assigned managed identity; without
N__credential it is DefaultAzureCredential. Setting names are case-insensitive, and
`:` works where `__` does, as in .NET configuration.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from azstorage.errors import StorageConfigError

POISON_SUFFIX = "-poison"
STORAGE_SCOPE = "https://storage.azure.com/.default"
_PREFIX = "AzureWebJobs"


@dataclass(frozen=True)
class ConnectionString:
    """A connection string (account key, SAS or UseDevelopmentStorage=true)."""

    value: str
    setting: str = "AzureWebJobsStorage"


@dataclass(frozen=True)
class IdentityConnection:
    """A queue service reached with a Microsoft Entra token instead of a key."""

    queue_service_uri: str
    managed_identity: bool = False
    client_id: str | None = None
    setting: str = "AzureWebJobsStorage"

    @functools.cached_property
    def credential(self) -> TokenCredential:
        """One credential per connection: it caches its token for every client made from it."""
        if self.managed_identity:
            return ManagedIdentityCredential(client_id=self.client_id)
        return DefaultAzureCredential(managed_identity_client_id=self.client_id)

    def describe(self) -> str:
        """Name the credential and the identity it signs in as, for error messages."""
        if not self.managed_identity:
            client = f" (managed identity client id {self.client_id})" if self.client_id else ""
            return f"DefaultAzureCredential{client}"
        if self.client_id:
            return f"ManagedIdentityCredential (user-assigned, client id {self.client_id})"
        return "ManagedIdentityCredential (system-assigned)"

    def check(self) -> None:
        """Get a token now, so a credential that cannot sign in stops the start, named."""
        try:
            self.credential.get_token(STORAGE_SCOPE)
        except ClientAuthenticationError as exc:
            first_line = (exc.message or str(exc)).splitlines()[0]
            raise StorageConfigError(
                f"{self.setting}: {self.describe()} could not get a token for"
                f" {self.queue_service_uri}: {first_line}"
            ) from exc


StorageConnection = ConnectionString | IdentityConnection


def read_connection(name: str, settings: Mapping[str, str]) -> StorageConnection:
    """Read the connection `name` from app settings, or raise naming what is missing."""
    values = {key.lower().replace(":", "__"): value for key, value in settings.items() if value}
    # Like the Functions host: "Storage" may mean the setting "AzureWebJobsStorage".
    candidates = [f"{_PREFIX}{name}", name] if not name.startswith(_PREFIX) else [name]
    for setting in candidates:
        found = _read_section(setting, values)
        if found is not None:
            return found
    raise StorageConfigError(
        f"no storage connection {name!r}: set {name} to a connection string, or"
        f" {name}__accountName or {name}__queueServiceUri to connect with an identity"
    )


def _read_section(setting: str, values: Mapping[str, str]) -> StorageConnection | None:
    key = setting.lower()
    if values.get(key, "").strip():
        return ConnectionString(values[key], setting)
    section = {k.removeprefix(f"{key}__"): v for k, v in values.items() if k.startswith(f"{key}__")}
    if not section:
        return None
    account, uri = section.get("accountname"), section.get("queueserviceuri")
    if account:
        uri = f"https://{account}.queue.core.windows.net"
    elif uri:
        _check_uri(f"{setting}__queueServiceUri", uri)
    else:
        given = ", ".join(f"{setting}__{k}" for k in sorted(section))
        raise StorageConfigError(
            f"{setting}: {given} given, but neither {setting}__accountName nor"
            f" {setting}__queueServiceUri, which a queue connection by identity needs"
        )
    credential = section.get("credential", "").strip().lower()
    if credential not in ("", "managedidentity"):
        raise StorageConfigError(
            f"{setting}__credential must be managedidentity (or unset for"
            f" DefaultAzureCredential), not {section['credential']!r}"
        )
    return IdentityConnection(
        uri.rstrip("/"), credential == "managedidentity", section.get("clientid"), setting
    )


def _check_uri(setting: str, uri: str) -> None:
    parts = urlsplit(uri)
    # The SDK sends a bearer token only over TLS.
    if parts.scheme != "https" or not parts.netloc:
        raise StorageConfigError(f"{setting} must be an https:// URL, not {uri!r}")
