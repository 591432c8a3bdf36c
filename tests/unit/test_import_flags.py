"""What the app fixes at import: self-test job types, the janitor's run on startup, SDK logging."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, function_app
from controllers.registry import registry
(janitor,) = [f for f in function_app.app.get_functions() if f.get_function_name() == "janitor"]
print(json.dumps({
    "noop_fanout": "noop_fanout" in registry,
    "run_on_startup": janitor.get_trigger().run_on_startup,
}))
"""


def imported_with(**settings: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTSOUT_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env={**env, **settings},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_by_default_no_self_test_job_type_and_no_janitor_run_on_startup() -> None:
    assert imported_with() == '{"noop_fanout": false, "run_on_startup": false}'


@pytest.mark.parametrize("value", ["true", "1"])
def test_both_are_turned_on_by_their_settings(value: str) -> None:
    answer = imported_with(
        LIGHTSOUT_SELFTEST_JOB_TYPES=value, LIGHTSOUT_JANITOR_RUN_ON_STARTUP=value
    )
    assert answer == '{"noop_fanout": true, "run_on_startup": true}'


def test_the_sdk_http_logging_policy_is_quiet_in_the_app_itself() -> None:
    import triggers.runtime  # noqa: F401  (the import sets the level)

    policy = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert policy.level == logging.WARNING
