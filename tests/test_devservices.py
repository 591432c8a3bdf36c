"""The development services start, answer and restart; the fixtures built on them work."""

from __future__ import annotations

import os
import re
from typing import LiteralString

import psycopg
import pytest
from azure.storage.queue import QueueClient

from lightsout import devservices
from lightsout.devservices import (
    AzuriteService,
    PostgresService,
    ensure_azurite,
    ensure_postgres,
    free_port,
    postgres_answers,
    queue_endpoint,
    start_cluster,
)
from tests.fixtures_services import RUN_DIR, QueueNames

QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def scalar(dsn: str, query: LiteralString) -> object:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_throwaway_cluster_starts_even_when_database_url_answers(
    pg_service: PostgresService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_service.dsn)
    cluster = start_cluster(RUN_DIR)
    try:
        assert cluster.dsn == f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        assert scalar(cluster.dsn, "SHOW fsync") == "off"
        with psycopg.connect(cluster.dsn) as conn:
            conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        cluster.restart()
        assert scalar(cluster.dsn, "SELECT answer FROM kept") == 42
    finally:
        cluster.stop()
    assert not cluster.data_dir.exists()
    assert not postgres_answers(cluster.dsn)


def test_database_url_that_answers_is_used_as_is(
    pg_service: PostgresService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_service.dsn)
    service = ensure_postgres(RUN_DIR)
    service.stop()
    assert (service.kind, service.dsn) == ("external", pg_service.dsn)
    assert postgres_answers(pg_service.dsn)


def test_database_url_that_does_not_answer_falls_back_to_a_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
    service = ensure_postgres(RUN_DIR)
    try:
        assert service.kind == "cluster"
        assert scalar(service.dsn, "SELECT 1") == 1
    finally:
        service.stop()


def test_without_any_postgres_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{RUN_DIR}/no-docker.sock")
    monkeypatch.setattr(devservices, "PG_BIN_GLOBS", ())
    monkeypatch.setattr(devservices, "embedded_available", lambda: False)  # nor the wheel
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        ensure_postgres(RUN_DIR)


def test_azurite_queue_round_trip(azurite: str, queue_names: QueueNames) -> None:
    queue = QueueClient.from_connection_string(azurite, queue_names.jobs)
    queue.create_queue()
    queue.send_message("hello")
    received = list(queue.receive_messages(max_messages=32, visibility_timeout=5))
    assert [m.content for m in received] == ["hello"]
    queue.delete_message(received[0])
    assert queue.get_queue_properties().approximate_message_count == 0


def test_azurite_restart_keeps_its_messages(private_azurite: AzuriteService) -> None:
    queue = QueueClient.from_connection_string(private_azurite.connection_string, "kept")
    queue.create_queue()
    queue.send_message("survives")
    private_azurite.restart()
    assert [m.content for m in queue.receive_messages()] == ["survives"]


def test_azurite_from_environment_is_used_as_is(
    azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    service = ensure_azurite(RUN_DIR)
    service.stop()
    assert (service.connection_string, service.location) == (azurite, None)
    assert devservices.http_answers(queue_endpoint(azurite))


def test_queue_endpoint_of_connection_strings() -> None:
    assert queue_endpoint("UseDevelopmentStorage=true") == "http://127.0.0.1:10001/devstoreaccount1"
    account = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=k==;EndpointSuffix=x.net"
    assert queue_endpoint(account) == "https://acct.queue.x.net"


def test_database_url_is_a_private_copy_of_the_migrated_template(
    database_url: str, template_database: str
) -> None:
    name = scalar(database_url, "SELECT current_database()")
    assert isinstance(name, str) and name.startswith("test_")
    assert name != template_database
    assert scalar(database_url, "SELECT to_regnamespace('lightsout') IS NOT NULL") is True


def test_empty_database_url_has_no_lightsout_schema(empty_database_url: str) -> None:
    assert scalar(empty_database_url, "SELECT to_regnamespace('lightsout') IS NULL") is True


def test_queue_names_are_unique_and_valid_for_azure(queue_names: QueueNames) -> None:
    names = [queue_names.jobs, queue_names.tasks, queue_names.jobs_poison, queue_names.tasks_poison]
    assert all(QUEUE_NAME.match(name) for name in names)
    assert queue_names.jobs_poison == f"{queue_names.jobs}-poison"
    assert QueueNames.unique() != queue_names


def test_settings_env_is_in_the_environment(settings_env: dict[str, str]) -> None:
    assert {key: os.environ[key] for key in settings_env} == settings_env
    assert settings_env["LIGHTSOUT_SCHEMA"] == "lightsout"
    assert scalar(settings_env["DATABASE_URL"], "SELECT 1") == 1
