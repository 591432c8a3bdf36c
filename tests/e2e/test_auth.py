"""Authentication on a real host: 401 without a credential, 403 past a scope, the actor recorded.

The credential checks themselves (every bad token, the JWKS refresh) are in
tests/unit/test_credentials.py; here each kind of credential goes through the host once.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest

from schemas.records import Json
from tests.e2e.conftest import StartHosts
from tests.e2e.hosts import REPO_ROOT, HostProcess, finished, rows, wait_for
from tests.fixtures_services import TEST_KEY
from tests.jwt_keys import (
    AUDIENCE,
    ISSUER,
    SECRET,
    JwksServer,
    SigningKey,
    hs256_token,
    jwks_server,
)

READER, SUBMITTER, OPS = ("reader-" + "r" * 24, "submitter-" + "s" * 24, "ops-" + "o" * 24)
KEYS = {
    "tests": {"key": TEST_KEY, "scopes": ["jobs:read", "jobs:submit", "jobs:admin"]},
    "reader": {"key": READER, "scopes": ["jobs:read"]},
    "submitter": {"key": SUBMITTER, "scopes": ["jobs:read", "jobs:submit"]},
    "ops": {"key": OPS, "scopes": ["jobs:read", "jobs:admin"]},
}
UNKNOWN = "ab" * 32
PROTECTED = [
    ("POST", "jobs/hello_world"),
    ("GET", f"jobs/{UNKNOWN}"),
    ("GET", "jobs"),
    ("GET", f"jobs/{UNKNOWN}/tasks"),
    ("POST", f"jobs/{UNKNOWN}/cancel"),
    ("POST", f"jobs/{UNKNOWN}/retry"),
    ("GET", "poison"),
    ("POST", "poison/1/replay"),
    ("GET", "job-types"),
]


def call(
    host: HostProcess,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: Json | None = None,
) -> tuple[int, Mapping[str, str], Json]:
    """Send a request with exactly these headers (no test key); return status, headers, body."""
    if body is None and method == "POST":
        body = {}
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(f"{host.url}/api/{path}", data, sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def key(value: str) -> dict[str, str]:
    return {"x-functions-key": value}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with jwks_server() as server:
        yield server


@pytest.fixture
def host(start_hosts: StartHosts, jwks: JwksServer) -> HostProcess:
    settings = {
        "LIGHTSOUT_API_KEYS": json.dumps(KEYS),
        "LIGHTSOUT_JWT_SECRET": SECRET,
        "LIGHTSOUT_JWT_JWKS_URL": jwks.url,
        "LIGHTSOUT_JWT_ISSUER": ISSUER,
        "LIGHTSOUT_JWT_AUDIENCE": AUDIENCE,
        # Trusted, yet the local host strips the header a client sends: no Easy Auth in front.
        "LIGHTSOUT_TRUST_EASY_AUTH": "true",
    }
    (started,) = start_hosts(extra_env=settings)
    return started


def test_every_route_but_health_needs_a_credential(host: HostProcess) -> None:
    answers = [(m, p, *call(host, m, p)) for m, p in PROTECTED]

    assert [(m, p, status) for m, p, status, _, _ in answers] == [(m, p, 401) for m, p in PROTECTED]
    for _, _, _, headers, body in answers:
        assert "Bearer" in headers["WWW-Authenticate"]
        assert body["error"] == "unauthorized" and "x-functions-key" in body["message"]
        assert body["fields"] == []
    assert call(host, "GET", "health")[0] == 200
    assert call(host, "GET", "openapi.json")[2]["openapi"] == "3.1.0"


def test_keys_are_checked_and_accepted_as_header_or_code_parameter(host: HostProcess) -> None:
    wrong = call(host, "GET", "jobs", key(READER[:-1] + "x"))

    assert (wrong[0], wrong[2]["message"]) == (401, "the API key is not valid")
    assert call(host, "GET", "jobs", key(READER))[0] == 200
    assert call(host, "GET", f"jobs?code={READER}")[0] == 200
    assert call(host, "GET", "jobs?code=nope")[0] == 401


def test_each_scope_boundary_is_a_403_naming_the_scope(host: HostProcess) -> None:
    params = {"n": 2, "name": "scopes"}

    reader_submits = call(host, "POST", "jobs/hello_world", key(READER), params)
    submitted = call(host, "POST", "jobs/hello_world", key(SUBMITTER), params)
    job_id = submitted[2]["job_id"]
    submitter_cancels = call(host, "POST", f"jobs/{job_id}/cancel", key(SUBMITTER))
    submitter_forces = call(host, "POST", "jobs/hello_world?force=true", key(SUBMITTER), params)
    submitter_replays = call(host, "POST", "poison/1/replay", key(SUBMITTER))
    ops_submits = call(host, "POST", "jobs/hello_world", key(OPS), params)

    assert submitted[0] == 202
    for status, _, body in (
        reader_submits,
        submitter_cancels,
        submitter_forces,
        submitter_replays,
        ops_submits,
    ):
        assert (status, body["error"]) == (403, "forbidden")
    assert "jobs:submit" in reader_submits[2]["message"]
    assert "jobs:submit" in ops_submits[2]["message"]
    assert "jobs:admin" in submitter_cancels[2]["message"]
    assert "force=true" in submitter_forces[2]["message"]
    assert "jobs:admin" in submitter_replays[2]["message"]
    assert call(host, "GET", f"jobs/{job_id}", key(READER))[0] == 200


def test_bearer_tokens_through_the_secret_and_the_jwks(host: HostProcess, jwks: JwksServer) -> None:
    rsa = SigningKey("rsa-1")
    jwks.publish(rsa)

    assert call(host, "GET", "jobs", bearer(hs256_token(scp="jobs:read")))[0] == 200
    assert call(host, "GET", "jobs", bearer(rsa.token(roles=["jobs:read"])))[0] == 200
    assert call(host, "GET", "jobs", bearer(rsa.token(scp="jobs:submit")))[0] == 403
    assert call(host, "GET", "jobs", bearer(rsa.token(aud="api://other")))[0] == 401
    assert call(host, "GET", "jobs", bearer(SigningKey("rsa-1").token()))[0] == 401


def test_a_client_sent_easy_auth_header_is_stripped_by_the_local_host(host: HostProcess) -> None:
    claims = [{"typ": "roles", "val": "jobs:admin"}, {"typ": "name", "val": "mallory"}]
    forged = base64.b64encode(json.dumps({"claims": claims}).encode()).decode()

    status, _, body = call(host, "GET", "jobs", {"X-MS-CLIENT-PRINCIPAL": forged})

    assert status == 401 and "no credential" in body["message"]


def test_actors_are_the_authenticated_identity_and_tracebacks_are_for_admins(
    host: HostProcess, database_url: str
) -> None:
    params = {"tasks": 2, "stages": 1, "fail_task_indices": [0]}
    on_behalf = {**key(SUBMITTER), "X-Lightsout-Actor": "alice"}
    answer = call(host, "POST", "jobs/noop_fanout", on_behalf, params)[2]
    job_id = answer["job_id"]
    finished(host.api, job_id)
    operator = bearer(hs256_token(sub="operator-9", roles=["jobs:admin"]))
    retried = call(host, "POST", f"jobs/{job_id}/retry", operator)

    assert retried[0] == 202, retried
    actors = {
        r["actor"]
        for r in rows(database_url, "SELECT actor FROM job_events WHERE job_id = %s", job_id)
    }
    assert {"api-key:submitter (for alice)", "jwt:operator-9"} <= actors
    assert not any(a in ("alice", "api") for a in actors)
    finished(host.api, job_id)

    def failed_task(credential: str) -> Json | None:
        tasks = call(host, "GET", f"jobs/{job_id}/tasks?status=failed", key(credential))[2]
        return tasks["tasks"][0] if tasks["tasks"] else None

    assert (
        wait_for(lambda: failed_task(READER), 30, "the failed task")["error"]["traceback"] is None
    )
    assert "InjectedFailure" in wait_for(lambda: failed_task(OPS), 30, "it")["error"]["traceback"]


def test_with_nothing_configured_every_route_answers_401_and_the_log_says_how_to_fix_it(
    start_hosts: StartHosts,
) -> None:
    (host,) = start_hosts(extra_env={"LIGHTSOUT_API_KEYS": "{}"})

    assert [call(host, m, p)[0] for m, p in PROTECTED] == [401] * len(PROTECTED)
    health = call(host, "GET", "health")
    assert health[0] == 200 and health[2]["auth"] == "on"
    assert host.log.count("no credentials are configured") == 1
    assert "python -m lightsout keys new" in host.log


def test_auth_off_is_open_and_says_so_at_start_and_on_health(start_hosts: StartHosts) -> None:
    (host,) = start_hosts(extra_env={"LIGHTSOUT_AUTH": "off"})

    status, _, body = call(host, "GET", "health")

    assert (status, body["auth"]) == (200, "off")
    assert "LIGHTSOUT_AUTH=off" in body["warnings"][0]
    assert call(host, "GET", "jobs")[0] == 200
    assert "LIGHTSOUT_AUTH=off" in host.log


def test_a_short_key_stops_the_host_naming_it(settings_env: dict[str, str]) -> None:
    short = json.dumps({"laptop": {"key": "short-secret", "scopes": ["jobs:read"]}})
    env = {**settings_env, "LIGHTSOUT_API_KEYS": short, "PATH": "/usr/bin:/bin"}

    done = subprocess.run(
        [sys.executable, "-m", "lightsout", "host", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert "'laptop'" in done.stderr and "24" in done.stderr
    assert "short-secret" not in done.stderr + done.stdout
