"""The host's storage by identity, read from local.settings.json, against Azurite with OAuth."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from azstorage import IdentityConnection, ensure_queue, queue_client
from lightsout.devidentity import OAuthAzurite, TokenEndpoint
from lightsout.host import Host, HostConfigError
from tests.host.conftest import SampleApp, wait_for

CLIENT_ID = "5ca1ab1e-0000-4000-8000-00000000c11d"


@pytest.fixture
def identity_app(
    sample_app: SampleApp,
    oauth_azurite: OAuthAzurite,
    token_endpoint: TokenEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> IdentityConnection:
    """The sample app with a user-assigned identity and no connection string anywhere."""
    # What App Service puts in the environment; the app's own settings are in the file.
    trust = {"REQUESTS_CA_BUNDLE": str(oauth_azurite.cert)}
    for key, value in {**token_endpoint.environ(), **trust}.items():
        monkeypatch.setenv(key, value)
    sample_app.write_settings(
        {
            "SAMPLE_WORK_QUEUE": sample_app.work_queue,
            "SAMPLE_ASYNC_QUEUE": sample_app.async_queue,
            "SAMPLE_INBOX_QUEUE": sample_app.inbox_queue,
            "SAMPLE_RECORD_DIR": str(sample_app.records),
            "AzureWebJobsStorage__queueServiceUri": oauth_azurite.queue_service_uri,
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": CLIENT_ID,
        }
    )
    return IdentityConnection(oauth_azurite.queue_service_uri, True, CLIENT_ID)


def test_queue_functions_run_with_a_token_from_the_identity(
    identity_app: IdentityConnection,
    sample_app: SampleApp,
    start_host: Callable[..., Host],
    token_endpoint: TokenEndpoint,
) -> None:
    start_host()
    client = queue_client(identity_app, sample_app.work_queue)
    ensure_queue(client)
    body = json.dumps({"id": "mi", "action": "ok"}).encode()
    client.send_message(base64.b64encode(body).decode())
    ends = wait_for(lambda: [r for r in sample_app.read("work") if r["event"] == "end"])
    assert [r["id"] for r in ends] == ["mi"]
    # Two tokens: this test's client's, and the host's, fetched at start-up and shared by
    # the listeners of every queue.
    assert [(r["resource"], r.get("client_id")) for r in token_endpoint.requests] == 2 * [
        ("https://storage.azure.com", CLIENT_ID)
    ]


def test_start_fails_naming_the_credential_that_gets_no_token(
    identity_app: IdentityConnection, sample_app: SampleApp, token_endpoint: TokenEndpoint
) -> None:
    token_endpoint.refusing = True
    expected = (
        f"AzureWebJobsStorage: ManagedIdentityCredential (user-assigned, client id {CLIENT_ID})"
        " could not get a token for"
    )
    with pytest.raises(HostConfigError) as caught:
        Host(sample_app.dir, port=0).start()
    assert expected in str(caught.value)
    assert "this identity is not assigned here" in str(caught.value)
