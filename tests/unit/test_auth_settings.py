"""Authentication and limit settings: secure defaults, start-up errors naming the setting."""

from __future__ import annotations

import json

import pytest

from schemas.exceptions import ConfigurationError
from schemas.settings import env_flag, load_settings
from triggers.runtime import auth_notice

GOOD = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
AUTH_SETTINGS = [
    "LIGHTSOUT_AUTH",
    "LIGHTSOUT_API_KEYS",
    "LIGHTSOUT_JWT_ISSUER",
    "LIGHTSOUT_JWT_AUDIENCE",
    "LIGHTSOUT_JWT_JWKS_URL",
    "LIGHTSOUT_JWT_SECRET",
    "LIGHTSOUT_TRUST_EASY_AUTH",
    "LIGHTSOUT_MAX_TASKS_PER_STAGE",
    "LIGHTSOUT_MAX_RESULT_BYTES",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in AUTH_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_by_default_authentication_is_on_with_nothing_that_passes(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert (settings.auth, settings.credentials_configured) == ("on", False)
    assert (settings.max_tasks_per_stage, settings.max_result_bytes) == (100_000, 256 * 1024)
    notice = auth_notice(settings)
    assert notice is not None and "python -m lightsout keys new" in notice


def test_auth_off_is_warned_and_a_configured_key_is_quiet(env: pytest.MonkeyPatch) -> None:
    env.setenv("LIGHTSOUT_AUTH", "off")
    assert "LIGHTSOUT_AUTH=off" in (auth_notice(load_settings()) or "")

    env.setenv("LIGHTSOUT_AUTH", "on")
    entry = {"ci": {"key": "k" * 24, "scopes": ["jobs:read"]}}
    env.setenv("LIGHTSOUT_API_KEYS", json.dumps(entry))
    assert auth_notice(load_settings()) is None


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("LIGHTSOUT_AUTH", "maybe", "LIGHTSOUT_AUTH"),
        ("LIGHTSOUT_API_KEYS", "not json", "api_keys"),
        ("LIGHTSOUT_API_KEYS", '{"ci": {"key": "' + "k" * 30 + '", "scopes": []}}', "scopes"),
        (
            "LIGHTSOUT_API_KEYS",
            '{"ci": {"key": "' + "k" * 30 + '", "scopes": ["all"]}}',
            "jobs:read",
        ),
        ("LIGHTSOUT_JWT_SECRET", "s" * 40, "LIGHTSOUT_JWT_ISSUER"),
        ("LIGHTSOUT_JWT_JWKS_URL", "https://login.example/keys", "LIGHTSOUT_JWT_AUDIENCE"),
        ("LIGHTSOUT_MAX_TASKS_PER_STAGE", "0", "LIGHTSOUT_MAX_TASKS_PER_STAGE"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_it(
    env: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    env.setenv(name, value)

    with pytest.raises(ConfigurationError, match=named):
        load_settings()


def test_a_short_jwt_secret_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("LIGHTSOUT_JWT_SECRET", "short")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "LIGHTSOUT_JWT_SECRET" in str(caught.value) and "short" not in str(caught.value)


def test_flags_read_at_import_parse_like_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in [("true", True), ("1", True), ("off", False), ("", False)]:
        monkeypatch.setenv("LIGHTSOUT_TEST_FLAG", raw)
        assert env_flag("LIGHTSOUT_TEST_FLAG") is expected
    monkeypatch.setenv("LIGHTSOUT_TEST_FLAG", "perhaps")
    with pytest.raises(ConfigurationError, match="LIGHTSOUT_TEST_FLAG"):
        env_flag("LIGHTSOUT_TEST_FLAG")
