"""Application settings: one model, validated at start-up."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from schemas.auth import Scope
from schemas.exceptions import ConfigurationError

QUEUE_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# 56 leaves room for the "-poison" suffix within Azure's 63 characters.
QueueName = Annotated[str, Field(pattern=QUEUE_NAME.pattern, min_length=3, max_length=56)]
# Task queue shards: shard 0 is LIGHTSOUT_TASKS_QUEUE itself, shard k is "<that>-k". The
# triggers of every shard are declared whatever the count (triggers/queues.py), so the
# tasks queue leaves room for the longest of their names, "<tasks>-7-poison".
MAX_TASK_QUEUE_SHARDS = 8
MAX_TASKS_QUEUE_CHARS = 63 - len(f"-{MAX_TASK_QUEUE_SHARDS - 1}-poison")
MIN_KEY_CHARS = 24


class ApiKeySetting(BaseModel):
    """One entry of LIGHTSOUT_API_KEYS: the secret and what it may do."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    key: str = Field(repr=False)
    scopes: frozenset[Scope] = Field(min_length=1)


class DatabaseSettings(BaseSettings):
    """The database settings: all that `lightsout migrate` needs."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    pghost: str | None = Field(default=None, validation_alias="PGHOST")
    pgport: int = Field(default=5432, validation_alias="PGPORT")
    pgdatabase: str | None = Field(default=None, validation_alias="PGDATABASE")
    pguser: str | None = Field(default=None, validation_alias="PGUSER")
    pgpassword: str | None = Field(default=None, validation_alias="PGPASSWORD")
    schema_name: str = Field(
        default="lightsout", validation_alias="LIGHTSOUT_SCHEMA", pattern=SCHEMA_NAME.pattern
    )
    pool_min_size: int = Field(default=1, ge=0, validation_alias="LIGHTSOUT_POOL_MIN_SIZE")
    pool_max_size: int = Field(default=10, ge=1, validation_alias="LIGHTSOUT_POOL_MAX_SIZE")
    # Connections through a transaction pooler (PgBouncer, Azure's port 6432) and past it.
    migrations_database_url: str | None = Field(
        default=None, validation_alias="LIGHTSOUT_MIGRATIONS_DATABASE_URL"
    )
    db_pooler: Literal["auto", "transaction", "none"] = Field(
        default="auto", validation_alias="LIGHTSOUT_DB_POOLER"
    )
    # Microsoft Entra tokens as the PostgreSQL password.
    db_auth: Literal["password", "entra"] = Field(
        default="password", validation_alias="LIGHTSOUT_DB_AUTH"
    )
    db_client_id: str | None = Field(default=None, validation_alias="LIGHTSOUT_DB_CLIENT_ID")

    @field_validator("database_url", "migrations_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @model_validator(mode="after")
    def _database_given(self) -> DatabaseSettings:
        if self.database_url is None and self.pghost is None:
            raise ValueError("set DATABASE_URL, or PGHOST (with PGPORT, PGDATABASE, PGUSER)")
        if self.pool_max_size < self.pool_min_size:
            raise ValueError("LIGHTSOUT_POOL_MAX_SIZE must be >= LIGHTSOUT_POOL_MIN_SIZE")
        return self

    @property
    def conninfo(self) -> str:
        """Return a libpq connection string for the configured database."""
        if self.database_url is not None:
            return self.database_url
        parts = {
            "host": self.pghost,
            "port": str(self.pgport),
            "dbname": self.pgdatabase,
            "user": self.pguser,
            "password": self.pgpassword,
        }
        return " ".join(f"{k}={v}" for k, v in parts.items() if v)

    @property
    def migrations_conninfo(self) -> str:
        """Return the direct connection migrations take (the pooler's port is not for them)."""
        return self.migrations_database_url or self.conninfo


class Settings(DatabaseSettings):
    """Every setting the app reads, from the environment (the Functions app settings)."""

    # Storage: a connection string, or the identity-based connection the Functions host
    # reads from the same names (azstorage.connection reads them; this checks one is given).
    storage_account_name: str | None = Field(
        default=None, validation_alias="AzureWebJobsStorage__accountName"
    )
    storage_queue_service_uri: str | None = Field(
        default=None, validation_alias="AzureWebJobsStorage__queueServiceUri"
    )
    storage_credential: str | None = Field(
        default=None, validation_alias="AzureWebJobsStorage__credential"
    )
    storage_client_id: str | None = Field(
        default=None, validation_alias="AzureWebJobsStorage__clientId"
    )
    # Last of the block: its check reads the fields above (validate_default runs it when unset).
    storage_connection: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage", "AZUREWEBJOBSSTORAGE"),
        validate_default=True,
    )
    jobs_queue: QueueName = Field(default="lightsout-jobs", validation_alias="LIGHTSOUT_JOBS_QUEUE")
    tasks_queue: QueueName = Field(
        default="lightsout-tasks", validation_alias="LIGHTSOUT_TASKS_QUEUE"
    )
    task_queue_shards: int = Field(
        default=1, ge=1, le=MAX_TASK_QUEUE_SHARDS, validation_alias="LIGHTSOUT_TASK_QUEUE_SHARDS"
    )
    worker_name: str | None = Field(default=None, validation_alias="LIGHTSOUT_WORKER_NAME")
    task_concurrency: int = Field(
        default=8, ge=1, le=256, validation_alias="LIGHTSOUT_TASK_CONCURRENCY"
    )
    local_runs: int = Field(default=2, ge=0, le=64, validation_alias="LIGHTSOUT_LOCAL_RUNS")
    heartbeat_s: float = Field(default=10.0, gt=0, validation_alias="LIGHTSOUT_HEARTBEAT_S")
    task_lease_s: float = Field(default=60.0, gt=0, validation_alias="LIGHTSOUT_TASK_LEASE_S")
    sweep_grace_s: float = Field(default=15.0, ge=0, validation_alias="LIGHTSOUT_SWEEP_GRACE_S")
    stall_s: float = Field(default=600.0, gt=0, validation_alias="LIGHTSOUT_STALL_S")
    dependency_wait_s: float = Field(
        default=120.0, ge=0, validation_alias="LIGHTSOUT_DEPENDENCY_WAIT_S"
    )
    janitor_schedule: str = Field(
        default="*/10 * * * * *", validation_alias="LIGHTSOUT_JANITOR_SCHEDULE"
    )

    @field_validator("tasks_queue")
    @classmethod
    def _room_for_shards(cls, value: str) -> str:
        if len(value) > MAX_TASKS_QUEUE_CHARS:
            raise ValueError(
                f"{value!r} has {len(value)} characters, more than {MAX_TASKS_QUEUE_CHARS}:"
                f" the poison queue of its last shard, '<name>-{MAX_TASK_QUEUE_SHARDS - 1}-poison',"
                " must fit in Azure's 63"
            )
        return value

    @field_validator("storage_connection")
    @classmethod
    def _storage_given(cls, value: str | None, info: ValidationInfo) -> str | None:
        identity = info.data.get("storage_account_name") or info.data.get(
            "storage_queue_service_uri"
        )
        if not (value or identity):
            raise ValueError(
                "set AzureWebJobsStorage to a storage connection string, or"
                " AzureWebJobsStorage__accountName or AzureWebJobsStorage__queueServiceUri"
                " to connect with an identity"
            )
        return value

    # Authentication and limits (issue 7): who may call the API, and how much one call may ask.
    auth: Literal["on", "off"] = Field(default="on", validation_alias="LIGHTSOUT_AUTH")
    api_keys: dict[str, ApiKeySetting] = Field(
        default_factory=dict, validation_alias="LIGHTSOUT_API_KEYS"
    )
    jwt_issuer: str | None = Field(default=None, validation_alias="LIGHTSOUT_JWT_ISSUER")
    jwt_audience: str | None = Field(default=None, validation_alias="LIGHTSOUT_JWT_AUDIENCE")
    jwt_jwks_url: str | None = Field(default=None, validation_alias="LIGHTSOUT_JWT_JWKS_URL")
    jwt_secret: str | None = Field(
        default=None, validation_alias="LIGHTSOUT_JWT_SECRET", min_length=32, repr=False
    )
    trust_easy_auth: bool = Field(default=False, validation_alias="LIGHTSOUT_TRUST_EASY_AUTH")
    max_tasks_per_stage: int = Field(
        default=100_000, ge=1, validation_alias="LIGHTSOUT_MAX_TASKS_PER_STAGE"
    )
    max_result_bytes: int = Field(
        default=256 * 1024, ge=1, validation_alias="LIGHTSOUT_MAX_RESULT_BYTES"
    )
    selftest_job_types: bool = Field(default=False, validation_alias="LIGHTSOUT_SELFTEST_JOB_TYPES")
    # Read again at import by triggers/janitor.py (a decorator argument); here it is checked.
    janitor_run_on_startup: bool = Field(
        default=False, validation_alias="LIGHTSOUT_JANITOR_RUN_ON_STARTUP"
    )

    @field_validator("api_keys")
    @classmethod
    def _long_keys(cls, keys: dict[str, ApiKeySetting]) -> dict[str, ApiKeySetting]:
        for name, entry in keys.items():
            if len(entry.key) < MIN_KEY_CHARS:
                raise ValueError(
                    f"the key named {name!r} has {len(entry.key)} characters, fewer than "
                    f"{MIN_KEY_CHARS}; make one with `python -m lightsout keys new {name}`"
                )
        return keys

    @model_validator(mode="after")
    def _jwt_complete(self) -> Settings:
        if (self.jwt_jwks_url or self.jwt_secret) and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError(
                "a JWT key source needs LIGHTSOUT_JWT_ISSUER and LIGHTSOUT_JWT_AUDIENCE too"
            )
        return self

    @property
    def credentials_configured(self) -> bool:
        """True when some credential can pass: a key, a JWT key source or Easy Auth."""
        return bool(self.api_keys or self.jwt_jwks_url or self.jwt_secret or self.trust_easy_auth)

    # Speed and retention (issue 9): how submissions send stage 1; how long history stays.
    submit_dispatch: Literal["batched", "inline"] = Field(
        default="batched", validation_alias="LIGHTSOUT_SUBMIT_DISPATCH"
    )
    retention_days: float = Field(default=30.0, ge=0, validation_alias="LIGHTSOUT_RETENTION_DAYS")

    @model_validator(mode="after")
    def _queues_distinct(self) -> Settings:
        every_shard = task_shard_queues(self.tasks_queue, MAX_TASK_QUEUE_SHARDS)
        if self.jobs_queue in every_shard:
            raise ValueError(
                f"LIGHTSOUT_JOBS_QUEUE {self.jobs_queue!r} is the name of a task queue shard"
                f" of LIGHTSOUT_TASKS_QUEUE {self.tasks_queue!r}: give the two other names"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        if self.heartbeat_s * 2 > self.task_lease_s:
            raise ValueError("LIGHTSOUT_TASK_LEASE_S must be at least twice LIGHTSOUT_HEARTBEAT_S")
        return self

    @property
    def storage_settings(self) -> dict[str, str]:
        """The storage settings that are set, by their app-setting names."""
        names = {
            "AzureWebJobsStorage": self.storage_connection,
            "AzureWebJobsStorage__accountName": self.storage_account_name,
            "AzureWebJobsStorage__queueServiceUri": self.storage_queue_service_uri,
            "AzureWebJobsStorage__credential": self.storage_credential,
            "AzureWebJobsStorage__clientId": self.storage_client_id,
        }
        return {name: value for name, value in names.items() if value}

    @property
    def jobs_poison_queue(self) -> str:
        return f"{self.jobs_queue}-poison"

    @property
    def tasks_poison_queue(self) -> str:
        return f"{self.tasks_queue}-poison"

    @property
    def task_queues(self) -> tuple[str, ...]:
        """The configured task queue shards, shard 0 first."""
        return task_shard_queues(self.tasks_queue, self.task_queue_shards)


def task_shard_queue(tasks_queue: str, shard: int) -> str:
    """Return the name of task queue shard `shard`: the tasks queue itself for shard 0."""
    if not 0 <= shard < MAX_TASK_QUEUE_SHARDS:
        raise ValueError(f"task queue shard must be 0..{MAX_TASK_QUEUE_SHARDS - 1}, not {shard}")
    return tasks_queue if shard == 0 else f"{tasks_queue}-{shard}"


def task_shard_queues(tasks_queue: str, shards: int) -> tuple[str, ...]:
    """Return the names of the first `shards` task queue shards."""
    return tuple(task_shard_queue(tasks_queue, k) for k in range(shards))


S = TypeVar("S", bound=DatabaseSettings)
_BOOL = TypeAdapter(bool)


def env_flag(name: str) -> bool:
    """Read a boolean setting at import time (decorator arguments), as Settings would parse it."""
    raw = os.environ.get(name, "").strip()
    try:
        return bool(raw) and _BOOL.validate_python(raw)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {name}: {raw!r} is not a boolean") from exc


def load_settings() -> Settings:
    """Read the app's settings, or raise ConfigurationError naming each bad or missing one."""
    return load(Settings)


def load(model: type[S]) -> S:
    """Read the settings of `model`, or raise ConfigurationError naming each bad one."""
    try:
        return model()
    except SettingsError as exc:
        # A JSON setting that does not parse; the message names the field, not the value.
        raise ConfigurationError(f"invalid settings: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
