"""Where an already-recorded event sits in the log.

An idempotent replay answers with the position of the original write; the library
does not expose that lookup, so each backend's recorder is asked in its own terms.
"""

from functools import partial
from typing import Any, Final, cast
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Composed, Identifier

from app.compat import popo_position
from app.persistence.postgres import read_with

EXISTENCE_CHUNK_SIZE: Final = 500


def recorded_position(recorder: ApplicationRecorder, originator_id: UUID, version: int) -> int:
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _sqlite_position(recorder, originator_id, version)
    if isinstance(recorder, PostgresApplicationRecorder):
        return _postgres_position(recorder, originator_id, version)
    if isinstance(recorder, POPOApplicationRecorder):
        return popo_position(recorder, str(originator_id), version)
    lookup = getattr(recorder, "recorded_position", None)
    if lookup is None:
        raise NotImplementedError(f"no position lookup for {type(recorder).__name__}")
    return cast(int, lookup(originator_id, version))


def existing_streams(recorder: ApplicationRecorder, originator_ids: list[UUID]) -> set[UUID] | None:
    """Which of these streams exist, in one query per chunk (None: this backend cannot
    say cheaply, ask stream by stream). Batches use it to skip one read per new id."""
    found: set[UUID] = set()
    for start in range(0, len(originator_ids), EXISTENCE_CHUNK_SIZE):
        chunk = originator_ids[start : start + EXISTENCE_CHUNK_SIZE]
        if isinstance(recorder, SQLiteApplicationRecorder):
            marks = ",".join("?" * len(chunk))
            statement = (
                f"SELECT originator_id FROM {recorder.events_table_name} "  # noqa: S608
                f"WHERE originator_version = 0 AND originator_id IN ({marks})"
            )
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, [originator_id.hex for originator_id in chunk])
                found.update(UUID(row[0]) for row in cursor.fetchall())
        elif isinstance(recorder, PostgresApplicationRecorder):
            query = _on_events(
                recorder,
                "SELECT originator_id FROM {schema}.{table} "
                "WHERE originator_version = 0 AND originator_id = ANY(%s)",
            )
            rows = read_with(recorder, partial(_all, statement=query, params=(chunk,)))
            found.update(UUID(str(row["originator_id"])) for row in rows)
        else:
            return None
    return found


def _sqlite_position(recorder: SQLiteApplicationRecorder, originator_id: UUID, version: int) -> int:
    statement = (
        f"SELECT rowid FROM {recorder.events_table_name} "  # noqa: S608  # our own table name
        "WHERE originator_id = ? AND originator_version = ?"
    )
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement, (originator_id.hex, version))
        row = cursor.fetchone()
    if row is None:
        raise LookupError(f"no event {originator_id} v{version}")
    return int(row[0])


def _postgres_position(
    recorder: PostgresApplicationRecorder, originator_id: UUID, version: int
) -> int:
    statement = _on_events(
        recorder,
        "SELECT notification_id FROM {schema}.{table} "
        "WHERE originator_id = %s AND originator_version = %s",
    )
    rows = read_with(recorder, lambda cursor: _all(cursor, statement, (originator_id, version)))
    if not rows:
        raise LookupError(f"no event {originator_id} v{version}")
    return int(rows[0]["notification_id"])


def stream_heads(recorder: ApplicationRecorder, originator_ids: list[UUID]) -> dict[UUID, int]:
    """Each existing stream's last version (absent streams are left out), in one query
    per chunk on SQL backends and one read per stream elsewhere. The writer asks this
    only after a conflict or before a rejection is final."""
    heads: dict[UUID, int] = {}
    for start in range(0, len(originator_ids), EXISTENCE_CHUNK_SIZE):
        chunk = originator_ids[start : start + EXISTENCE_CHUNK_SIZE]
        if isinstance(recorder, SQLiteApplicationRecorder):
            marks = ",".join("?" * len(chunk))
            statement = (
                "SELECT originator_id, MAX(originator_version) "  # noqa: S608  # our table
                f"FROM {recorder.events_table_name} "
                f"WHERE originator_id IN ({marks}) GROUP BY originator_id"
            )
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, [originator_id.hex for originator_id in chunk])
                heads.update((UUID(row[0]), int(row[1])) for row in cursor.fetchall())
        elif isinstance(recorder, PostgresApplicationRecorder):
            query = _on_events(
                recorder,
                "SELECT originator_id, MAX(originator_version) AS head FROM {schema}.{table} "
                "WHERE originator_id = ANY(%s) GROUP BY originator_id",
            )
            rows = read_with(recorder, partial(_all, statement=query, params=(chunk,)))
            heads.update((UUID(str(row["originator_id"])), int(row["head"])) for row in rows)
        else:
            for originator_id in chunk:
                last = recorder.select_events(originator_id, desc=True, limit=1)
                if last:
                    heads[originator_id] = last[0].originator_version
    return heads


def log_states(recorder: ApplicationRecorder, after: int, limit: int) -> list[tuple[int, bytes]]:
    """The stored states of the log's next ``limit`` events after position ``after``,
    with their positions: all a scan for the cut by time reads of each event
    (``app.audit.log.read_stamps``). On SQL backends two columns, read as tuples (a
    notification also parses its stream's id, the larger part of reading one);
    elsewhere taken from the notifications."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        statement = (
            f"SELECT rowid, state FROM {recorder.events_table_name} "  # noqa: S608  # our table
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            rows = cursor.sqlite_cursor
            rows.row_factory = None  # tuples (the connection's factory makes Row objects)
            rows.execute(statement, (after, limit))
            return rows.fetchall()
    if isinstance(recorder, PostgresApplicationRecorder):
        query = _on_events(
            recorder,
            "SELECT notification_id, state FROM {schema}.{table} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
        )
        found = read_with(recorder, partial(_all, statement=query, params=(after, limit)))
        return [(int(row["notification_id"]), bytes(row["state"])) for row in found]
    notifications = recorder.select_notifications(
        start=after, limit=limit, inclusive_of_start=False
    )
    return [(notification.id, notification.state) for notification in notifications]


def _on_events(recorder: PostgresApplicationRecorder, statement: str) -> Composed:
    """``statement`` with ``{schema}.{table}`` naming the recorder's events table."""
    return SQL(statement).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
    )


def _all(cursor: Any, statement: Any, params: tuple[Any, ...]) -> list[Any]:
    cursor.execute(statement, params)
    return list(cursor.fetchall())
