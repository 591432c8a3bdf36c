"""Who is asking: the scopes of the API and the identity a credential proves."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Scope(StrEnum):
    """What a credential may do: every GET, submitting jobs, operator actions."""

    READ = "jobs:read"
    SUBMIT = "jobs:submit"
    ADMIN = "jobs:admin"


CredentialKind = Literal["api_key", "jwt", "easy_auth", "auth_off"]


class Identity(BaseModel):
    """An authenticated caller; `actor` is what job_events records for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="key name, token sub/oid, or Easy Auth user")
    kind: CredentialKind
    scopes: frozenset[Scope]
    on_behalf_of: str | None = Field(
        default=None, description="the X-Lightsout-Actor note; never the identity itself"
    )

    @property
    def actor(self) -> str:
        """Return the actor recorded in job_events, e.g. `key:ops` or `key:ops (for alice)`."""
        base = f"{self.kind.replace('_', '-')}:{self.name}"
        return f"{base} (for {self.on_behalf_of})" if self.on_behalf_of else base

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes
