"""Fixtures and hooks shared by every test; the service fixtures are in fixtures_services."""

import os

# Before any app module is imported: the self-test job types register at import.
os.environ["LIGHTSOUT_SELFTEST_JOB_TYPES"] = "true"

pytest_plugins = ["tests.fixtures_services"]
