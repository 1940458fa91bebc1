"""PostgreSQL as the library configures it, with every wait bounded, and a write lock
that a starving command can hold across its read and its write.

The library's factory takes a pool wait (``POSTGRES_CONNECT_TIMEOUT``) and a lock
timeout, but no timeout for establishing a connection (libpq waits as long as TCP does)
and none for a statement. Selected with
``PERSISTENCE_MODULE=app.persistence.postgres:LedgerPostgresFactory``; it reads one more
key, ``POSTGRES_STATEMENT_TIMEOUT`` (seconds), and gives libpq the pool's wait
(``POSTGRES_CONNECT_TIMEOUT``) as its connect timeout.
"""

import contextlib
import math
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar, cast
from uuid import UUID

import psycopg
import psycopg.errors
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import Environment, strtobool
from psycopg.pq import TransactionStatus
from psycopg.sql import SQL, Composed, Identifier
from psycopg_pool import ConnectionPool

from app.compat import (
    hand_out_last_returned,
    postgres_connection_kwargs,
    postgres_insert_once,
    postgres_select_once,
    set_pool_check,
)
from app.domain.errors import OutcomeUnknownError
from app.persistence import binary_arrays
from app.persistence.binary_arrays import bigint_array, bytea_array, text_array, uuid_array
from app.persistence.deadlines import seconds_left
from app.persistence.schema_lock import schema_locked
from app.persistence.stores import STORE_TIMEOUT_SECONDS
from app.persistence.tcp_liveness import LIVENESS_ENV_KEY, tcp_liveness

STATEMENT_TIMEOUT_KEY = "POSTGRES_STATEMENT_TIMEOUT"
# With pre-ping on, a pooled connection is pinged before use only when it was last handed
# out longer ago than this (``PingIfIdle``).
PING_IDLE_SECONDS: Final = 1.0
# PostgreSQL's lock_timeout of 0 means "wait for ever": a wait is at least this long.
LOCK_WAIT_MIN_MILLISECONDS: Final = 1
# A read whose connection the server dropped (a restart or a failover cuts every pooled
# connection) runs this many times more, after the pool's idle connections were checked.
# Each try is bounded by the pool's wait and the statement timeout, and a writer's
# caller is answered at its deadline whatever the writer is doing.
DROPPED_CONNECTION_RETRIES: Final = 1
# A write whose connection failed is tried again on another, as the library tries its own
# (``@retry(..., max_attempts=10, wait=0.2)``), but never past the writer's deadline
# (app/persistence/deadlines.py): its ten tries with their waits for a connection last
# longer than LEDGER_WRITE_TIMEOUT_SECONDS.
INSERT_TRIES_MAX: Final = 10
INSERT_RETRY_WAIT_SECONDS: Final = 0.2
# A write brings back what other writers committed since this thread's previous write
# (decision 0027), at most this many events: past it the writer has lost track of them.
OTHERS_WRITTEN_MAX: Final = 10_000
# The first half of the writers' advisory lock key (``writers_lock_key``), the same in
# every process of every version of the ledger that takes it ("ledw" in ASCII).
WRITERS_LOCK_CLASS: Final = int.from_bytes(b"ledw", "big") >> 1
UNKNOWN_COMMIT_DETAIL: Final = (
    "the store's connection was lost while the write was being committed, and it could "
    "not be reached again: the write may or may not have been recorded. Sending the same "
    "request again is safe"
)

R = TypeVar("R")

# Every connection made from here on can send the write function's packed arrays.
binary_arrays.register(psycopg.adapters)


class LedgerPostgresApplicationRecorder(PostgresApplicationRecorder):
    """The library's recorder, plus ``write_lock`` (``app/persistence/write_lock.py``).

    The lock is the one every writer of the events table already takes in its insert
    transaction (``lock_function``, which keeps notification ids in commit order):
    held from before the read, it makes the read and the write one critical section.
    PostgreSQL grants a lock to its waiters in the order they asked, so a command
    waiting for it is not overtaken by a writer that came later."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = threading.local()
        # Per thread (the writer's is the one that matters): the log position up to
        # which it has seen every event, and what others wrote that it has not taken.
        self._follow = threading.local()
        # A new name whenever its signature changes (CREATE OR REPLACE cannot change it)
        # or the locks it takes do: during a rolling upgrade each version's processes
        # replace the function at their start, and the others' then run that body
        # under their own locks. ``<channel>_append``, before decision 0039, took the
        # table IN EXCLUSIVE MODE: run by a holder of this version's write lock, that
        # waited for another writer's ROW EXCLUSIVE lock, while that writer waited for
        # the writers' lock (a deadlock, cancelled a second later).
        self.write_function_name = f"{self.channel_name}_write"
        self.lock_function_name = f"{self.channel_name}_lock"
        for name in (self.write_function_name, self.lock_function_name):
            self.check_identifier_length(name)
        self.sql_create_statements += [write_function(self), lock_function(self)]
        # The arguments go in PostgreSQL's binary format (``%b``): in text, psycopg's
        # array dumper quotes every id and topic and hex-escapes every event's state in
        # Python, about a third of the writer's client CPU per group write; the arrays
        # packed whole (app/persistence/binary_arrays.py), not element by element.
        self.write_statement = SQL(
            "SELECT * FROM {schema}.{function}(%b::{id_type}[], %b::bigint[], %b::text[], "
            "%b::bytea[], %b::integer, %b::bigint, %b::integer)"
        ).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.write_function_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )
        self.lock_statement = (
            SQL("SELECT {schema}.{function}(%d)")
            .format(
                schema=Identifier(self.datastore.schema),
                function=Identifier(self.lock_function_name),
            )
            .as_bytes(None)
        )
        self.after_statement = postgres_after_query(self).as_bytes(None)
        self._uuid_ids = self.datastore.originator_id_type == "uuid"

    def create_table(self) -> None:
        with schema_locked(self.datastore):
            super().create_table()

    def write_parameters(self, stored_events: Sequence[StoredEvent]) -> tuple[Any, ...]:
        """The write function's arguments: the events as four arrays, the lock's wait
        (the library's ``lock_timeout``, 0 waits for ever), and this thread's log
        position (None before its first write: nothing is brought back)."""
        ids = [event.originator_id for event in stored_events]
        return (
            uuid_array(cast(list[UUID], ids))
            if self._uuid_ids
            else text_array([str(i) for i in ids]),
            bigint_array([event.originator_version for event in stored_events]),
            text_array([event.topic for event in stored_events]),
            bytea_array([event.state for event in stored_events]),
            int(self.datastore.lock_timeout * 1000),
            getattr(self._follow, "known", None),
            OTHERS_WRITTEN_MAX,
        )

    def follows_log(self) -> bool:
        """Whether this thread has written (so each of its writes brings back what others
        wrote since its previous one, ``others_written``)."""
        return getattr(self._follow, "known", None) is not None

    def others_written(self) -> list[StoredEvent] | None:
        """What other writers committed before this thread's writes since it last asked,
        in log order; taken once. None: more than ``OTHERS_WRITTEN_MAX`` came back at
        once, so some were not (the caller must no longer trust what it cached)."""
        others: list[StoredEvent] | None = getattr(self._follow, "others", [])
        self._follow.others = []
        return others

    def _followed(self, rows: list[Any]) -> list[int]:
        """The write function's rows: what others wrote since this thread's last write
        (kept for ``others_written``), then this write's notification ids, or the
        reason it was refused (raised as the library's ``IntegrityError``, as its own
        insert raises a conflict)."""
        ids: list[int] = []
        others: list[StoredEvent] = []
        refused: Any = None
        for row in rows:
            if row["refused"] is not None:
                refused = row
            elif row["stream_id"] is None:
                ids.append(int(row["log_position"]))
            else:
                others.append(
                    StoredEvent(
                        row["stream_id"],
                        int(row["stream_version"]),
                        str(row["stream_topic"]),
                        bytes(row["stream_state"]),
                    )
                )
        untaken: list[StoredEvent] | None = getattr(self._follow, "others", [])
        if untaken is not None and len(others) <= OTHERS_WRITTEN_MAX:
            untaken.extend(others)
            if len(untaken) > OTHERS_WRITTEN_MAX:
                untaken = None
        else:
            untaken = None
        self._follow.others = untaken
        if refused is not None:
            if refused["log_position"] is not None:
                self._follow.known = int(refused["log_position"])
            raise IntegrityError(str(refused["refused"]))
        if ids:
            self._follow.known = ids[-1]
        return ids

    @contextmanager
    def write_lock(
        self, timeout_seconds: float, after: Mapping[UUID, int] | None = None
    ) -> Iterator[bool]:
        """The lock is asked for once more on another connection when the server had
        dropped the first one (a restart: with the group's accounts cached, this is the
        writer's first use of a connection since); nothing was held on it. Once the lock
        is asked for, the block runs once, whatever it raises."""
        deadline = time.monotonic() + timeout_seconds
        check = _pool_checks.get(self.datastore.pool)
        for attempt_number in range(DROPPED_CONNECTION_RETRIES + 1):
            failed_pings = _failed_pings(check)
            connection: psycopg.Connection[Any] | None = None
            entered = False
            try:
                with self.datastore.get_connection() as connection:
                    held = self._lock(connection, deadline - time.monotonic(), after or {})
                    entered = True
                    self._held.connection = connection if held else None
                    try:
                        yield held
                    finally:
                        self._held.connection = None
                        self._held.read_ahead = None
                        if _in_transaction(connection):
                            connection.execute("ROLLBACK")
            except (InterfaceError, OperationalError):
                if entered or attempt_number == DROPPED_CONNECTION_RETRIES:
                    raise
                if not _dropped(connection, check, failed_pings):
                    raise
                self.datastore.pool.check()
            else:
                return

    def _lock(
        self,
        connection: psycopg.Connection[Any],
        timeout_seconds: float,
        after: Mapping[UUID, int],
    ) -> bool:
        """Take the lock in one round trip; with ``after``, read those streams' later
        events in the same round trip, once the lock is held (``read_ahead``)."""
        milliseconds = max(LOCK_WAIT_MIN_MILLISECONDS, math.ceil(timeout_seconds * 1000))
        # Statements as bytes: composing them per group cost about 20 µs of CPU.
        lock = self.lock_statement % milliseconds
        try:
            if not after:
                connection.execute(b"BEGIN; " + lock)
                return True
            reading = connection.cursor()
            with connection.pipeline(), connection.cursor() as cursor:
                cursor.execute(b"BEGIN")
                cursor.execute(lock)
                reading.execute(self.after_statement, (list(after), list(after.values())))
            self._held.read_ahead = (dict(after), reading.fetchall())
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            # Not free in time: by lock_timeout, or by the connection's statement_timeout
            # when that is the shorter (a write timeout set above the store timeout).
            connection.execute("ROLLBACK")
            return False
        return True

    def read_ahead(self, after: Mapping[UUID, int]) -> tuple[list[Any], dict[UUID, int]]:
        """What the lock's round trip read of these streams (rows of
        ``postgres_after_query``), and the streams it did not read at these versions;
        taken once. Outside a hold nothing was read ahead."""
        ahead = getattr(self._held, "read_ahead", None)
        self._held.read_ahead = None
        if ahead is None or getattr(self._held, "connection", None) is None:
            return [], dict(after)
        read_for, rows = ahead
        covered = {i for i, version in after.items() if read_for.get(i) == version}
        return (
            [row for row in rows if UUID(str(row["originator_id"])) in covered],
            {i: version for i, version in after.items() if i not in covered},
        )

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The library's select, tried again in time (``tried_in_time``): the writer reads
        a settled transfer's events with it (a resent post or void)."""
        return tried_in_time(
            self.datastore,
            lambda: postgres_select_once(
                self, originator_id, gt=gt, lte=lte, desc=desc, limit=limit
            ),
        )

    @contextmanager
    def reading(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor for the writer's reads: the held connection's while this thread holds
        the write lock (already in its transaction: no checkout, and the read sees what
        the lock keeps still), else a pooled connection's in autocommit mode. One round
        trip per statement: no BEGIN and ROLLBACK around a read (under READ COMMITTED
        each statement takes its own snapshot anyway)."""
        held: psycopg.Connection[Any] | None = getattr(self._held, "connection", None)
        if held is not None:
            with held.cursor() as cursor:
                yield cursor
            return
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            yield cursor

    def read(self, read: Callable[[psycopg.Cursor[Any]], R]) -> R:
        """``read`` run on the cursor ``reading`` gives; off the held lock, a connection
        the server dropped is tried once more (``reading_retried``). Under the lock the
        transaction, and the lock with it, went with the connection: the error stands."""
        if getattr(self._held, "connection", None) is not None:
            with self.reading() as cursor:
                return read(cursor)
        return reading_retried(self.datastore, read)

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        **_: Any,  # the library's hook arguments (tracking): not used by this recorder
    ) -> Sequence[int] | None:
        """One write through the events table's write function (``write_function``):
        on the connection that holds the write lock when this thread holds it, else as
        one statement on a pooled connection."""
        connection: psycopg.Connection[Any] | None = getattr(self._held, "connection", None)
        if connection is None:
            return self._insert_committed(stored_events)
        self._held.connection = None  # one write per hold: the commit releases the lock
        try:
            return self._followed(insert_on(self, connection, stored_events, begin=False))
        except psycopg.IntegrityError as error:
            raise IntegrityError(str(error)) from error
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            if connection.broken:
                # The server cut the connection (and the lock with it): whether the
                # commit was made is not known. Written again elsewhere, as the library
                # does for its writes: a committed first try is refused by the unique
                # key (a conflict: the commands run again and answer as resends).
                return self._insert_committed(stored_events, maybe_committed=True)
            raise OperationalError(str(error)) from error
        except psycopg.Error as error:
            raise PersistenceError(str(error)) from error

    def _insert_committed(
        self, stored_events: Sequence[StoredEvent], *, maybe_committed: bool = False
    ) -> list[int]:
        """The write as one statement on a pooled connection (``insert_on``): the table
        lock is held only inside the server, never across a wait for this process. A
        broken connection is tried again on another one, as the library does for its own
        insert.

        When every try failed and one of them lost its connection in the middle of its
        round trip (or the caller's own write did: ``maybe_committed``), a commit may
        have been made whose answer never came back: that is ``OutcomeUnknownError``,
        never "nothing was written", after which a client could send the same transfer
        again under a new id."""
        broken_midway: list[bool] = []  # a True per try whose connection broke
        try:
            return tried_in_time(
                self.datastore, lambda: self._insert_tried(stored_events, broken_midway)
            )
        except (InterfaceError, OperationalError) as error:
            if maybe_committed or broken_midway:
                raise OutcomeUnknownError(UNKNOWN_COMMIT_DETAIL) from error
            raise

    def _insert_tried(
        self, stored_events: Sequence[StoredEvent], broken_midway: list[bool]
    ) -> list[int]:
        """One try of ``_insert_committed``. The pool's ``get_connection`` maps psycopg's
        errors to the library's."""
        with self.datastore.get_connection() as connection:
            try:
                return self._followed(insert_on(self, connection, stored_events, begin=True))
            except psycopg.Error:
                if connection.broken:
                    broken_midway.append(True)
                raise


def writers_lock_key(schema: str, table: str) -> tuple[int, int]:
    """The advisory lock every writer of the events table ``schema.table`` takes
    (``lock_function``): the ledger's class, and the table's qualified name
    hashed (CRC-32, the same in every process and version) to a signed 32-bit int."""
    digest = zlib.crc32(f"{schema}.{table}".encode())
    return WRITERS_LOCK_CLASS, digest - (1 << 32) if digest >= 1 << 31 else digest


def lock_function(recorder: LedgerPostgresApplicationRecorder) -> Composed:
    """The write lock (decision 0018) as one server-side function, ``<channel>_lock``:
    what a writer of the events table takes before its insert, held to its commit, so
    that writers commit one at a time and notification ids in commit order (a reader
    following the log never passes over a gap that a slower writer fills in later). The
    write function (``write_function``) takes the same two:

    - the table in ``ROW EXCLUSIVE`` mode, which its insert takes anyway: taken first, it
      waits for a writer that holds the table in ``EXCLUSIVE`` mode (the library's own
      insert, and the ledger's versions before this one, during a rolling upgrade);
    - then the writers' advisory lock (``writers_lock_key``), which orders the ledger's
      writers among themselves. It waits only for what the wait for the table left of
      ``lock_timeout_ms``: the two waits together end by it, not each.

    Not the library's ``LOCK TABLE … IN EXCLUSIVE MODE``: that mode conflicts with the
    ``SHARE UPDATE EXCLUSIVE`` lock that VACUUM, ANALYZE and autovacuum take. Autovacuum
    then skipped the table whenever a write held it (never vacuumed or analyzed under a
    steady load), and when it did get the table between two writes, every writer queued
    behind it until PostgreSQL's deadlock check cancelled it, ``deadlock_timeout`` (1 s)
    later: the "1 s stall" that held every caller of a group (decision 0039). An
    anti-wraparound vacuum, which is never cancelled, would have held them for its
    whole run. Neither mode taken here conflicts with it.

    A function, planned once per connection: the remaining wait computed by a statement
    of its own cost 25-40 µs of planning per lock."""
    return SQL(
        "CREATE OR REPLACE FUNCTION {schema}.{function}(lock_timeout_ms integer) "
        "RETURNS void LANGUAGE plpgsql AS $BODY$ BEGIN {locks}END $BODY$"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        function=Identifier(recorder.lock_function_name),
        locks=writers_locks(recorder, wait_left=True),
    )


def writers_locks(recorder: PostgresApplicationRecorder, *, wait_left: bool) -> Composed:
    """The two locks of ``lock_function`` as PL/pgSQL statements, each wait bounded by
    the argument ``lock_timeout_ms``; ``wait_left``: the writers' lock waits only for
    what the wait for the table left of it (never with a ``lock_timeout_ms`` of 0, which
    waits for ever)."""
    key_class, key = writers_lock_key(recorder.datastore.schema, recorder.events_table_name)
    left = SQL(
        "PERFORM set_config('lock_timeout', greatest(lock_timeout_ms - ceil(1000 * "
        "extract(epoch FROM clock_timestamp() - transaction_timestamp())), {least})::bigint "
        "|| 'ms', true); "
    ).format(least=LOCK_WAIT_MIN_MILLISECONDS)
    return SQL(
        "PERFORM set_config('lock_timeout', lock_timeout_ms || 'ms', true); "
        "LOCK TABLE {schema}.{table} IN ROW EXCLUSIVE MODE; "
        "{left}PERFORM pg_advisory_xact_lock({key_class}, {key}); "
    ).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
        left=left if wait_left else SQL(""),
        key_class=key_class,
        key=key,
    )


def write_function(recorder: LedgerPostgresApplicationRecorder) -> Composed:
    """The events table's write as one server-side function (decision 0027): what the
    library's insert does in four statements (the lock's wait, the writers' lock that
    keeps notification ids in commit order (``lock_function``), the
    notification, the insert returning the new ids), plus, under that lock, the events
    committed after the caller's log position
    (``known``: every earlier writer has committed, so none is missed; at most
    ``others_max`` + 1 of them, enough to tell when there were more). Called as one
    statement in autocommit mode, it is one round trip and one transaction.

    The rows: those others' events in log order, then one row per new event with only
    its position. A write refused by the unique key (a lost race, or an id that exists)
    writes nothing and notifies no one; its last row then says why (``refused``) and
    carries the log's head, up to which the others' events it brought back reach."""
    return SQL(
        "CREATE OR REPLACE FUNCTION {schema}.{function}("
        "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
        "lock_timeout_ms integer, known bigint, others_max integer) "
        "RETURNS TABLE (log_position bigint, stream_id {id_type}, stream_version bigint, "
        "stream_topic text, stream_state bytea, refused text) "
        "LANGUAGE plpgsql AS $BODY$ "
        "DECLARE written bigint[]; "
        "BEGIN "
        "{locks}"
        "IF known IS NOT NULL THEN "
        "RETURN QUERY SELECT e.notification_id, e.originator_id, e.originator_version, "
        "e.topic, e.state, NULL::text FROM {schema}.{table} AS e "
        "WHERE e.notification_id > known ORDER BY e.notification_id LIMIT others_max + 1; "
        "END IF; "
        "BEGIN "
        "WITH inserted AS (INSERT INTO {schema}.{table} AS e "
        "(originator_id, originator_version, topic, state) "
        "SELECT * FROM unnest(ids, versions, topics, states) RETURNING e.notification_id) "
        "SELECT array_agg(inserted.notification_id ORDER BY inserted.notification_id) "
        "INTO written FROM inserted; "
        "EXCEPTION WHEN unique_violation THEN "
        "RETURN QUERY SELECT max(e.notification_id), NULL::{id_type}, NULL::bigint, "
        "NULL::text, NULL::bytea, SQLERRM FROM {schema}.{table} AS e; "
        "RETURN; "
        "END; "
        "NOTIFY {channel}; "
        "RETURN QUERY SELECT w, NULL::{id_type}, NULL::bigint, NULL::text, NULL::bytea, "
        "NULL::text FROM unnest(written) AS w; "
        "END $BODY$"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        function=Identifier(recorder.write_function_name),
        table=Identifier(recorder.events_table_name),
        channel=Identifier(recorder.channel_name),
        id_type=Identifier(recorder.datastore.originator_id_type),
        locks=writers_locks(recorder, wait_left=False),
    )


def insert_on(
    recorder: LedgerPostgresApplicationRecorder,
    connection: psycopg.Connection[Any],
    stored_events: Sequence[StoredEvent],
    *,
    begin: bool,
) -> list[Any]:
    """The write function's rows for these events (``write_function``), committed in the
    same round trip. ``begin``: the connection is in autocommit mode and the call is its
    own transaction (one statement); else the caller opened the transaction (and holds
    the writers' lock: decision 0018), and the call and its COMMIT go in one pipeline. A
    write refused by the unique key says so in its rows (``write_function``); either
    way the connection is left idle."""
    if not stored_events:
        if not begin:
            connection.execute("COMMIT")
        return []
    statement, parameters = recorder.write_statement, recorder.write_parameters(stored_events)
    writing = connection.cursor()
    try:
        if begin:
            writing.execute(statement, parameters, prepare=True)
        else:
            with connection.pipeline(), connection.cursor() as cursor:
                writing.execute(statement, parameters, prepare=True)
                cursor.execute("COMMIT")
        # Leaving the pipeline synced it: every result is in.
        return writing.fetchall()
    except psycopg.Error:
        if _in_transaction(connection):
            with contextlib.suppress(psycopg.Error):  # a broken connection: the pool drops it
                connection.execute("ROLLBACK")
        raise
    finally:
        writing.close()


class LedgerPostgresAggregateRecorder(PostgresAggregateRecorder):
    """The library's recorder of snapshots, whose insert is tried again as the ledger's
    events are (``tried_in_time``): the writer takes snapshots after its commit, and the
    library's ten tries would keep it past its callers' deadline when the server has just
    gone away."""

    def create_table(self) -> None:
        with schema_locked(self.datastore):
            super().create_table()

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return tried_in_time(
            self.datastore, lambda: postgres_insert_once(self, stored_events, **kwargs)
        )


def tried_in_time(datastore: PostgresDatastore, attempt: Callable[[], R]) -> R:
    """``attempt()`` (one try of a store call), tried again on another connection when its
    connection failed, as the library tries its own (``INSERT_TRIES_MAX`` times,
    ``INSERT_RETRY_WAIT_SECONDS`` apart), but only while a wait and one more try (its wait
    for a connection included) end before this thread's store deadline
    (``store_calls_until``: the writer's group), so that the writer is free again by the
    time its callers are answered. The first try is always made: a write held up past
    its deadline (a hung store) lands once the store answers, which the answer its
    callers had (``outcome_unknown``) allows; the ledger itself takes no snapshot past
    the deadline."""
    tries = 0
    while True:
        try:
            return attempt()
        except (InterfaceError, OperationalError):
            tries += 1
            left = seconds_left()
            room = INSERT_RETRY_WAIT_SECONDS + datastore.pool.timeout
            if tries >= INSERT_TRIES_MAX or (left is not None and left < room):
                raise
        time.sleep(INSERT_RETRY_WAIT_SECONDS)


def postgres_after_query(events: Any) -> Composed:
    """The events after a version in each of many streams: parameters are the stream ids
    and, in the same order, the version after which to read each.

    Each stream is read by its own index lookup (``LATERAL``), whatever the planner
    knows of the table: as a plain join, on a table without statistics yet (a new
    database, before autovacuum's first ANALYZE) it estimated tens of thousands of rows
    and hashed the unnested ids against a sequential scan of the whole events table,
    for each group's catch-up. (The inner ORDER BY also keeps the planner from
    flattening the subquery back into that join.) The arguments go in binary, as the
    write function's do."""
    return SQL(
        "SELECT wanted.id AS originator_id, e.originator_version, e.topic, e.state "
        "FROM unnest(%b::uuid[], %b::int[]) AS wanted(id, after) "
        "CROSS JOIN LATERAL (SELECT originator_version, topic, state FROM {schema}.{table} "
        "WHERE originator_id = wanted.id AND originator_version > wanted.after "
        "ORDER BY originator_version) AS e "
        "ORDER BY wanted.id, e.originator_version"
    ).format(
        schema=Identifier(events.datastore.schema),
        table=Identifier(events.events_table_name),
    )


class PingIfIdle:
    """The pool's check of a connection it hands out: a ping (one round trip), but only
    for a connection that was last handed out more than ``PING_IDLE_SECONDS`` ago.

    The library pings every connection it hands out (pre-ping), so that those a
    restarted server broke are replaced rather than failing a request: a round trip
    before each read and write, several per group write. A connection handed out a
    moment ago and given back was working then: had its last use failed, psycopg would
    have marked it broken and the pool dropped it on its return. So only one idle for a
    while, as every pooled connection is across a server restart, is pinged."""

    def __init__(self) -> None:
        self._handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        # Pings that found their connection dropped (``reading_retried`` reads this).
        self.failed_pings = 0

    def __call__(self, connection: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        last = self._handed_out.get(connection)
        self._handed_out[connection] = now
        if last is None or now - last >= PING_IDLE_SECONDS:
            try:
                ConnectionPool.check_connection(connection)
            except psycopg.Error:
                self.failed_pings += 1
                raise


# The check installed on each of our pools, for ``reading_retried`` to ask.
_pool_checks: weakref.WeakKeyDictionary[ConnectionPool[Any], PingIfIdle] = (
    weakref.WeakKeyDictionary()
)


class LedgerPostgresFactory(PostgresFactory):
    aggregate_recorder_class = LedgerPostgresAggregateRecorder
    application_recorder_class = LedgerPostgresApplicationRecorder

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        kwargs = postgres_connection_kwargs(self.datastore)
        connect_timeout = self.env.get(self.POSTGRES_CONNECT_TIMEOUT)
        if connect_timeout:
            kwargs["connect_timeout"] = int(connect_timeout)
        statement_timeout = self.env.get(STATEMENT_TIMEOUT_KEY)
        if statement_timeout:
            kwargs["options"] = f"-c statement_timeout={int(statement_timeout) * 1000}"
        given = self.env.get(LIVENESS_ENV_KEY) or ""
        kwargs.update(tcp_liveness(int(statement_timeout or STORE_TIMEOUT_SECONDS), given))
        # The connection returned last goes out first: the writer's one write a group
        # then runs on the same server process group after group, where the pool's
        # queue would take each group to the process idle longest, all of them in turn
        # (eight, cold): the server's CPU per hot transfer was 0.14-0.15 against
        # 0.17-0.20 ms (docs/benchmarks.md, "Fourteenth session"). The pool's shrinking
        # still closes the connections idle longest.
        hand_out_last_returned(self.datastore.pool)
        if strtobool(self.env.get(self.POSTGRES_PRE_PING) or "no"):
            check = PingIfIdle()
            set_pool_check(self.datastore.pool, check)
            _pool_checks[self.datastore.pool] = check


def reading_retried(datastore: PostgresDatastore, read: Callable[[psycopg.Cursor[Any]], R]) -> R:
    """``read`` run on a cursor of a pooled connection (autocommit: one round trip per
    statement), tried once more when the server dropped the connection: a restart cuts
    every pooled connection, and the first use of each fails.

    A dropped connection shows in two ways: the read's own connection is broken after
    the error (one used within ``PING_IDLE_SECONDS`` is handed out unchecked), or the
    pool's ping on hand-out failed, after which psycopg_pool waits a second before
    trying another, as long as its whole wait lasts, and answers a pool timeout. Either
    way the pool's idle connections are checked at once (the dead ones are replaced) and
    ``read`` runs again. Reads only: a read runs twice harmlessly. A statement timeout,
    or a server found down with no connection dropped on the way, is not retried: the
    caller answers the store fault it is."""
    check = _pool_checks.get(datastore.pool)
    for attempt_number in range(DROPPED_CONNECTION_RETRIES + 1):
        failed_pings = _failed_pings(check)
        connection: psycopg.Connection[Any] | None = None
        try:
            with datastore.get_connection() as connection, connection.cursor() as cursor:
                return read(cursor)
        except (InterfaceError, OperationalError):
            if not _dropped(connection, check, failed_pings):
                raise
            if attempt_number == DROPPED_CONNECTION_RETRIES:
                raise
            datastore.pool.check()
    raise AssertionError("unreachable")


def _in_transaction(connection: psycopg.Connection[Any]) -> bool:
    """Whether ``connection`` holds a transaction to roll back (a connection the server
    cut holds none: its transaction ended with it)."""
    if connection.broken or connection.closed:
        return False
    return connection.info.transaction_status != TransactionStatus.IDLE


def _failed_pings(check: PingIfIdle | None) -> int:
    return 0 if check is None else check.failed_pings


def _dropped(
    connection: psycopg.Connection[Any] | None, check: PingIfIdle | None, failed_pings: int
) -> bool:
    """Whether a failed use of a pooled connection met one the server had dropped: the
    connection handed out is broken after the error, or none was handed out and the
    pool's ping on hand-out failed since ``failed_pings`` was read."""
    if connection is not None:
        return bool(connection.broken)
    return _failed_pings(check) > failed_pings


def read_with(recorder: PostgresApplicationRecorder, read: Callable[[psycopg.Cursor[Any]], R]) -> R:
    """``read`` run on a cursor for reads of the events (and snapshots) tables: our
    recorder's (``read``: one round trip per statement, a dropped connection tried once
    more), else in a transaction of the library's (which rolls back after)."""
    if isinstance(recorder, LedgerPostgresApplicationRecorder):
        return recorder.read(read)
    with recorder.datastore.transaction(commit=False) as cursor:
        return read(cursor)
