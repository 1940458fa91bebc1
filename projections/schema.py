"""The views' tables, and the SQL plumbing both backends share.

One view database holds the views that one projection keeps together:
- ``balances``: current balances per account and the position they reflect;
- ``account_metadata`` / ``transfer_metadata``: one row per metadata pair, so that a
  ``metadata.KEY=VALUE`` filter is an index lookup rather than a scan; an account's
  pair rows also carry its whole metadata (JSONB on PostgreSQL), so that a
  search by several pairs checks the others on the row it walks;
  ``account_metadata_counts``: how many accounts have each pair, so that a search by
  several pairs is driven by the rarest;
- ``entries``: one statement line per balance-changing event, carrying the counters
  *after* the event — this is also the balance history: an as-of query is one index
  lookup (``ORDER BY position DESC LIMIT 1``), O(log n) whatever the history length;
  as of a time, at the position where that time cuts the log (``commits``);
- ``transfers``: the transfers index, for lookup, listing and expiry;
- ``metadata_changes``: each account's metadata as it stood after its opening and
  after each update, so that a past read shows the metadata of then;
- ``commits`` and ``commit_keys``: where each commit (one store write) starts and ends,
  and the latest time of any event up to its end (``latest_at``, rising with the log):
  "as of T" is the end of the last whole commit whose ``latest_at`` is at or before T
  (decision 0036);
- ``view_schema``: the version of these tables (``SCHEMA_VERSION``, which also names the
  views' place); a view database found built by another version is rebuilt from the log
  when opened (``projections.backends``);
- ``lots`` and ``lot_changes``: credit lots (``projections/lots.py``);
- the library's tracking table: the checkpoint.

The SQL is shared by both backends; ``?`` placeholders are rewritten for psycopg.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from app.persistence.bulk_rows import insert_row_sql
from projections.lots import LOT_INDEXES, LOT_SCHEMA, LOT_TABLES

APPLICATION_NAME: Final = "ledger"
# The version of the tables below. Bump it with any change to them or to what the
# projection writes into them: the views' place is named by it (``projections.runner.
# view_schema``), so a newer version builds its own from the log beside an older one's
# (views are disposable; the log is the truth; decision 0036). Version 2: metadata
# history (``metadata_changes``); databases from before versions count as version 1.
# Version 3: how many accounts have each metadata pair (``account_metadata_counts``).
# Version 4: each account's type (``balances.account_type``). Version 5: each pair row
# of ``account_metadata`` carries its account's whole metadata. Version 6: each commit's
# ``latest_at`` and ``whole``, where the reads by time cut the log (decision 0036);
# without ``entries_by_time`` and ``metadata_changes_by_time``.
SCHEMA_VERSION: Final = 6
# The type of a JSON column that a query filters on (``{json}`` in the statements).
JSON_COLUMN_TYPE: Final = {"sqlite": "TEXT", "postgres": "JSONB"}

TABLES: Final = (
    "balances",
    "account_metadata",
    "entries",
    "transfers",
    "transfer_metadata",
    "commits",
    "commit_keys",
    "metadata_changes",
    "account_metadata_counts",
    "view_schema",
    *LOT_TABLES,
)
INDEXES: Final = (
    "balances_by_unit",
    "balances_by_status",
    "account_metadata_by_pair",
    "transfers_held_by_debit",
    "transfers_held_by_credit",
    "transfers_by_position",
    "transfers_by_status",
    "transfers_by_time",
    "transfers_due",
    "transfer_metadata_by_pair",
    "commits_by_time",
    *LOT_INDEXES,
)
# Indexes these tables no longer have: dropped where an older version made them. Not a
# change of ``SCHEMA_VERSION``: the tables and their rows are as they were, and every
# version's reads answer the same with or without them (decision 0033).
# ``transfers_by_debit`` and ``transfers_by_credit``: an account's transfers are found
# through its ``entries`` (``RowReader.transfers``).
DROPPED_INDEXES: Final = ("transfers_by_debit", "transfers_by_credit")

SCHEMA: Final = [
    """CREATE TABLE IF NOT EXISTS {balances} (
        account_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL UNIQUE,
        unit TEXT NOT NULL,
        status TEXT NOT NULL,
        allow_negative BOOLEAN NOT NULL,
        overdraft_limit BIGINT NOT NULL,
        account_type TEXT NOT NULL,
        metadata TEXT NOT NULL,
        debits_posted BIGINT NOT NULL,
        credits_posted BIGINT NOT NULL,
        debits_pending BIGINT NOT NULL,
        credits_pending BIGINT NOT NULL,
        opened_position BIGINT NOT NULL,
        opened_at TEXT NOT NULL,
        closed_position BIGINT,
        closed_at TEXT,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS {balances_by_unit_index} ON {balances} (unit, account_id)",
    "CREATE INDEX IF NOT EXISTS {balances_by_status_index} ON {balances} (status, account_id)",
    """CREATE TABLE IF NOT EXISTS {account_metadata} (
        account_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        metadata {json} NOT NULL,
        PRIMARY KEY (account_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS {account_metadata_by_pair_index} "
    "ON {account_metadata} (key, value, account_id)",
    """CREATE TABLE IF NOT EXISTS {entries} (
        account_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        transfer_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        debits_posted_delta BIGINT NOT NULL,
        credits_posted_delta BIGINT NOT NULL,
        debits_pending_delta BIGINT NOT NULL,
        credits_pending_delta BIGINT NOT NULL,
        debits_posted BIGINT NOT NULL,
        credits_posted BIGINT NOT NULL,
        debits_pending BIGINT NOT NULL,
        credits_pending BIGINT NOT NULL,
        recorded_at TEXT NOT NULL,
        allocations TEXT,
        PRIMARY KEY (account_id, position)
    )""",
    """CREATE TABLE IF NOT EXISTS {transfers} (
        transfer_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL UNIQUE,
        debit_account_id TEXT NOT NULL,
        credit_account_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        unit TEXT NOT NULL,
        pending BOOLEAN NOT NULL,
        timeout_seconds BIGINT,
        expires_at TEXT,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        amount_posted BIGINT NOT NULL,
        reversal_of TEXT,
        reversed_by TEXT,
        recorded_at TEXT NOT NULL,
        position BIGINT NOT NULL,
        updated_position BIGINT NOT NULL,
        grant_terms TEXT,
        allocations TEXT
    )""",
    # An account's transfers of a status but ``posted`` (holds, and what became of them):
    # partial, so a transfer posted at once (most of them) never enters them, and a
    # hold leaves them when posted (decision 0033 addendum).
    "CREATE INDEX IF NOT EXISTS {transfers_held_by_debit_index} "
    "ON {transfers} (debit_account_id, position) WHERE status <> 'posted'",
    "CREATE INDEX IF NOT EXISTS {transfers_held_by_credit_index} "
    "ON {transfers} (credit_account_id, position) WHERE status <> 'posted'",
    "CREATE INDEX IF NOT EXISTS {transfers_by_position_index} ON {transfers} (position)",
    "CREATE INDEX IF NOT EXISTS {transfers_by_status_index} ON {transfers} (status, position)",
    "CREATE INDEX IF NOT EXISTS {transfers_by_time_index} ON {transfers} (recorded_at, position)",
    "CREATE INDEX IF NOT EXISTS {transfers_due_index} ON {transfers} (status, expires_at)",
    """CREATE TABLE IF NOT EXISTS {transfer_metadata} (
        transfer_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (transfer_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS {transfer_metadata_by_pair_index} "
    "ON {transfer_metadata} (key, value, transfer_id)",
    # ``latest_at``: the latest time of any event up to the commit's end (a running
    # maximum, so it rises with the log and its index is appended to); ``whole``: false
    # while the views hold only the commit's first part (a batch boundary cut it).
    """CREATE TABLE IF NOT EXISTS {commits} (
        start_position BIGINT PRIMARY KEY,
        end_position BIGINT NOT NULL,
        recorded_at TEXT NOT NULL,
        latest_at TEXT NOT NULL,
        whole BOOLEAN NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS {commits_by_time_index} ON {commits} (latest_at, start_position)",
    # The writer's commit id of each commit that has one (app.domain.commits): lets a
    # restarted worker continue a commit a batch boundary cut in two.
    """CREATE TABLE IF NOT EXISTS {commit_keys} (
        start_position BIGINT PRIMARY KEY,
        commit_id TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {metadata_changes} (
        account_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        recorded_at TEXT NOT NULL,
        metadata TEXT NOT NULL,
        PRIMARY KEY (account_id, position)
    )""",
    """CREATE TABLE IF NOT EXISTS {account_metadata_counts} (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        accounts BIGINT NOT NULL,
        PRIMARY KEY (key, value)
    )""",
    """CREATE TABLE IF NOT EXISTS {view_schema} (
        id INTEGER PRIMARY KEY,
        version INTEGER NOT NULL
    )""",
    *LOT_SCHEMA,
]


def table_names(prefix: str = "") -> dict[str, str]:
    names = {name: f"{prefix}{name}" for name in TABLES}
    for index in INDEXES:
        names[f"{index}_index"] = f"{prefix}{index}_idx"
    # Named apart from ``_index``: a backend that qualifies table names by their schema
    # qualifies these too (PostgreSQL's DROP INDEX finds an index by its schema).
    for index in DROPPED_INDEXES:
        names[f"{index}_dropped"] = f"{prefix}{index}_idx"
    return names


def timestamp_text(moment: datetime) -> str:
    """Fixed-width UTC text: sorts as time does, on both backends."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is the fast path (once per projected event); the same text as the
    # format "%Y-%m-%dT%H:%M:%S.%fZ" for every year from 1000 on.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """The instant ``timestamp_text`` wrote (UTC). ``fromisoformat`` reads it about a
    hundred times faster than ``strptime``: every row a read returns has one or two."""
    return datetime.fromisoformat(text)


R = TypeVar("R")


class Cursor(Protocol):
    def execute(self, statement: Any, params: Any = ..., /) -> Any: ...
    def executemany(self, statement: Any, params_seq: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


class SqlAccess:
    """What the projection and the reader need from a backend: transactions and SQL
    text in its dialect. Each backend (``projections.backends``) provides both."""

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _sql(self, statement: str) -> Any:
        raise NotImplementedError

    def _run(self, cursor: Cursor, statement: str, params: Sequence[Any] = ()) -> None:
        cursor.execute(self._sql(statement), tuple(params))

    def _run_many(self, cursor: Cursor, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            cursor.executemany(self._sql(statement), [tuple(row) for row in rows])

    def _insert_many(
        self,
        cursor: Cursor,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: str = "",
    ) -> None:
        """Insert ``rows`` (values in ``columns``' order) into ``table``, ``conflict``
        (an ``ON CONFLICT`` clause) after them: one statement per row here; a backend
        that can sends them as one (``PostgresLedgerView``)."""
        self._run_many(cursor, insert_row_sql(f"{{{table}}}", columns, conflict), rows)

    def _update_many(
        self,
        cursor: Cursor,
        table: str,
        columns: Sequence[str],
        key: str,
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Set ``columns`` of the row of ``table`` whose ``key`` is each row's last value
        to its values before it (one row each, keys distinct): one statement per row
        here; a backend that can sends them as one (``PostgresLedgerView``)."""
        self._run_many(
            cursor,
            # Our table's and columns' names only.
            f"UPDATE {{{table}}} SET {', '.join(f'{c} = ?' for c in columns)} "  # noqa: S608
            f"WHERE {key} = ?",
            rows,
        )

    def _reading(self) -> AbstractContextManager[Cursor]:
        """Where a read of one statement runs: a transaction rolled back after it, unless
        the backend has a cheaper way (one statement is its own snapshot)."""
        return self._transaction(commit=False)

    def _read(self, read: Callable[[Cursor], R]) -> R:
        """``read`` run on a cursor of ``_reading``. A backend whose connections a server
        can drop tries a dropped one once more (a read runs twice harmlessly)."""
        with self._reading() as cursor:
            return read(cursor)

    def _one(self, statement: str, params: Sequence[Any] = ()) -> Any:
        def one(cursor: Cursor) -> Any:
            self._run(cursor, statement, params)
            return cursor.fetchone()

        return self._read(one)

    def _all(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        def every(cursor: Cursor) -> list[Any]:
            self._run(cursor, statement, params)
            return list(cursor.fetchall())

        return self._read(every)
