"""The one error of azstorage: its callers translate it into their own."""


class StorageConfigError(ValueError):
    """A storage connection setting or host.json cannot be used as it is."""
