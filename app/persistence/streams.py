"""Many streams read at once: each one's newest snapshot and the events after it, in two
queries for a whole group (the library reads stream by stream, two queries each).

The writer uses it to load the accounts a group needs that are not in its cache, e.g.
after a restart or for a batch over many accounts. Backends without a bulk query
answer None and the caller reads stream by stream.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TypeVar
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder, StoredEvent
from eventsourcing.popo import POPOAggregateRecorder
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

from app.persistence.postgres import (
    LedgerPostgresApplicationRecorder,
    postgres_after_query,
    read_with,
)

R = TypeVar("R")

STREAMS_PER_QUERY_MAX: Final = 400


@dataclass
class StoredStream:
    snapshot: StoredEvent | None = None
    events: list[StoredEvent] = field(default_factory=list)


def read_streams(
    events: ApplicationRecorder, snapshots: AggregateRecorder | None, ids: list[UUID]
) -> dict[UUID, StoredStream] | None:
    """The stored snapshot (if any) and later events of each stream that exists."""
    if isinstance(events, SQLiteApplicationRecorder) and (
        snapshots is None or isinstance(snapshots, SQLiteAggregateRecorder)
    ):
        reader = _sqlite
    elif isinstance(events, PostgresApplicationRecorder) and (
        snapshots is None or isinstance(snapshots, PostgresAggregateRecorder)
    ):
        reader = _postgres
    else:
        return None
    found: dict[UUID, StoredStream] = {}
    for start in range(0, len(ids), STREAMS_PER_QUERY_MAX):
        found.update(reader(events, snapshots, ids[start : start + STREAMS_PER_QUERY_MAX]))
    return found


def writes_streams_together(recorder: AggregateRecorder) -> bool:
    """Whether this recorder writes the events of several streams in one call (one
    transaction): the SQL and in-memory ones. KurrentDB's snapshot recorder takes one
    snapshot per call."""
    return isinstance(
        recorder, SQLiteAggregateRecorder | PostgresAggregateRecorder | POPOAggregateRecorder
    )


def commits_per_group(recorder: AggregateRecorder) -> bool:
    """Whether each write to this recorder costs about the same however few commands
    share it, so that a writer alone should wait for its answered callers before its
    next group (decision 0014, eleventh addendum and its PostgreSQL addendum). SQLite:
    the insert, the commit's WAL frames and its sync run on the writing thread.
    PostgreSQL: the round trip, the write function's lock, notification and commit
    (with its flush) on the server, and the writer's own planning and hand-off."""
    return isinstance(recorder, SQLiteAggregateRecorder | PostgresAggregateRecorder)


def catches_up(events: ApplicationRecorder) -> bool:
    """Whether ``events_after`` has a bulk query for this backend (else it answers None)."""
    return isinstance(events, SQLiteApplicationRecorder | PostgresApplicationRecorder)


def events_after(
    events: ApplicationRecorder, after: dict[UUID, int]
) -> dict[UUID, list[StoredEvent]] | None:
    """The events of each stream after the given version (streams with none are left
    out), in one query per chunk; None where the backend has no bulk query. The writer
    uses it to catch its cached streams up with what other processes wrote."""
    if isinstance(events, SQLiteApplicationRecorder):
        reader = _sqlite_after
    elif isinstance(events, PostgresApplicationRecorder):
        reader = _postgres_after
    else:
        return None
    found: dict[UUID, list[StoredEvent]] = defaultdict(list)
    if isinstance(events, LedgerPostgresApplicationRecorder):
        # Under the write lock, what its round trip already read (decision 0018).
        ahead, after = events.read_ahead(after)
        for originator_id, stored in _postgres_after_rows(ahead):
            found[originator_id].append(stored)
    items = list(after.items())
    for start in range(0, len(items), STREAMS_PER_QUERY_MAX):
        chunk = dict(items[start : start + STREAMS_PER_QUERY_MAX])
        rows = _read(events, partial(reader, events=events, after=chunk))
        for originator_id, stored in rows:
            found[originator_id].append(stored)
    return dict(found)


def _read(events: Any, read: Callable[[Any], R]) -> R:
    """``read`` run on a read cursor: one round trip per statement on PostgreSQL, a
    dropped connection tried once more (``read_with``)."""
    if isinstance(events, PostgresApplicationRecorder):
        return read_with(events, read)
    with events.datastore.transaction(commit=False) as cursor:
        return read(cursor)


def _stored(row: Any, originator_id: UUID) -> StoredEvent:
    return StoredEvent(originator_id, int(row[1]), str(row[2]), bytes(row[3]))


def _sqlite(events: Any, snapshots: Any, ids: list[UUID]) -> dict[UUID, StoredStream]:
    streams: dict[UUID, StoredStream] = defaultdict(StoredStream)
    hexes = [originator_id.hex for originator_id in ids]
    marks = ",".join("?" * len(ids))
    with events.datastore.transaction(commit=False) as cursor:
        if snapshots is not None:
            # SQLite takes the other columns of a MAX() aggregate from the row holding it.
            cursor.execute(
                "SELECT originator_id, MAX(originator_version), topic, state "  # noqa: S608
                f"FROM {snapshots.events_table_name} WHERE originator_id IN ({marks}) "
                "GROUP BY originator_id",
                hexes,
            )
            for row in cursor.fetchall():
                originator_id = UUID(row[0])
                streams[originator_id].snapshot = _stored(row, originator_id)
        after = {o: -1 if streams.get(o) is None else _version(streams[o]) for o in ids}
        for originator_id, stored in _sqlite_after(cursor, events, after):
            streams[originator_id].events.append(stored)
    return dict(streams)


def _sqlite_after(
    cursor: Any, events: Any, after: dict[UUID, int]
) -> list[tuple[UUID, StoredEvent]]:
    values = ",".join("(?,?)" for _ in after)
    cursor.execute(
        f"WITH wanted(id, after) AS (VALUES {values}) "  # noqa: S608
        "SELECT e.originator_id, e.originator_version, e.topic, e.state "
        f"FROM wanted JOIN {events.events_table_name} e "
        "ON e.originator_id = wanted.id AND e.originator_version > wanted.after "
        "ORDER BY e.originator_id, e.originator_version",
        [item for o, version in after.items() for item in (o.hex, version)],
    )
    return [(UUID(row[0]), _stored(row, UUID(row[0]))) for row in cursor.fetchall()]


def _postgres(events: Any, snapshots: Any, ids: list[UUID]) -> dict[UUID, StoredStream]:
    return read_with(events, lambda cursor: _postgres_streams(cursor, events, snapshots, ids))


def _postgres_streams(
    cursor: Any, events: Any, snapshots: Any, ids: list[UUID]
) -> dict[UUID, StoredStream]:
    streams: dict[UUID, StoredStream] = defaultdict(StoredStream)
    schema = Identifier(events.datastore.schema)
    if snapshots is not None:
        cursor.execute(
            SQL(
                "SELECT DISTINCT ON (originator_id) originator_id, originator_version, "
                "topic, state FROM {schema}.{table} WHERE originator_id = ANY(%s) "
                "ORDER BY originator_id, originator_version DESC"
            ).format(schema=schema, table=Identifier(snapshots.events_table_name)),
            (ids,),
        )
        for row in cursor.fetchall():
            values = _row(row)
            streams[values[0]].snapshot = _stored(values, values[0])
    after = {o: -1 if streams.get(o) is None else _version(streams[o]) for o in ids}
    for originator_id, stored in _postgres_after(cursor, events, after):
        streams[originator_id].events.append(stored)
    return dict(streams)


def _postgres_after(
    cursor: Any, events: Any, after: dict[UUID, int]
) -> list[tuple[UUID, StoredEvent]]:
    cursor.execute(postgres_after_query(events), (list(after), list(after.values())))
    return _postgres_after_rows(cursor.fetchall())


def _postgres_after_rows(rows: list[Any]) -> list[tuple[UUID, StoredEvent]]:
    found = []
    for row in rows:
        values = _row(row)
        found.append((values[0], _stored(values, values[0])))
    return found


def _row(row: Any) -> tuple[UUID, int, str, bytes]:
    """A PostgreSQL row (a dict: the library's connections use dict rows) as a tuple."""
    return (
        UUID(str(row["originator_id"])),
        int(row["originator_version"]),
        str(row["topic"]),
        bytes(row["state"]),
    )


def _version(stream: StoredStream) -> int:
    return -1 if stream.snapshot is None else stream.snapshot.originator_version
