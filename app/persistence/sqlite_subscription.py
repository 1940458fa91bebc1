"""Catch-up subscriptions for SQLite, which the library lacks (and the write lock a
starving command holds across its read and its write, ``write_lock.py``).

The library's ``ListenNotifySubscription`` already pulls notifications in batches
whenever it is woken; on PostgreSQL LISTEN/NOTIFY wakes it. SQLite has no
notifications, so a timer thread wakes it every poll interval. Polling is safe here:
the notification id is the rowid, assigned inside SQLite's single writer transaction,
so ids commit in order and ``id > last`` never skips a late-committing row.
"""

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from threading import Event, Thread
from typing import Any, Final
from uuid import UUID

from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    PersistenceError,
    StoredEvent,
    Subscription,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteTransaction,
)

from app.compat import (
    ExecutemanySQLiteRecorder,
    cache_sqlite_statements,
    new_notification,
    on_new_sqlite_connections,
    set_pull_batch_size,
    wake_subscription,
)

POLL_INTERVAL_SECONDS: Final = 0.02
PULL_BATCH_SIZE: Final = 1000
# Statements the write connection keeps compiled (it runs three: BEGIN, the insert, the
# rowid query; room for the library's others).
WRITER_CACHED_STATEMENTS: Final = 16
# Statements each of the pool's connections (the reads) keeps compiled: Python's own
# default (the library asks for one: a read's BEGIN and its query compiled every call).
POOL_CACHED_STATEMENTS: Final = 128
# The write connection's page cache for a large write, in KiB (SQLite's default is
# 2 MiB): the log's (originator_id, originator_version) index outgrows that after some
# 100,000 events, and each insert then read its index page back from the OS
# (docs/benchmarks.md, eighth session, "batch").
WRITER_CACHE_KIB: Final = 65_536
# The write connection's page cache for a small write (a group of single transfers), in
# KiB. A commit walks every page the cache holds whenever its write split an index page
# out of order (SQLite's ``balance_nonroot`` renumbers a page through a temporary number
# past 1 GiB, and the commit's ``pcache1Truncate`` then looks through the whole cache for
# pages past the end of the database): with the large cache full, some 150 µs of each
# commit, which a batch of 1,000 transfers shares and a group of eight does not
# (docs/benchmarks.md, tenth session). Shrinking the cache lets go of the pages used
# longest ago (mostly the log's rows, written once); growing it again keeps every page.
SMALL_WRITE_CACHE_KIB: Final = 4_096
# Events of a write up to which it is small (a hundred transfers: its pages, about 1.3
# an event, fit the small cache twice, so SQLite never spills them before the commit).
SMALL_WRITE_EVENTS_MAX: Final = 300
# The write connection checkpoints the WAL once it holds this many pages (about 40 MiB),
# not SQLite's default 1,000: each checkpoint copies the pages written since the last
# back into the database file and syncs it, inside the commit its callers await, and a
# page the log's index changes in every write is copied once per checkpoint.
WRITER_AUTOCHECKPOINT_PAGES: Final = 10_000


class SQLitePollingSubscription(ListenNotifySubscription[SQLiteApplicationRecorder]):
    def __init__(
        self,
        recorder: SQLiteApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        poll_interval_seconds: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._stopping = Event()
        self._poll_interval_seconds = poll_interval_seconds
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        set_pull_batch_size(self, PULL_BATCH_SIZE)
        self._poll_thread = Thread(target=self._wake_periodically, daemon=True)
        self._poll_thread.start()

    def stop(self) -> None:
        super().stop()
        self._stopping.set()

    def _wake_periodically(self) -> None:
        while not self._stopping.wait(self._poll_interval_seconds):
            wake_subscription(self)

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._poll_thread.join()


class SubscribableSQLiteApplicationRecorder(ExecutemanySQLiteRecorder):
    """Selected with ``APPLICATION_RECORDER_TOPIC`` for every SQLite event store (and
    inserting each write's rows in one ``executemany``, see ``app.compat``).

    Its ``write_lock`` is SQLite's own: ``BEGIN IMMEDIATE`` takes the database's one
    write lock (other processes' writers wait in their busy handler); readers of a WAL
    file are not blocked by it.

    Writes go through one connection of its own, kept open (``_writer``): the library's
    transaction on it (its ``BEGIN``, commit or rollback, and errors), without the pool's
    per-call hand-out, and with a statement cache (the pool opens its connections with
    ``cached_statements=True``, a cache of one statement, so each write compiled its
    ``BEGIN``, its ``INSERT`` and its rowid query again). A small group's write, one
    commit per handful of transfers, paid that on every commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cache_sqlite_statements(self.datastore, POOL_CACHED_STATEMENTS)
        if not self.datastore.pool.is_sqlite_memory_mode:
            # The pool's connections commit too (snapshots): the same checkpoint size,
            # else the first of them to commit past SQLite's default checkpoints for all;
            # and no sync of their own (``_tune_pooled``).
            on_new_sqlite_connections(self.datastore, _tune_pooled)
        self._held = _Held()
        self._writer: SQLiteConnection | None = None
        self._writer_connection: sqlite3.Connection | None = None
        self._writer_cache_kib = WRITER_CACHE_KIB
        self._writing = threading.Lock()

    @contextmanager
    def write_lock(
        self,
        timeout_seconds: float,
        after: Mapping[UUID, int] | None = None,  # noqa: ARG002  # a local read costs no round trip
    ) -> Iterator[bool]:
        pool = self.datastore.pool
        if pool.is_sqlite_memory_mode:
            # An in-memory database's readers wait for its writer: reading while
            # holding the writer would wait for ever.
            yield False
            return
        # A connection of its own, outside the pool: the pool lets one writer
        # connection out at a time, and the snapshot write after the commit needs it.
        connection = sqlite3.connect(
            pool.db_name,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=timeout_seconds,
        )
        try:
            held = _begin_immediate(connection)
            self._held.connection = connection if held else None
            try:
                yield held
            finally:
                self._held.connection = None
                if connection.in_transaction:
                    connection.rollback()
        finally:
            connection.close()

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        connection = self._held.connection
        if connection is None:
            return self._insert_on_writer(stored_events, **kwargs)
        self._held.connection = None  # one write per hold: the commit releases the lock
        try:
            notification_ids = self._insert_events(
                SQLiteCursor(connection.cursor()), stored_events, **kwargs
            )
            connection.commit()
        except sqlite3.IntegrityError as error:
            raise IntegrityError(error) from error
        except sqlite3.OperationalError as error:
            raise OperationalError(error) from error
        except sqlite3.Error as error:
            raise PersistenceError(error) from error
        return notification_ids

    def _insert_on_writer(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's ``insert_events`` (one transaction: ``BEGIN``, the rows, commit),
        on the recorder's own write connection (an in-memory database has only its pool)."""
        pool = self.datastore.pool
        if pool.is_sqlite_memory_mode:
            return super().insert_events(stored_events, **kwargs)
        with self._writing:
            writer, connection = self._writer, self._writer_connection
            if writer is None or connection is None:
                connection = self._writer_connection = sqlite3.connect(
                    pool.db_name,
                    uri=True,
                    isolation_level=None,  # autocommit: the transaction says BEGIN
                    check_same_thread=False,  # one thread at a time (the lock above)
                    timeout=pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
                    cached_statements=WRITER_CACHED_STATEMENTS,
                )
                _tune_writer(connection)
                self._writer_cache_kib = WRITER_CACHE_KIB
                writer = self._writer = SQLiteConnection(connection, max_age=None)
            self._size_cache(connection, len(stored_events))
            # The library's transaction (``SQLiteTransaction``: BEGIN, the rows through
            # its ``_insert_events`` hook, commit) on the connection itself, without its
            # context manager; a failure goes through the library's own exit (rollback,
            # its error classes).
            try:
                connection.execute("BEGIN")
                notification_ids = self._insert_events(
                    SQLiteCursor(connection.cursor()), stored_events, **kwargs
                )
                writer.commit()
            except sqlite3.Error as error:
                try:
                    SQLiteTransaction(writer, commit=True).__exit__(
                        type(error), error, error.__traceback__
                    )
                finally:
                    # A failed COMMIT (SQLITE_BUSY, a full disk) can leave the transaction
                    # open, and every later BEGIN on this connection would then fail.
                    self._close_if_in_transaction(writer, connection)
                raise  # not reached: the library's exit raises its own error
            except BaseException:
                # Raised midway by something other than SQLite (the driver refusing a
                # value, say): the transaction is still open.
                self._close_if_in_transaction(writer, connection)
                raise
            return notification_ids

    def _size_cache(self, connection: sqlite3.Connection, events: int) -> None:
        """The write connection's page cache for a write of ``events``: the large one for
        a large write, the small one for a small write (shrinking it lets go of the pages
        used longest ago; growing it keeps every page)."""
        cache_kib = WRITER_CACHE_KIB if events > SMALL_WRITE_EVENTS_MAX else SMALL_WRITE_CACHE_KIB
        if cache_kib != self._writer_cache_kib:
            connection.execute(f"PRAGMA cache_size = -{cache_kib}")
            self._writer_cache_kib = cache_kib

    def _close_if_in_transaction(
        self, writer: SQLiteConnection, connection: sqlite3.Connection
    ) -> None:
        """Close a write connection left in a transaction (which rolls it back): the
        next write opens another, instead of every later BEGIN failing on this one."""
        if connection.in_transaction:
            self._writer = self._writer_connection = None
            writer.close()

    def writer_pragma(self, name: str) -> object:
        """A setting of the write connection as it is now (``PRAGMA name``), or of a
        pool's connection while no write has opened it (a benchmark's floor is given the
        write connection's settings)."""
        with self._writing:
            connection = self._writer_connection
            if connection is not None:
                value: object = connection.execute(f"PRAGMA {name}").fetchone()[0]
                return value
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"PRAGMA {name}")
            pooled: object = cursor.fetchone()[0]
            return pooled

    def close_writer(self) -> None:
        """Close the write connection (the ledger closes it with its store)."""
        with self._writing:
            writer, self._writer, self._writer_connection = self._writer, None, None
        if writer is not None:
            writer.close()

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's query, in the form a subscription asks it (from a position,
        any topic), read as plain tuples rather than a row object per row: a catch-up
        reads every event of the log through here. Other forms go to the library."""
        if start is None or stop is not None or topics:
            return super().select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
        comparison = ">=" if inclusive_of_start else ">"
        statement = (
            "SELECT rowid, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {self.events_table_name} WHERE rowid{comparison}? ORDER BY rowid LIMIT ?"
        )
        with self.datastore.transaction(commit=False) as cursor:
            rows = cursor.sqlite_cursor
            rows.row_factory = None  # tuples (the connection's factory makes Row objects)
            rows.execute(statement, (start, limit))
            found = rows.fetchall()
        if self.datastore.originator_id_type != "uuid":
            return [new_notification(*row) for row in found]
        ids = _ParsedUUIDs()  # each stream's id parsed once per query: accounts recur
        return [
            new_notification(position, ids[originator_id], version, topic, state)
            for position, originator_id, version, topic, state in found
        ]

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return SQLitePollingSubscription(recorder=self, gt=gt, topics=topics)


class _Held(threading.local):
    """The connection holding the write lock in this thread, if any. A class default,
    not ``getattr(local, name, None)``: a thread that never held the lock would raise
    and format an ``AttributeError`` (about 6,000 instructions) on every write."""

    connection: sqlite3.Connection | None = None


class _ParsedUUIDs(dict[str, UUID]):
    """Stream ids as ``UUID``s, each text parsed once (on its first lookup)."""

    def __missing__(self, text: str) -> UUID:
        parsed = self[text] = UUID(text)
        return parsed


def _tune_writer(connection: sqlite3.Connection) -> None:
    """The write connection's page cache and checkpoint size (see their limits)."""
    connection.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    _set_checkpoint_size(connection)


# The pool's commits' ``synchronous``: NORMAL, which in WAL mode does not sync the WAL at
# each commit (checkpoints still sync it before copying it back, and the database file
# after). The events never commit through the pool (the write connection and the write
# lock's connection do, at the library's FULL); the pool's commits are the snapshots,
# written after the events they summarise were committed and synced, and the tables'
# creation. A snapshot is an optimisation: its frames follow its events' in the WAL, and
# the next events' commit syncs them too; a power loss before that can only lose the
# snapshot (the account is then folded from an older one), never keep it without its
# events. Its own sync cost a batch of 1,000 transfers a second ``fdatasync`` of the WAL
# on the writer's path (decision 0031, twelfth-session addendum).
POOLED_SYNCHRONOUS: Final = "NORMAL"


def _tune_pooled(connection: sqlite3.Connection) -> None:
    """A pool connection's checkpoint size and sync (see their limits)."""
    _set_checkpoint_size(connection)
    connection.execute(f"PRAGMA synchronous = {POOLED_SYNCHRONOUS}")


def _set_checkpoint_size(connection: sqlite3.Connection) -> None:
    connection.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")


def _begin_immediate(connection: sqlite3.Connection) -> bool:
    """Take the database's write lock, waiting at most the connection's timeout (SQLite's
    busy handler)."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:  # still busy at the timeout: not held
        return False
    return True
