"""PostgreSQL as the library configures it, with every wait bounded, and a write lock
that a starving command can hold across its read and its write.

The library's factory takes a pool wait (``POSTGRES_CONNECT_TIMEOUT``) and a lock
timeout, but no timeout for establishing a connection (libpq waits as long as TCP does)
and none for a statement. Selected with
``PERSISTENCE_MODULE=app.persistence.postgres:LedgerPostgresFactory``; it reads one more
key, ``POSTGRES_STATEMENT_TIMEOUT`` (seconds), and gives libpq the pool's wait
(``POSTGRES_CONNECT_TIMEOUT``) as its connect timeout.
"""

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import psycopg.errors
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import Environment
from psycopg.pq import TransactionStatus
from psycopg.sql import SQL, Identifier, Literal

from app.compat import postgres_connection_kwargs, postgres_insert_on

STATEMENT_TIMEOUT_KEY = "POSTGRES_STATEMENT_TIMEOUT"
# PostgreSQL's lock_timeout of 0 means "wait for ever": a wait is at least this long.
LOCK_WAIT_MIN_MILLISECONDS: Final = 1


class LedgerPostgresApplicationRecorder(PostgresApplicationRecorder):
    """The library's recorder, plus ``write_lock`` (``app/persistence/write_lock.py``).

    The lock is the one every writer of the events table already takes in its insert
    transaction (``LOCK TABLE … IN EXCLUSIVE MODE``, which keeps notification ids in
    commit order): held from before the read, it makes the read and the write one
    critical section. PostgreSQL grants a table lock to its waiters in the order they
    asked, so a command waiting for it is not overtaken by a writer that came later."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = threading.local()

    @contextmanager
    def write_lock(self, timeout_seconds: float) -> Iterator[bool]:
        with self.datastore.get_connection() as connection:
            held = self._lock(connection, timeout_seconds)
            self._held.connection = connection if held else None
            try:
                yield held
            finally:
                self._held.connection = None
                if connection.info.transaction_status != TransactionStatus.IDLE:
                    connection.execute("ROLLBACK")

    def _lock(self, connection: psycopg.Connection[Any], timeout_seconds: float) -> bool:
        milliseconds = max(LOCK_WAIT_MIN_MILLISECONDS, math.ceil(timeout_seconds * 1000))
        try:  # one round trip
            connection.execute(
                SQL(
                    "BEGIN; SET LOCAL lock_timeout = {0}; LOCK TABLE {1}.{2} IN EXCLUSIVE MODE"
                ).format(
                    Literal(f"{milliseconds}ms"),
                    Identifier(self.datastore.schema),
                    Identifier(self.events_table_name),
                )
            )
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            # Not free in time: by lock_timeout, or by the connection's statement_timeout
            # when that is the shorter (a write timeout set above the store timeout).
            connection.execute("ROLLBACK")
            return False
        return True

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        connection: psycopg.Connection[Any] | None = getattr(self._held, "connection", None)
        if connection is None:
            inserted: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return inserted
        self._held.connection = None  # one write per hold: the commit releases the lock
        try:
            notification_ids = postgres_insert_on(self, connection, stored_events, **kwargs)
            connection.execute("COMMIT")
        except psycopg.IntegrityError as error:
            raise IntegrityError(str(error)) from error
        except psycopg.OperationalError as error:
            raise OperationalError(str(error)) from error
        except psycopg.Error as error:
            raise PersistenceError(str(error)) from error
        return notification_ids


class LedgerPostgresFactory(PostgresFactory):
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
