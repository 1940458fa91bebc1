"""The read model on each backend: the library's tracking recorder (the checkpoint,
exactly-once) with our projection and reader mixed in, in SQLite or PostgreSQL."""

import contextlib
import os
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Final, TypeVar, cast

import psycopg
import structlog
from eventsourcing.persistence import OperationalError, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from app.compat import insert_tracking, on_new_sqlite_connections, postgres_connection_kwargs
from app.persistence.bulk_rows import (
    CatalogTypes,
    ColumnTypes,
    column_arrays,
    insert_rows_sql,
    update_rows_sql,
)
from app.persistence.postgres import reading_retried
from app.persistence.schema_lock import schema_locked
from projections.projection import RowWriter
from projections.reader import RowReader
from projections.schema import (
    APPLICATION_NAME,
    DROPPED_INDEXES,
    JSON_COLUMN_TYPE,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    Cursor,
    table_names,
)

log = structlog.get_logger(__name__)

R = TypeVar("R")

# The planner's cost of a random page read on the views' connections (PostgreSQL's
# default, 4, is for disks): the views' working set is in memory, where an index probe
# costs about what the next page of a scan does. With 4, a search by one metadata pair
# walked the accounts in id order (a merge join) instead of probing the page it needs.
VIEW_RANDOM_PAGE_COST: Final = 1.1
# Pages the views' WAL holds before a commit copies them back into the database file
# (SQLite's default: 1,000). A live batch dirties a page per row of each random-key
# index; with a longer WAL a page that many batches rewrite (an index's tail, a busy
# account's entries) is copied back once per checkpoint instead of once per 1,000
# pages. About 40 MB of WAL at 4 kB pages (decision 0013, eighth-session addendum).
VIEWS_WAL_AUTOCHECKPOINT_PAGES: Final = 10_000
# How long opening the views waits to drop an index an older version made: on
# PostgreSQL for the transactions under way on its table (``DROP INDEX CONCURRENTLY``),
# on SQLite for the views' writer. Past it the index is kept until the next start: it
# costs writes, not answers (decision 0033 addendum).
INDEX_DROP_LOCK_WAIT_SECONDS: Final = 1


class LedgerView(RowWriter, RowReader):
    """What both backends share: the projection's writes and the reader's queries."""

    @abstractmethod
    def close(self) -> None:
        """Close the view's connections (its datastore's pool) and where readers say
        what they wait for: at the process's shutdown, not when a runner is replaced,
        since a reader may still hold the view it took. Its server sessions otherwise
        stayed open until the process exited."""

    def settle_schema_version(self) -> None:
        """Once the tables exist: a view database built by another version of the
        tables (``SCHEMA_VERSION``) is emptied, tables and checkpoint, so that the
        runner rebuilds it from the log (views are disposable). One transaction: a
        reader sees the old views or the empty new ones. Processes opening the same
        views at once (``serve`` and ``project``) settle it one after the other: the
        first under the views' write lock, the others then find the version current."""
        if self._schema_version() == SCHEMA_VERSION:
            return  # the usual case: a read, no lock
        with self._transaction(commit=True) as cursor:
            self._lock_views(cursor)
            self._run(cursor, "SELECT version FROM {view_schema} WHERE id = 1")
            row = cursor.fetchone()
            found = None if row is None else int(row["version"])
            if found == SCHEMA_VERSION:
                return  # another process settled it while this one waited
            self._run(
                cursor,
                "SELECT MAX(notification_id) AS position FROM {tracking} "
                "WHERE application_name = ?",
                [APPLICATION_NAME],
            )
            checkpoint = cursor.fetchone()
            projected = checkpoint is not None and checkpoint["position"] is not None
            if found is not None or projected:
                log.warning(
                    "views.rebuilding",
                    message=f"the views were built by schema version {found or 1}; this "
                    f"version needs {SCHEMA_VERSION}: rebuilding them from the log",
                )
                self._empty(cursor)
            self._run(
                cursor,
                "INSERT INTO {view_schema} (id, version) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                [SCHEMA_VERSION],
            )

    def _schema_version(self) -> int | None:
        row = self._one("SELECT version FROM {view_schema} WHERE id = 1")
        return None if row is None else int(row["version"])

    def _lock_views(self, cursor: Cursor) -> None:
        """Take the views' write lock before reading what to do (the backend's way)."""
        raise NotImplementedError

    def drop_unused_indexes(self) -> None:
        """Drop the indexes an older version made and this one does not use
        (``DROPPED_INDEXES``), each waiting for its lock at most
        ``INDEX_DROP_LOCK_WAIT_SECONDS``: a long read of the table (an export, an audit)
        or a busy writer keeps it until a later start, instead of stalling this start
        (an unused index costs writes, never answers)."""
        for index in DROPPED_INDEXES:
            try:
                self._drop_index(f"{{{index}_dropped}}")
            except (OperationalError, psycopg.OperationalError, sqlite3.OperationalError) as error:
                log.warning(
                    "views.index_kept",
                    index=index,
                    message=f"an unused index of an older version is kept until a later "
                    f"start: {error}",
                )

    def _drop_index(self, name: str) -> None:
        """``DROP INDEX IF EXISTS name``, its lock waited for at most
        ``INDEX_DROP_LOCK_WAIT_SECONDS`` (the backend's way)."""
        raise NotImplementedError

    def _empty(self, cursor: Cursor) -> None:
        for table in TABLES:
            self._run(cursor, f"DROP TABLE IF EXISTS {{{table}}}")
        self._run(
            cursor,
            "DELETE FROM {tracking} WHERE application_name = ?",
            [APPLICATION_NAME],
        )
        for statement in SCHEMA:
            self._run(cursor, statement)


def _relaxed_durability(connection: Any) -> None:
    """Views need no fsync per commit: they are disposable and rebuildable, and in WAL
    mode ``synchronous=NORMAL`` still survives any process crash; only a power loss can
    drop the newest commits, and their tracking records go with them, so exactly-once
    holds. (The event store keeps the library's full durability.)"""
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA wal_autocheckpoint={VIEWS_WAL_AUTOCHECKPOINT_PAGES}")


class WantedPosition:
    """The newest log position a reader of one SQLite view file waits for, in a small
    file beside it (``<views file>-wanted``, 8 bytes): readers in any process write it
    while they wait (``RowReader.wait_for``); the view's writer, pausing between
    batches, reads it and applies what it has at once when it is past its checkpoint
    (``CatchUpRunner._pause``). Two readers writing at once: the one overwritten
    writes again at its next look (within ``WAIT_POLL_SECONDS_MAX``)."""

    def __init__(self, view_path: str) -> None:
        self.path = f"{view_path}-wanted"
        self._fd: int | None = None
        self._unusable = False
        # An ask or a look and the close, one at a time: a runner replaced while
        # serving closes its view's file while a reader that took the view may be
        # asking, whose write then went to a closed descriptor (EBADF) or to the file
        # the number was given to since (8 bytes over its start). Closed stays closed.
        self._lock = threading.Lock()
        self._closed = False

    def _opened(self) -> int | None:
        """The file, opened once; None when it cannot be (a read-only directory, say):
        then readers wait as before, for the writer's next read after its pause."""
        if self._fd is None and not self._unusable and not self._closed:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                self._unusable = True
                log.warning("views.wanted_file_unusable", path=self.path, error=str(error))
        return self._fd

    def ask_for(self, position: int) -> None:
        with self._lock:
            fd = self._opened()
            if fd is not None:
                os.pwrite(fd, position.to_bytes(8, "big"), 0)

    def read(self) -> int:
        """The position asked for last (0: none yet, no file, or closed)."""
        with self._lock:
            fd = self._opened()
            return 0 if fd is None else int.from_bytes(os.pread(fd, 8, 0) or b"\0", "big")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class WantedNotices:
    """The newest log position a reader of one PostgreSQL view generation waits for,
    told as a notification on the generation's own channel (``<schema>_wanted``):
    readers in any process send one while they wait (``RowReader.wait_for``); the
    view's writer, pausing between batches, listens on a connection of its own (taken
    at its first look) and applies what it has at once when asked for a position past
    its checkpoint (``CatchUpRunner._pause``), as with ``WantedPosition`` on SQLite."""

    def __init__(self, datastore: Any, channel: str) -> None:
        self.datastore = datastore
        self.channel = channel
        self._listening: ExitStack | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self._asked = 0

    def ask_for(self, position: int) -> None:
        def notify(cursor: Cursor) -> None:
            cursor.execute("SELECT pg_notify(%s, %s)", (self.channel, str(position)))

        reading_retried(self.datastore, notify)

    def read(self) -> int:
        """The largest position asked for since the first look (0: none yet).

        The largest ever, not the last: readers ask only for positions the log holds
        (the read path refuses one past its head: ``Queries.reach``; the audit asks for
        the head it read), so the writer's next read reaches the largest, after which no
        ask wakes it until a larger one; and each runner (restarted, or of a rebuild's
        new generation, on its own channel) starts from 0. A position the log did not
        hold would be read in vain once and then mask smaller asks (``_asked_in_vain``)
        until the log passed it: their readers would wait for the writer's pause, as
        with no ask at all, not longer."""
        connection = self._connection
        if connection is None:
            self._listening = ExitStack()
            connection = self._listening.enter_context(self.datastore.get_connection())
            connection.execute(SQL("LISTEN {0}").format(Identifier(self.channel)))
            self._connection = connection
        for notice in connection.notifies(timeout=0):
            self._asked = max(self._asked, int(notice.payload))
        return self._asked

    def close(self) -> None:
        if self._listening is not None:
            # Back into the pool without the subscription, where it may be reused.
            with contextlib.suppress(psycopg.Error):
                if self._connection is not None and not self._connection.closed:
                    self._connection.execute("UNLISTEN *")
            self._listening.close()
            self._listening = self._connection = None


class SQLiteLedgerView(LedgerView, SQLiteTrackingRecorder):
    """The views in one SQLite file (one file per view generation: decision 0006)."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        # "tracking": the library's SQLite tracking table (one file per view)
        self._names = {
            **table_names(),
            "tracking": "tracking",
            "json": JSON_COLUMN_TYPE["sqlite"],
        }
        super().__init__(datastore, **kwargs)
        on_new_sqlite_connections(datastore, _relaxed_durability)
        pool = datastore.pool
        # Where readers waiting for a position tell the writer (not for a memory view).
        self.wanted = None if pool.is_sqlite_memory_mode else WantedPosition(pool.db_name)

    def close(self) -> None:
        if self.wanted is not None:
            self.wanted.close()
        self.datastore.close()

    def ask_for(self, position: int) -> None:
        if self.wanted is not None:
            self.wanted.ask_for(position)

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        return statements + [statement.format(**self._names) for statement in SCHEMA]

    def create_table(self) -> None:
        super().create_table()
        self.settle_schema_version()
        self.drop_unused_indexes()

    def _drop_index(self, name: str) -> None:
        # The drop waits for the views' writer only (in WAL mode readers never hold off
        # a writer), but the connection's busy timeout is long: bounded for this write.
        with self._transaction(commit=True) as cursor:
            self._run(cursor, "PRAGMA busy_timeout")
            previous = int(cursor.fetchone()[0])
            self._run(cursor, f"PRAGMA busy_timeout = {INDEX_DROP_LOCK_WAIT_SECONDS * 1000}")
            try:
                self._run(cursor, f"DROP INDEX IF EXISTS {name}")
            finally:
                self._run(cursor, f"PRAGMA busy_timeout = {previous}")

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Cursor]:
        return self.datastore.transaction(commit=commit)

    def _sql(self, statement: str) -> str:
        return statement.format(**self._names)

    def _insert_tracking_in(self, cursor: Cursor, tracking: Tracking) -> None:
        insert_tracking(self, cursor, tracking)

    def _lock_views(self, cursor: Cursor) -> None:
        # A write as the transaction's first statement takes SQLite's write lock at once
        # (a read first would hold a snapshot that a later write could not upgrade).
        self._run(cursor, "UPDATE {view_schema} SET version = version WHERE id = 1")


class PostgresLedgerView(LedgerView, PostgresTrackingRecorder):
    """The views in one PostgreSQL schema (one schema per view generation)."""

    searches_in_one_statement = True

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        # Before the pool's first connection (the library opens it on first use).
        connection_kwargs = postgres_connection_kwargs(self.datastore)
        connection_kwargs["options"] = " ".join(
            part
            for part in (
                connection_kwargs.get("options"),
                f"-c random_page_cost={VIEW_RANDOM_PAGE_COST}",
            )
            if part
        )
        schema = self.datastore.schema
        self._names = {
            key: f'"{schema}"."{value}"' if not key.endswith("_index") else f'"{value}"'
            for key, value in table_names().items()
        }
        self._names["tracking"] = f'"{schema}"."{self.tracking_table_name}"'
        self._names["json"] = JSON_COLUMN_TYPE["postgres"]
        self.sql_create_statements.insert(
            0, SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(schema))
        )
        self.sql_create_statements.extend(
            SQL(statement.format(**self._names)).format() for statement in SCHEMA
        )
        # Where readers waiting for a position tell the writer.
        self.wanted = WantedNotices(self.datastore, f"{schema}_wanted")
        self._catalog_types = CatalogTypes(schema)

    def close(self) -> None:
        self.wanted.close()
        self.datastore.close()

    def ask_for(self, position: int) -> None:
        self.wanted.ask_for(position)

    def create_table(self) -> None:
        # ``serve`` and ``project`` starting together on a new database create the same
        # schema and tables, and settle their version: one after the other (decision 0032).
        with schema_locked(self.datastore):
            super().create_table()
            self.settle_schema_version()
        self.drop_unused_indexes()

    def _drop_index(self, name: str) -> None:
        # CONCURRENTLY: no ACCESS EXCLUSIVE lock, so neither reads nor writes of the
        # table queue behind the drop while it waits for the transactions under way
        # (outside a transaction: the pool's connections are in autocommit mode). One
        # that fails part way leaves the index invalid, unused, and dropped next time.
        with self.datastore.get_connection() as connection:
            connection.execute(f"SET lock_timeout = '{INDEX_DROP_LOCK_WAIT_SECONDS}s'")
            try:
                connection.execute(self._sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            finally:
                connection.execute("RESET lock_timeout")

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Cursor]:
        return self.datastore.transaction(commit=commit)

    def _sql(self, statement: str) -> Any:
        return SQL(statement.format(**self._names).replace("?", "%s"))

    @contextmanager
    def _reading(self) -> Iterator[Cursor]:
        # One round trip per read: the pool's connections are in autocommit mode (the
        # library sets it), and under READ COMMITTED one statement takes its own
        # snapshot, so BEGIN and ROLLBACK around it would only add two round trips.
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            yield cursor

    def _read(self, read: Callable[[Cursor], R]) -> R:
        # As ``_reading``; a connection a server restart cut is found on its first use
        # and the read tried once more (``reading_retried``).
        return reading_retried(self.datastore, read)

    def _insert_tracking_in(self, cursor: Cursor, tracking: Tracking) -> None:
        insert_tracking(self, cursor, tracking)

    def _lock_views(self, cursor: Cursor) -> None:
        self._run(cursor, "LOCK TABLE {view_schema} IN SHARE ROW EXCLUSIVE MODE")

    def _insert_many(
        self,
        cursor: Cursor,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict: str = "",
    ) -> None:
        # All the rows in one statement (``app.persistence.bulk_rows``).
        if rows:
            statement = insert_rows_sql(f"{{{table}}}", columns, self._types_of(cursor, table))
            cursor.execute(
                SQL(f"{statement} {conflict}".format(**self._names)), column_arrays(rows)
            )

    def _update_many(
        self,
        cursor: Cursor,
        table: str,
        columns: Sequence[str],
        key: str,
        rows: Sequence[Sequence[Any]],
    ) -> None:
        if rows:
            types = self._types_of(cursor, table)
            statement = update_rows_sql(f"{{{table}}}", columns, key, types)
            cursor.execute(SQL(statement.format(**self._names)), column_arrays(rows))

    def _types_of(self, cursor: Cursor, table: str) -> ColumnTypes:
        """The view table's column types, as the catalog has them (``CatalogTypes``)."""
        return self._catalog_types.of(cast("psycopg.Cursor[Any]", cursor).connection, table)

    def _pipeline(self, cursor: Cursor) -> AbstractContextManager[object]:
        # psycopg 3 pipeline mode: a batch's statements (each table's executemany, the
        # lots' updates, the tracking insert) go out back to back, one round trip for
        # all their answers instead of one per statement, in the same transaction.
        return cast("psycopg.Cursor[Any]", cursor).connection.pipeline()
