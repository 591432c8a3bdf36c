"""Fixtures and hooks shared by every test; the service fixtures are in fixtures_services."""

pytest_plugins = ["tests.fixtures_services"]
