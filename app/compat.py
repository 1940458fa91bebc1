"""The one place that reaches into libraries' non-public parts. Each seam has a test in
tests/unit/test_compat.py that fails loudly when an upgrade moves it."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor


def postgres_connection_kwargs(datastore: PostgresDatastore) -> dict[str, Any]:
    """The keyword arguments the library's pool passes to every new connection
    (psycopg_pool's ``ConnectionPool.kwargs``), to add libpq options the library does
    not expose. Effective for connections opened after the change: the library opens its
    pool lazily, on first use."""
    kwargs = datastore.pool.kwargs
    assert isinstance(kwargs, dict), "psycopg_pool keeps connection kwargs as a dict"
    return kwargs


class ExecutemanySQLiteRecorder(SQLiteApplicationRecorder):
    """The library's SQLite application recorder, inserting a write's rows with one
    ``executemany`` instead of one ``execute`` per event (its ``_insert_events`` hook,
    called by ``insert_events`` inside the write transaction).

    The notification ids it must return are the rows' rowids: inside the one write
    transaction SQLite numbers new rows one above the largest rowid, in insertion order,
    so they are the ``len(rows)`` ids ending at ``last_insert_rowid()``."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        rows = [
            (
                event.originator_id.hex
                if isinstance(event.originator_id, UUID)
                else event.originator_id,
                event.originator_version,
                event.topic,
                event.state,
            )
            for event in stored_events
        ]
        c.executemany(self.insert_events_statement, rows)
        c.execute("SELECT last_insert_rowid()")
        last = int(c.fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))
