"""The one place that reaches into libraries' non-public parts. Each seam has a test in
tests/unit/test_compat.py that fails loudly when an upgrade moves it."""

from typing import Any

from eventsourcing.postgres import PostgresDatastore


def postgres_connection_kwargs(datastore: PostgresDatastore) -> dict[str, Any]:
    """The keyword arguments the library's pool passes to every new connection
    (psycopg_pool's ``ConnectionPool.kwargs``), to add libpq options the library does
    not expose. Effective for connections opened after the change: the library opens its
    pool lazily, on first use."""
    kwargs = datastore.pool.kwargs
    assert isinstance(kwargs, dict), "psycopg_pool keeps connection kwargs as a dict"
    return kwargs
