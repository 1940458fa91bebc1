"""The ledger's schema is created on PostgreSQL by one process at a time (decision 0032).

Processes starting together on a new database (``ledger project`` and the API processes
of ``ledger serve --workers N``) each create what they need: the log's tables and write
function, the views, the generation pointer, the keys, the feed, the digest.
PostgreSQL's ``CREATE … IF NOT EXISTS`` is not safe against a concurrent creator (the
second waits for the first's uncommitted catalog rows, then fails on a duplicate
``pg_type`` row), nor is ``CREATE OR REPLACE FUNCTION`` ("tuple concurrently
updated"). So every creation takes one advisory lock first, held to the end of its
transaction: the next creator finds the committed objects and skips them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from eventsourcing.postgres import PostgresDatastore

from app.compat import postgres_connection_kwargs

# The advisory lock's key, the same in every process of every version of the ledger
# ("ledger schema" in ASCII, cut to a bigint). Only creators of the schema take it.
SCHEMA_LOCK_KEY: Final = int.from_bytes(b"ledgersc", "big") >> 1
# How long a creator waits for another's creation (each takes milliseconds; one that
# waits behind a long write lock to check an index, or an upgrade step, takes longer).
# The creation's transaction has this statement timeout too, whatever its connection's
# own (a kept connection's is the store's 10 s): else a start-up behind a creation of
# over 10 s failed where it should have waited.
SCHEMA_LOCK_WAIT_SECONDS: Final = 60


@contextmanager
def creating_schema(connection: Any) -> Iterator[None]:
    """A transaction on ``connection`` (psycopg's, in autocommit mode) in which the
    schema lock is held from the start: what the block creates in it is committed
    before the next creator looks. On a SQLite connection nothing: each statement there
    is a write transaction of its own, one after the other under the file's lock."""
    if not isinstance(connection, psycopg.Connection):
        yield
        return
    with connection.transaction():
        connection.execute(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_WAIT_SECONDS}s'")
        connection.execute(f"SET LOCAL statement_timeout = '{SCHEMA_LOCK_WAIT_SECONDS}s'")
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        yield


@contextmanager
def schema_locked(datastore: PostgresDatastore) -> Iterator[None]:
    """The schema lock held while the block runs, for the library's recorders, whose
    ``create_table`` spans several transactions on the pool's connections (composite
    types each in their own, then tables, indexes and functions): it is held in a
    transaction of a connection of its own, outside the pool (which may have only
    one), and released when that ends, even if this process dies."""
    kwargs = {**postgres_connection_kwargs(datastore), "autocommit": True}
    with psycopg.connect(**kwargs) as connection, creating_schema(connection):
        yield
