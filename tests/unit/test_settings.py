"""Settings are read from the environment and validated at start-up, naming what is wrong."""

from __future__ import annotations

import pytest

from schemas.exceptions import ConfigurationError
from schemas.settings import (
    MAX_TASK_QUEUE_SHARDS,
    MAX_TASKS_QUEUE_CHARS,
    DatabaseSettings,
    load,
    load_settings,
)

SETTING_NAMES = [
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "AzureWebJobsStorage",
    "AZUREWEBJOBSSTORAGE",
    "LIGHTSOUT_JOBS_QUEUE",
    "LIGHTSOUT_TASKS_QUEUE",
    "LIGHTSOUT_TASK_QUEUE_SHARDS",
    "LIGHTSOUT_SCHEMA",
    "LIGHTSOUT_POOL_MIN_SIZE",
    "LIGHTSOUT_POOL_MAX_SIZE",
    "LIGHTSOUT_WORKER_NAME",
]
GOOD = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment holding only the two required settings."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.conninfo == GOOD["DATABASE_URL"]
    assert settings.storage_connection == "UseDevelopmentStorage=true"
    assert (settings.jobs_queue, settings.tasks_queue) == ("lightsout-jobs", "lightsout-tasks")
    assert settings.jobs_poison_queue == "lightsout-jobs-poison"
    assert settings.tasks_poison_queue == "lightsout-tasks-poison"
    assert settings.schema_name == "lightsout"


def test_every_setting_is_read(env: pytest.MonkeyPatch) -> None:
    env.setenv("LIGHTSOUT_JOBS_QUEUE", "ci-jobs")
    env.setenv("LIGHTSOUT_TASKS_QUEUE", "ci-tasks")
    env.setenv("LIGHTSOUT_SCHEMA", "ls_custom")
    env.setenv("LIGHTSOUT_POOL_MIN_SIZE", "2")
    env.setenv("LIGHTSOUT_POOL_MAX_SIZE", "4")
    env.setenv("LIGHTSOUT_WORKER_NAME", "worker-1")
    settings = load_settings()
    assert settings.tasks_poison_queue == "ci-tasks-poison"
    assert settings.jobs_queue == "ci-jobs"
    assert settings.schema_name == "ls_custom"
    assert (settings.pool_min_size, settings.pool_max_size) == (2, 4)
    assert settings.worker_name == "worker-1"


def test_database_from_its_parts(env: pytest.MonkeyPatch) -> None:
    env.delenv("DATABASE_URL")
    env.setenv("PGHOST", "db.example")
    env.setenv("PGDATABASE", "jobs")
    env.setenv("PGUSER", "app")
    settings = load_settings()
    assert settings.conninfo == "host=db.example port=5432 dbname=jobs user=app"


def expect_error(naming: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert naming in message, message
    return message


def test_missing_storage_connection_is_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("AzureWebJobsStorage")
    expect_error("AzureWebJobsStorage")


def test_empty_storage_connection_is_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("AzureWebJobsStorage", "")
    expect_error("AzureWebJobsStorage")


def test_missing_database_is_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("DATABASE_URL")
    expect_error("DATABASE_URL")


def test_database_url_of_another_kind_is_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("DATABASE_URL", "mysql://root@localhost/db")
    expect_error("DATABASE_URL")


@pytest.mark.parametrize(
    "name", ["Lightsout-Jobs", "jobs_queue", "-jobs", "jobs--x", "ab", "j" * 57, "jobs queue"]
)
@pytest.mark.parametrize("setting", ["LIGHTSOUT_JOBS_QUEUE", "LIGHTSOUT_TASKS_QUEUE"])
def test_bad_queue_names_are_named(env: pytest.MonkeyPatch, setting: str, name: str) -> None:
    env.setenv(setting, name)
    expect_error(setting)


def test_one_task_queue_shard_by_default_named_after_the_tasks_queue(
    env: pytest.MonkeyPatch,
) -> None:
    assert load_settings().task_queues == ("lightsout-tasks",)
    env.setenv("LIGHTSOUT_TASK_QUEUE_SHARDS", "4")
    env.setenv("LIGHTSOUT_TASKS_QUEUE", "ci-tasks")
    settings = load_settings()
    assert settings.task_queues == ("ci-tasks", "ci-tasks-1", "ci-tasks-2", "ci-tasks-3")
    assert settings.tasks_poison_queue == "ci-tasks-poison"


def test_as_many_shards_as_the_maximum(env: pytest.MonkeyPatch) -> None:
    env.setenv("LIGHTSOUT_TASK_QUEUE_SHARDS", str(MAX_TASK_QUEUE_SHARDS))
    assert load_settings().task_queues[-1] == f"lightsout-tasks-{MAX_TASK_QUEUE_SHARDS - 1}"


@pytest.mark.parametrize("shards", ["0", "9", "-1", "two", "1.5", ""])
def test_bad_shard_counts_are_named(env: pytest.MonkeyPatch, shards: str) -> None:
    env.setenv("LIGHTSOUT_TASK_QUEUE_SHARDS", shards)
    expect_error("LIGHTSOUT_TASK_QUEUE_SHARDS")


def test_a_tasks_queue_leaves_room_for_its_last_shards_poison_queue(
    env: pytest.MonkeyPatch,
) -> None:
    longest = "t" * MAX_TASKS_QUEUE_CHARS
    env.setenv("LIGHTSOUT_TASKS_QUEUE", longest)
    env.setenv("LIGHTSOUT_TASK_QUEUE_SHARDS", str(MAX_TASK_QUEUE_SHARDS))
    last_poison = f"{load_settings().task_queues[-1]}-poison"
    assert len(last_poison) == 63  # Azure's limit on a queue name
    env.setenv("LIGHTSOUT_TASKS_QUEUE", longest + "t")
    message = expect_error("LIGHTSOUT_TASKS_QUEUE")
    assert f"more than {MAX_TASKS_QUEUE_CHARS}" in message and "-7-poison" in message


def test_the_jobs_queue_may_not_be_a_task_queue_shard(env: pytest.MonkeyPatch) -> None:
    env.setenv("LIGHTSOUT_JOBS_QUEUE", "lightsout-tasks-5")
    expect_error("LIGHTSOUT_JOBS_QUEUE")


@pytest.mark.parametrize(
    "name", ["Lightsout", "1schema", "ls-custom", "ls;drop schema x", "", "s" * 64, 'a"b']
)
def test_bad_schema_names_are_named(env: pytest.MonkeyPatch, name: str) -> None:
    env.setenv("LIGHTSOUT_SCHEMA", name)
    expect_error("LIGHTSOUT_SCHEMA")


def test_pool_sizes_are_checked(env: pytest.MonkeyPatch) -> None:
    env.setenv("LIGHTSOUT_POOL_MIN_SIZE", "5")
    env.setenv("LIGHTSOUT_POOL_MAX_SIZE", "2")
    expect_error("LIGHTSOUT_POOL_MAX_SIZE")
    env.setenv("LIGHTSOUT_POOL_MAX_SIZE", "many")
    expect_error("LIGHTSOUT_POOL_MAX_SIZE")


def test_every_problem_is_reported_at_once(env: pytest.MonkeyPatch) -> None:
    env.delenv("AzureWebJobsStorage")
    env.setenv("LIGHTSOUT_TASKS_QUEUE", "Bad")
    message = expect_error("AzureWebJobsStorage")
    assert "LIGHTSOUT_TASKS_QUEUE" in message


def test_database_settings_need_no_storage(env: pytest.MonkeyPatch) -> None:
    env.delenv("AzureWebJobsStorage")
    env.setenv("LIGHTSOUT_SCHEMA", "ls_custom")
    settings = load(DatabaseSettings)
    assert (settings.conninfo, settings.schema_name) == (GOOD["DATABASE_URL"], "ls_custom")
    env.setenv("LIGHTSOUT_SCHEMA", "Bad-Schema")
    with pytest.raises(ConfigurationError, match="LIGHTSOUT_SCHEMA"):
        load(DatabaseSettings)
