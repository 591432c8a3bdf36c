"""Application settings: one model, validated at start-up."""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.exceptions import ConfigurationError

QUEUE_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# 56 leaves room for the "-poison" suffix within Azure's 63 characters.
QueueName = Annotated[str, Field(pattern=QUEUE_NAME.pattern, min_length=3, max_length=56)]


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

    @field_validator("database_url")
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


class Settings(DatabaseSettings):
    """Every setting the app reads, from the environment (the Functions app settings)."""

    storage_connection: str = Field(
        validation_alias=AliasChoices("AzureWebJobsStorage", "AZUREWEBJOBSSTORAGE"), min_length=1
    )
    jobs_queue: QueueName = Field(default="lightsout-jobs", validation_alias="LIGHTSOUT_JOBS_QUEUE")
    tasks_queue: QueueName = Field(
        default="lightsout-tasks", validation_alias="LIGHTSOUT_TASKS_QUEUE"
    )
    worker_name: str | None = Field(default=None, validation_alias="LIGHTSOUT_WORKER_NAME")
    task_concurrency: int = Field(
        default=8, ge=1, le=256, validation_alias="LIGHTSOUT_TASK_CONCURRENCY"
    )
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

    # Speed and retention (issue 9): how submissions send stage 1; how long history stays.
    submit_dispatch: Literal["batched", "inline"] = Field(
        default="batched", validation_alias="LIGHTSOUT_SUBMIT_DISPATCH"
    )
    retention_days: float = Field(default=30.0, ge=0, validation_alias="LIGHTSOUT_RETENTION_DAYS")

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        if self.heartbeat_s * 2 > self.task_lease_s:
            raise ValueError("LIGHTSOUT_TASK_LEASE_S must be at least twice LIGHTSOUT_HEARTBEAT_S")
        return self

    @property
    def jobs_poison_queue(self) -> str:
        return f"{self.jobs_queue}-poison"

    @property
    def tasks_poison_queue(self) -> str:
        return f"{self.tasks_queue}-poison"


S = TypeVar("S", bound=DatabaseSettings)


def load_settings() -> Settings:
    """Read the app's settings, or raise ConfigurationError naming each bad or missing one."""
    return load(Settings)


def load(model: type[S]) -> S:
    """Read the settings of `model`, or raise ConfigurationError naming each bad one."""
    try:
        return model()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
