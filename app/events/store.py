"""The feed's tables and queries: public events in feed order, with what the projector
needs to derive them (accounts' balances, per-transfer effects) and the balance monitors.

Feed order is ``sequence``: one counter, advanced only inside the writer's transaction
(the ``head`` row is locked by every writer), so sequences commit in order and a reader
that asks for ``sequence > cursor`` never skips a late commit. ``position`` is the log
position an event reflects: non-decreasing along the sequence, with gaps.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from app.events.database import Cursor, Database, PartSchema, SchemaStep

FEED_PAGE_LIMIT_MAX: Final = 1000

STATEMENTS: Final = [
    """CREATE TABLE IF NOT EXISTS ledger_feed_head (
        id INTEGER PRIMARY KEY,
        checkpoint BIGINT NOT NULL,
        sequence BIGINT NOT NULL
    )""",
    "INSERT INTO ledger_feed_head VALUES (1, 0, 0) ON CONFLICT DO NOTHING",
    # ``event_id`` is not an index: no read looks an event up by it, and a unique index
    # of random ids was most of the feed's cost per event as it grew (version 2).
    # Nothing is stored twice all the same: each batch's events are written with the
    # checkpoint they reach, in one transaction, from the checkpoint they were read at.
    """CREATE TABLE IF NOT EXISTS ledger_feed_events (
        sequence BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        position BIGINT NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_feed_events_by_type ON ledger_feed_events (type, sequence)",
    "CREATE INDEX IF NOT EXISTS ledger_feed_events_by_position "
    "ON ledger_feed_events (position, sequence)",
    """CREATE TABLE IF NOT EXISTS ledger_feed_event_accounts (
        account_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        PRIMARY KEY (account_id, sequence)
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_feed_accounts (
        stream_id TEXT PRIMARY KEY,
        body TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_feed_effects (
        transfer_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (transfer_id, account_id)
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_monitors (
        monitor_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        field TEXT NOT NULL,
        operator TEXT NOT NULL,
        threshold BIGINT NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        since_position BIGINT NOT NULL,
        holds INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_monitors_by_account ON ledger_monitors (account_id)",
]

# Version 2: ``ledger_feed_events.event_id`` no longer unique. SQLite cannot drop a
# column's constraint: the table is copied into one without it, in sequence order (its
# indexes then made again by ``STATEMENTS``).
WITHOUT_EVENT_ID_INDEX: Final = SchemaStep(
    version=2,
    sqlite=[
        """CREATE TABLE ledger_feed_events_v2 (
            sequence BIGINT PRIMARY KEY,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            position BIGINT NOT NULL,
            body TEXT NOT NULL
        )""",
        "INSERT INTO ledger_feed_events_v2 (sequence, event_id, type, position, body) "
        "SELECT sequence, event_id, type, position, body FROM ledger_feed_events "
        "ORDER BY sequence",
        "DROP TABLE ledger_feed_events",
        "ALTER TABLE ledger_feed_events_v2 RENAME TO ledger_feed_events",
    ],
    postgres=[
        "ALTER TABLE ledger_feed_events DROP CONSTRAINT IF EXISTS ledger_feed_events_event_id_key"
    ],
)

SCHEMA: Final = PartSchema(
    name="feed",
    statements=STATEMENTS,
    first_table="ledger_feed_head",
    steps=[WITHOUT_EVENT_ID_INDEX],
)


@dataclass(frozen=True)
class FeedRow:
    sequence: int
    event_type: str
    position: int
    body: str
    event_id: str

    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded


@dataclass(frozen=True)
class Head:
    checkpoint: int
    sequence: int


class FeedStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        database.create(SCHEMA)

    def head(self) -> Head:
        with self.database.transaction() as cursor:
            return read_head(cursor)

    def page(
        self,
        after: int,
        limit: int,
        types: Sequence[str] = (),
        account_id: str | None = None,
    ) -> list[FeedRow]:
        """Events after sequence ``after``, in feed order, filtered."""
        assert 0 < limit <= FEED_PAGE_LIMIT_MAX
        params: list[Any] = []
        if account_id is not None:
            statement = (
                "SELECT e.sequence, e.type, e.position, e.body, e.event_id "
                "FROM ledger_feed_event_accounts a "
                "JOIN ledger_feed_events e ON e.sequence = a.sequence "
                "WHERE a.account_id = ? AND a.sequence > ?"
            )
            params += [account_id, after]
        else:
            statement = (
                "SELECT e.sequence, e.type, e.position, e.body, e.event_id "
                "FROM ledger_feed_events e "
                "WHERE e.sequence > ?"
            )
            params.append(after)
        if types:
            statement += f" AND e.type IN ({','.join('?' * len(types))})"
            params += list(types)
        statement += " ORDER BY e.sequence LIMIT ?"
        params.append(limit)
        with self.database.transaction() as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        return [FeedRow(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]

    def last_sequence_at_or_before(self, position: int) -> int:
        """The feed cursor just before the first event past ``position``."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT MAX(sequence) FROM ledger_feed_events WHERE position <= ?", (position,)
            )
            row = cursor.fetchone()
        return 0 if row is None or row[0] is None else int(row[0])


def read_head(cursor: Cursor) -> Head:
    cursor.execute("SELECT checkpoint, sequence FROM ledger_feed_head WHERE id = 1")
    row = cursor.fetchone()
    return Head(int(row[0]), int(row[1]))


def lock_head(cursor: Cursor, is_postgres: bool) -> Head:
    """Read the head and hold it until commit: the one lock all feed writers take
    (PostgreSQL's row lock; on SQLite, BEGIN IMMEDIATE already serialises writers)."""
    if is_postgres:
        cursor.execute("SELECT checkpoint, sequence FROM ledger_feed_head WHERE id = 1 FOR UPDATE")
        row = cursor.fetchone()
        return Head(int(row[0]), int(row[1]))
    return read_head(cursor)


def event_body(event: dict[str, Any]) -> str:
    """A public event's stored text, exactly as ``json.dumps(event, separators=(",", ":"))``
    has always written it (webhooks sign these bytes, the stream sends them): made by
    orjson, about ten times cheaper, whenever orjson's text is the same.

    For the values a public event holds (text, integers, booleans, null; no floats by
    its schema) the two differ only where the standard library escapes a character that
    orjson writes as it is (anything beyond ASCII, and DEL), or where orjson refuses a
    value (an integer beyond 64 bits): those events take the standard library's path."""
    try:
        encoded = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return json.dumps(event, separators=(",", ":"))
    if encoded.isascii() and b"\x7f" not in encoded:
        return encoded.decode("ascii")
    return json.dumps(event, separators=(",", ":"))


def append_events(
    cursor: Cursor,
    head: Head,
    events: Sequence[tuple[dict[str, Any], Sequence[str]]],
    checkpoint: int | None = None,
) -> Head:
    """Append events (each with the accounts it concerns) after ``head``; move the head."""
    sequence = head.sequence
    rows = []
    account_rows = []
    for event, account_ids in events:
        sequence += 1
        rows.append(
            (
                sequence,
                event["id"],
                event["type"],
                event["position"],
                event_body(event),
            )
        )
        account_rows += [(account_id, sequence) for account_id in dict.fromkeys(account_ids)]
    # One statement per table (a call per row cost the projector more than its JSON).
    cursor.insert_many(
        "ledger_feed_events", ("sequence", "event_id", "type", "position", "body"), rows
    )
    cursor.insert_many("ledger_feed_event_accounts", ("account_id", "sequence"), account_rows)
    new_head = Head(head.checkpoint if checkpoint is None else checkpoint, sequence)
    cursor.execute(
        "UPDATE ledger_feed_head SET checkpoint = ?, sequence = ? WHERE id = 1",
        (new_head.checkpoint, new_head.sequence),
    )
    return new_head
