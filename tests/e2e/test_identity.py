"""A job through a host whose storage has no key: managed-identity tokens, checked by Azurite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightsout.devidentity import OAuthAzurite, TokenEndpoint
from tests.e2e.hosts import HostProcess, finished
from tests.fixtures_services import SCHEMA, TEST_API_KEYS, QueueNames

pytestmark = pytest.mark.e2e
CLIENT_ID = "5ca1ab1e-0000-4000-8000-0000000e2e1d"


def identity_env(
    database_url: str, queues: QueueNames, azurite: OAuthAzurite, endpoint: TokenEndpoint
) -> dict[str, str]:
    """The app settings of Flex Consumption with a user-assigned identity; no key anywhere."""
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("AZUREWEBJOBS")}
    return {
        **inherited,
        **endpoint.environ(),
        "REQUESTS_CA_BUNDLE": str(azurite.cert),
        "DATABASE_URL": database_url,
        "LIGHTSOUT_SCHEMA": SCHEMA,
        "LIGHTSOUT_JOBS_QUEUE": queues.jobs,
        "LIGHTSOUT_TASKS_QUEUE": queues.tasks,
        "AzureWebJobsStorage__queueServiceUri": azurite.queue_service_uri,
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": CLIENT_ID,
        "LIGHTSOUT_API_KEYS": TEST_API_KEYS,
        "LIGHTSOUT_SELFTEST_JOB_TYPES": "true",
    }


def test_a_job_completes_with_storage_by_managed_identity(
    database_url: str,
    queue_names: QueueNames,
    oauth_azurite: OAuthAzurite,
    token_endpoint: TokenEndpoint,
    tmp_path: Path,
) -> None:
    env = identity_env(database_url, queue_names, oauth_azurite, token_endpoint)
    assert not any("AccountKey" in value for value in env.values())
    host = HostProcess("identity", env, tmp_path)
    try:
        host.wait_ready()
        answer = host.api.submit("hello_world", {"n": 5})
        job = finished(host.api, answer["job_id"])
        assert job["status"] == "completed", job["error"]
        assert job["result"] == {"greetings": 5, "replies": 5, "summary": "5 hellos, 5 replies"}
    finally:
        assert host.terminate() == 0, host.log
    assert {(r["resource"], r.get("client_id")) for r in token_endpoint.requests} == {
        ("https://storage.azure.com", CLIENT_ID)
    }


def test_a_host_whose_identity_gets_no_token_does_not_start(
    database_url: str,
    queue_names: QueueNames,
    oauth_azurite: OAuthAzurite,
    token_endpoint: TokenEndpoint,
    tmp_path: Path,
) -> None:
    token_endpoint.refusing = True
    env = identity_env(database_url, queue_names, oauth_azurite, token_endpoint)
    host = HostProcess("no-token", env, tmp_path)
    assert host.proc.wait(timeout=60) == 1, host.log
    assert (
        f"ManagedIdentityCredential (user-assigned, client id {CLIENT_ID}) could not get a token"
        in host.log
    )
