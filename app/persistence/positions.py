"""Where an already-recorded event sits in the log.

An idempotent replay answers with the position of the original write; the library
does not expose that lookup, so each backend's recorder is asked in its own terms.
"""

from typing import cast
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier


def recorded_position(recorder: ApplicationRecorder, originator_id: UUID, version: int) -> int:
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _sqlite_position(recorder, originator_id, version)
    if isinstance(recorder, PostgresApplicationRecorder):
        return _postgres_position(recorder, originator_id, version)
    if isinstance(recorder, POPOApplicationRecorder):
        with recorder._database_lock:  # the in-memory store has no query API
            index = recorder._stored_events_index[str(originator_id)]
            return index[version] + 1
    lookup = getattr(recorder, "recorded_position", None)
    if lookup is None:
        raise NotImplementedError(f"no position lookup for {type(recorder).__name__}")
    return cast(int, lookup(originator_id, version))


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
    statement = SQL(
        "SELECT notification_id FROM {schema}.{table} "
        "WHERE originator_id = %s AND originator_version = %s"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
    )
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement, (originator_id, version))
        row = cursor.fetchone()
    if row is None:
        raise LookupError(f"no event {originator_id} v{version}")
    return int(row["notification_id"])
