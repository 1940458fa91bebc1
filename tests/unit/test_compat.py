"""One test per seam of app/compat.py: each fails loudly if a library upgrade moves it."""

from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from app.compat import ExecutemanySQLiteRecorder, postgres_connection_kwargs


def test_the_postgres_pool_exposes_the_kwargs_of_its_future_connections() -> None:
    datastore = PostgresDatastore(dbname="ledger", host="127.0.0.1", port=1, user="u", password="p")
    kwargs = postgres_connection_kwargs(datastore)
    assert kwargs["dbname"] == "ledger"
    kwargs["connect_timeout"] = 3
    assert postgres_connection_kwargs(datastore)["connect_timeout"] == 3


def test_the_sqlite_recorder_inserts_through_its_hook_and_numbers_rows_by_rowid(
    tmp_path: Path,
) -> None:
    """``insert_events`` must call ``_insert_events`` in its transaction and hand back
    its ids as the notification ids; ours must be the rows' rowids."""
    datastore = SQLiteDatastore(str(tmp_path / "events.sqlite"))
    recorder = ExecutemanySQLiteRecorder(datastore)
    recorder.create_table()
    calls: list[int] = []
    original = recorder._insert_events  # the seam under test

    def counting(cursor: Any, stored_events: Any, **kwargs: Any) -> Any:
        calls.append(len(stored_events))
        return original(cursor, stored_events, **kwargs)

    recorder._insert_events = counting  # type: ignore[method-assign,assignment]
    for size in (3, 1, 4):
        stream = uuid4()
        events = [StoredEvent(stream, version, "topic", b"{}") for version in range(size)]
        ids = recorder.insert_events(events)
        assert ids is not None
        assert len(ids) == size
        rows = recorder.select_notifications(start=ids[0], limit=size)
        assert [row.id for row in rows] == list(ids)
        assert [(row.originator_id, row.originator_version) for row in rows] == [
            (stream, version) for version in range(size)
        ]
    assert calls == [3, 1, 4]
    assert recorder.max_notification_id() == 8
