"""Storage settings as the Functions host reads them: each combination, its client or its error."""

from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from azstorage import (
    ConnectionString,
    IdentityConnection,
    StorageConfigError,
    queue_client,
    read_connection,
)
from lightsout.devservices import azurite_connection_string
from repositories.queues import QueueRepository
from schemas.exceptions import ConfigurationError
from schemas.settings import load_settings

NAME = "AzureWebJobsStorage"
ACCOUNT_URI = "https://acct.queue.core.windows.net"


def test_connection_string() -> None:
    connection = read_connection(NAME, {NAME: azurite_connection_string(10001)})
    assert isinstance(connection, ConnectionString)
    client = queue_client(connection, "q")
    assert client.url == "http://127.0.0.1:10001/devstoreaccount1/q"
    assert client.account_name == "devstoreaccount1"


def test_a_connection_string_wins_over_identity_settings() -> None:
    settings = {NAME: "UseDevelopmentStorage=true", f"{NAME}__accountName": "acct"}
    assert read_connection(NAME, settings) == ConnectionString("UseDevelopmentStorage=true")


def test_account_name_means_its_queue_endpoint_and_default_credential() -> None:
    connection = read_connection(NAME, {NAME: "", f"{NAME}__accountName": "acct"})
    assert connection == IdentityConnection(ACCOUNT_URI)
    assert isinstance(connection, IdentityConnection)
    assert isinstance(connection.credential, DefaultAzureCredential)
    client = queue_client(connection, "q")
    assert client.url == f"{ACCOUNT_URI}/q"
    assert client.credential is connection.credential


def test_account_name_comes_before_the_service_uri_as_in_the_functions_host() -> None:
    settings = {f"{NAME}__accountName": "acct", f"{NAME}__queueServiceUri": "https://other/"}
    assert read_connection(NAME, settings) == IdentityConnection(ACCOUNT_URI)


def test_service_uri() -> None:
    uri = "https://127.0.0.1:10001/devstoreaccount1"
    connection = read_connection(NAME, {f"{NAME}__queueServiceUri": f"{uri}/"})
    assert connection == IdentityConnection(uri)
    assert queue_client(connection, "q").url == f"{uri}/q"


def test_user_assigned_managed_identity() -> None:
    settings = {
        f"{NAME}__accountName": "acct",
        f"{NAME}__credential": "managedidentity",
        f"{NAME}__clientId": "1234-client",
    }
    connection = read_connection(NAME, settings)
    assert connection == IdentityConnection(ACCOUNT_URI, True, "1234-client")
    assert isinstance(connection, IdentityConnection)
    assert isinstance(connection.credential, ManagedIdentityCredential)
    assert connection.credential is connection.credential  # one per connection, shared
    assert "user-assigned, client id 1234-client" in connection.describe()


def test_system_assigned_managed_identity() -> None:
    settings = {f"{NAME}__accountName": "acct", f"{NAME}__credential": "ManagedIdentity"}
    connection = read_connection(NAME, settings)
    assert connection == IdentityConnection(ACCOUNT_URI, True)
    assert connection.describe() == "ManagedIdentityCredential (system-assigned)"


def test_names_are_case_insensitive_and_colons_work_like_double_underscores() -> None:
    settings = {"AZUREWEBJOBSSTORAGE:ACCOUNTNAME": "acct", "azurewebjobsstorage__clientid": "c"}
    assert read_connection(NAME, settings) == IdentityConnection(ACCOUNT_URI, client_id="c")


def test_a_binding_connection_may_leave_out_the_azurewebjobs_prefix() -> None:
    settings = {"AzureWebJobsOther__accountName": "acct"}
    assert read_connection("Other", settings) == IdentityConnection(
        ACCOUNT_URI, setting="AzureWebJobsOther"
    )


@pytest.mark.parametrize(
    ("settings", "naming"),
    [
        ({}, "set AzureWebJobsStorage to a connection string, or AzureWebJobsStorage__accountName"),
        ({NAME: ""}, "AzureWebJobsStorage__queueServiceUri"),
        (
            {f"{NAME}__clientId": "c", f"{NAME}__credential": "managedidentity"},
            "AzureWebJobsStorage__clientid, AzureWebJobsStorage__credential given, but neither",
        ),
        ({f"{NAME}__blobServiceUri": "https://a.blob.core.windows.net"}, "neither"),
        ({f"{NAME}__accountName": "a", f"{NAME}__credential": "key"}, "__credential must be"),
        ({f"{NAME}__queueServiceUri": "http://127.0.0.1:10001/x"}, "must be an https:// URL"),
    ],
)
def test_what_is_missing_or_wrong_is_named(settings: dict[str, str], naming: str) -> None:
    with pytest.raises(StorageConfigError) as caught:
        read_connection(NAME, settings)
    assert naming in str(caught.value)


def test_an_unusable_connection_string_is_named() -> None:
    with pytest.raises(StorageConfigError, match="AzureWebJobsStorage is not a valid"):
        queue_client(ConnectionString("AccountName=x"), "q")


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ("AzureWebJobsStorage", "AZUREWEBJOBSSTORAGE"):
        monkeypatch.delenv(key, raising=False)
    for suffix in ("accountName", "queueServiceUri", "credential", "clientId"):
        monkeypatch.delenv(f"{NAME}__{suffix}", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({NAME: "UseDevelopmentStorage=true"}, ConnectionString("UseDevelopmentStorage=true")),
        ({f"{NAME}__accountName": "acct"}, IdentityConnection(ACCOUNT_URI)),
        ({f"{NAME}__queueServiceUri": ACCOUNT_URI}, IdentityConnection(ACCOUNT_URI)),
        (
            {
                f"{NAME}__queueServiceUri": ACCOUNT_URI,
                f"{NAME}__credential": "managedidentity",
                f"{NAME}__clientId": "c1",
            },
            IdentityConnection(ACCOUNT_URI, True, "c1"),
        ),
    ],
)
def test_the_engine_reads_the_same_settings(
    storage_env: pytest.MonkeyPatch, env: dict[str, str], expected: object
) -> None:
    for key, value in env.items():
        storage_env.setenv(key, value)
    settings = load_settings()
    assert read_connection(NAME, settings.storage_settings) == expected
    with QueueRepository.from_settings(settings) as repo:
        assert repo.queues[0] == "lightsout-jobs"


def test_the_engine_names_missing_storage(storage_env: pytest.MonkeyPatch) -> None:
    storage_env.setenv(f"{NAME}__credential", "managedidentity")
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage__accountName"):
        load_settings()


def test_the_engine_names_a_wrong_credential(storage_env: pytest.MonkeyPatch) -> None:
    storage_env.setenv(f"{NAME}__accountName", "acct")
    storage_env.setenv(f"{NAME}__credential", "secret")
    settings = load_settings()
    with pytest.raises(ConfigurationError, match="__credential must be managedidentity"):
        QueueRepository.from_settings(settings)
