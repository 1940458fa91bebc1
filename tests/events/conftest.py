"""Event tests reuse the API fixtures: a real app on SQLite files, workers in-process."""

from tests.api.conftest import app, client, keys, services, settings

__all__ = ["app", "client", "keys", "services", "settings"]
