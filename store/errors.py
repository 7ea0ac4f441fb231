"""Errors the storage layer raises for conditions callers are expected to handle."""


class StoreUnavailable(Exception):
    """The database cannot be reached (or is locked for too long); try again later."""


class BusUnavailable(Exception):
    """The message bus (Redis) cannot be reached; try again later."""


class ArtifactCorrupt(Exception):
    """A model artifact is missing, truncated or does not match its recorded checksum."""
