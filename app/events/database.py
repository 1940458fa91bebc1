"""The events database: the feed, balance monitors and webhook deliveries, beside the
read model (a ``<views>.events.sqlite`` file next to the SQLite views, or tables prefixed
``ledger_feed_``/``ledger_webhook_`` in the PostgreSQL read-model database).

It is not part of the disposable view generations: the feed's order, the monitors'
states and the delivery checkpoints must survive a rebuild of the views.
SQL is written once with ``?`` placeholders and rewritten for psycopg.
"""

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import structlog
from psycopg_pool import ConnectionPool

from app.persistence.bulk_rows import (
    CatalogTypes,
    column_arrays,
    insert_row_sql,
    insert_rows_sql,
)
from app.persistence.schema_lock import creating_schema
from app.persistence.stores import STORE_TIMEOUT_SECONDS
from app.persistence.tcp_liveness import tcp_liveness
from app.settings import ConfigurationError

log = structlog.get_logger(__name__)

SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30
POSTGRES_POOL_SIZE_MAX: Final = 8
POSTGRES_POOL_TIMEOUT_SECONDS: Final = 10.0
CREATE_ATTEMPTS_MAX: Final = 5
# Pages the feed's WAL holds before a commit copies them back (SQLite's default: 1,000):
# the projector's batches rewrite the same tail pages of the feed's indexes, and a
# longer WAL copies each back once per checkpoint (about 40 MB at 4 kB pages).
FEED_WAL_AUTOCHECKPOINT_PAGES: Final = 10_000
# Each part's version of its tables (decision 0037), written by the transaction that
# creates or upgrades them.
SCHEMA_VERSIONS: Final = """CREATE TABLE IF NOT EXISTS ledger_events_schema (
    part TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""


class Cursor(Protocol):
    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str = ""
    ) -> None:
        """Insert ``rows`` (values in ``columns``' order), ``conflict`` (an ``ON
        CONFLICT`` clause) after them: one statement per row on SQLite, one for all
        of them on PostgreSQL (``app.persistence.bulk_rows``)."""


def insert_each(
    cursor: Cursor,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: str = "",
) -> None:
    """``Cursor.insert_many`` as one statement per row (``executemany``)."""
    if rows:
        cursor.executemany(insert_row_sql(table, columns, conflict), rows)


class _SQLiteCursor(sqlite3.Cursor):
    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str = ""
    ) -> None:
        insert_each(self, table, columns, rows, conflict)


class _Rewriting:
    """A psycopg cursor that takes ``?`` placeholders."""

    def __init__(self, cursor: Any, types: CatalogTypes) -> None:
        self._cursor = cursor
        self._types = types

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str = ""
    ) -> None:
        if rows:
            types = self._types.of(self._cursor.connection, table)
            self._cursor.execute(
                insert_rows_sql(table, columns, types, conflict), column_arrays(rows)
            )

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(statement.replace("?", "%s"), params)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(statement.replace("?", "%s"), rows)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> Any:
        return self._cursor.fetchall()


@dataclass(frozen=True)
class SchemaStep:
    """What takes a part's tables from ``version - 1`` to ``version``, on each backend:
    run once, in the transaction that opens a database an older version made, before
    the part's statements of today (which then make what the step dropped: indexes of
    a rebuilt table). A step is history: it never changes once released."""

    version: int
    sqlite: Sequence[str]
    postgres: Sequence[str]


@dataclass(frozen=True)
class PartSchema:
    """A part of the events database: its tables as this version makes them
    (``CREATE … IF NOT EXISTS``), and the steps from each older version to this one."""

    name: str
    statements: Sequence[str]
    # A table every version of the part made: found without a version recorded, the
    # database was made by version 1, before versions were recorded.
    first_table: str
    steps: Sequence[SchemaStep] = ()

    @property
    def version(self) -> int:
        return self.steps[-1].version if self.steps else 1


class SchemaTooNewError(ConfigurationError):
    """The events database was upgraded by a newer version of the ledger than this one:
    a setting's database this process cannot use, said as one line by every command."""


def events_database_url(read_model_url: str) -> str:
    """Where the events database lives, given the read model's URL."""
    if urlsplit(read_model_url).scheme in ("postgresql", "postgres"):
        return read_model_url
    path = sqlite_path(read_model_url)
    return f"sqlite:///{path.with_name(f'{path.stem}.events{path.suffix}')}"


def sqlite_path(url: str) -> Path:
    if url.startswith("sqlite:////"):
        return Path("/" + url.removeprefix("sqlite:////"))
    return Path(url.removeprefix("sqlite:///"))


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_postgres = urlsplit(url).scheme in ("postgresql", "postgres")
        self._local = threading.local()
        self._pool: ConnectionPool[Any] | None = None
        self._types = CatalogTypes()
        if self.is_postgres:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=POSTGRES_POOL_SIZE_MAX,
                timeout=POSTGRES_POOL_TIMEOUT_SECONDS,
                # A connection is pinged before it is handed out, and replaced when a
                # server restart cut it: the feed's and the deliveries' writes are few
                # and batched, so a round trip each is cheap, and the first requests
                # after a restart succeed instead of each failing once per connection.
                check=ConnectionPool.check_connection,
                kwargs=tcp_liveness(STORE_TIMEOUT_SECONDS, url),
                open=True,
            )
        else:
            sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def _sqlite(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                sqlite_path(self.url),
                timeout=SQLITE_BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute("PRAGMA journal_mode=WAL")
            # A power loss or OS crash may lose the commits since the last checkpoint
            # (up to FEED_WAL_AUTOCHECKPOINT_PAGES of WAL): their deliveries are sent
            # again (at-least-once), and the feed is re-derived from the log.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA wal_autocheckpoint={FEED_WAL_AUTOCHECKPOINT_PAGES}")
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Cursor]:
        """One transaction; a write transaction takes the write lock at its start, so
        that writers (projector, delivery workers, API) commit one after another."""
        if self._pool is not None:
            with self._pool.connection() as connection, connection.transaction():
                yield _Rewriting(connection.cursor(), self._types)
            return
        connection = self._sqlite()
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield connection.cursor(_SQLiteCursor)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def create(self, schema: PartSchema) -> int | None:
        """Make ``schema``'s tables, or upgrade them to its version, in one transaction
        taken by one process at a time; the version it found (None: a new database)."""
        if self._pool is not None:
            # One creator at a time on PostgreSQL (decision 0032).
            with self._pool.connection() as connection, creating_schema(connection):
                return settle_schema(_Rewriting(connection.cursor(), self._types), schema, True)
        for attempt in range(CREATE_ATTEMPTS_MAX):
            try:
                # The write lock from the start (BEGIN IMMEDIATE): the next process
                # reads the version this one wrote.
                with self.transaction(write=True) as cursor:
                    return settle_schema(cursor, schema, False)
            except sqlite3.OperationalError as error:
                # Another process creating at once held the file's write lock for
                # longer than the busy timeout.
                if attempt == CREATE_ATTEMPTS_MAX - 1 or "locked" not in str(error):
                    raise
        raise AssertionError("unreachable: the last attempt raises")


def settle_schema(cursor: Cursor, schema: PartSchema, is_postgres: bool) -> int | None:
    """``Database.create`` inside its transaction: the version found, each step after
    it, today's statements, the version now."""
    cursor.execute(SCHEMA_VERSIONS)
    cursor.execute("SELECT version FROM ledger_events_schema WHERE part = ?", (schema.name,))
    row = cursor.fetchone()
    found = int(row[0]) if row is not None else None
    if found is None and table_exists(cursor, schema.first_table, is_postgres):
        found = 1
    if found is not None and found > schema.version:
        raise SchemaTooNewError(
            f"the events database's {schema.name} tables are version {found}, made by a "
            f"newer ledger; this one knows up to version {schema.version}"
        )
    steps = [step for step in schema.steps if found is not None and step.version > found]
    for step in steps:
        for statement in step.postgres if is_postgres else step.sqlite:
            cursor.execute(statement)
    for statement in schema.statements:
        cursor.execute(statement)
    if row is None or found != schema.version:
        cursor.execute(
            "INSERT INTO ledger_events_schema (part, version) VALUES (?, ?) "
            "ON CONFLICT (part) DO UPDATE SET version = excluded.version",
            (schema.name, schema.version),
        )
    if steps:
        log.warning("events.schema_upgraded", part=schema.name, found=found, version=schema.version)
    return found


def table_exists(cursor: Cursor, table: str, is_postgres: bool) -> bool:
    if is_postgres:
        cursor.execute("SELECT to_regclass(?) IS NOT NULL", (table,))
        return bool(cursor.fetchone()[0])
    cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return cursor.fetchone() is not None
