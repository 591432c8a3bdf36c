"""Microsoft Entra tokens as the PostgreSQL password (Azure Database for PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from schemas.exceptions import DatabaseUnavailable
from schemas.settings import DatabaseSettings

SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


class EntraPassword:
    """A current token for each new connection; remembers when each token handed out expires.

    The server checks a token only when a connection logs in. A pooled connection outlives
    its token, so `check` (the pool's check at every hand-out) closes one whose token has
    expired and the pool connects again with a fresh one.
    """

    def __init__(self, credential: TokenCredential, clock: Callable[[], float] = time.time) -> None:
        self.credential, self._clock = credential, clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self) -> str:
        """Return a token that has not expired (azure-identity refreshes it before expiry)."""
        name = type(self.credential).__name__
        try:
            token = self.credential.get_token(SCOPE)
        except ClientAuthenticationError as exc:
            raise DatabaseUnavailable(
                f"no Microsoft Entra token for PostgreSQL from {name}: {exc.message}",
                scope=SCOPE,
            ) from exc
        with self._lock:
            now = self._clock()
            self._expiry = {t: at for t, at in self._expiry.items() if at > now}
            self._expiry[token.token] = float(token.expires_on)
        return token.token

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """Close and refuse a connection whose token has expired (or is not one of ours)."""
        with self._lock:
            expires_at = self._expiry.get(conn.info.password, 0.0)
        if expires_at <= self._clock():
            conn.close()  # closed, the pool replaces it instead of keeping it
            raise psycopg.OperationalError("the connection's Microsoft Entra token has expired")


def credential_for(settings: DatabaseSettings) -> TokenCredential:
    """ManagedIdentityCredential for LIGHTSOUT_DB_CLIENT_ID's identity, else the default chain."""
    if settings.db_client_id:
        return ManagedIdentityCredential(client_id=settings.db_client_id)
    return DefaultAzureCredential()


def entra_password(settings: DatabaseSettings) -> EntraPassword:
    """Return the token source of LIGHTSOUT_DB_AUTH=entra for these settings."""
    return EntraPassword(credential_for(settings))
