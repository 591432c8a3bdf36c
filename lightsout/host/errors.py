"""Errors the local host raises before it serves anything."""


class HostConfigError(Exception):
    """The app, its settings or host.json cannot be served as they are."""
