"""PostgreSQL writes and the writer's reads in as few round trips as the protocol allows
(``app/persistence/postgres.py``): on a loaded machine each round trip waits for two
processes to be scheduled, and while a write holds the writers' lock, every other
process's write waits with it."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

import app.persistence.postgres as postgres_module
from app.application.ledger import Ledger
from app.compat import set_pool_check
from app.persistence.postgres import (
    LedgerPostgresApplicationRecorder,
    PingIfIdle,
    postgres_after_query,
    writers_lock_key,
)
from app.persistence.streams import events_after
from tests.conftest import store_env

pytestmark = pytest.mark.postgres

# More writes than the pool holds connections: every one of them has been used since.
WARM_WRITES: Final = 20
LOCK_WAIT_SECONDS: Final = 10.0
# A log large enough that reading all of it is the planner's worst choice.
LOG_STREAMS: Final = 2_000
EVENTS_PER_STREAM: Final = 10


class RoundTrips:
    """Counts the round trips of every connection the pool hands out (libpq's protocol
    trace: the server says ReadyForQuery once per round trip), pings included."""

    def __init__(self, trace: Any) -> None:
        self._trace = trace
        self._traced: list[psycopg.Connection[Any]] = []
        self._start = 0

    def trace(self, connection: psycopg.Connection[Any]) -> None:
        if connection not in self._traced:
            connection.pgconn.trace(self._trace.fileno())
            self._traced.append(connection)

    def since_last(self) -> int:
        self._trace.flush()
        self._trace.seek(0)
        text = self._trace.read()
        counted: int = text[self._start :].count("ReadyForQuery")
        self._start = len(text)
        return counted

    def stop(self) -> None:
        for connection in self._traced:
            if not connection.closed:
                connection.pgconn.untrace()


@contextmanager
def counted(recorder: LedgerPostgresApplicationRecorder) -> Iterator[RoundTrips]:
    """The recorder's pool, its connections traced as they are handed out, checked as
    the ledger checks them (a ping when idle for a while)."""
    ping = PingIfIdle()
    with tempfile.TemporaryFile("w+") as trace:
        round_trips = RoundTrips(trace)

        def check(connection: psycopg.Connection[Any]) -> None:
            round_trips.trace(connection)
            ping(connection)

        set_pool_check(recorder.datastore.pool, check)
        try:
            yield round_trips
        finally:
            round_trips.stop()


@pytest.fixture
def recorder(postgres_url: str) -> Iterator[LedgerPostgresApplicationRecorder]:
    with Ledger(store_env(postgres_url)) as ledger:
        assert isinstance(ledger.recorder, LedgerPostgresApplicationRecorder)
        yield ledger.recorder


def written(recorder: LedgerPostgresApplicationRecorder) -> StoredEvent:
    event = StoredEvent(uuid4(), 0, "test:Written", b"{}")
    assert recorder.insert_events([event])
    return event


def test_a_write_is_one_round_trip_and_a_ping_only_follows_a_pause(
    recorder: LedgerPostgresApplicationRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with counted(recorder) as round_trips:
        for _ in range(WARM_WRITES):
            written(recorder)
        round_trips.since_last()
        written(recorder)
        # The insert and its commit in one pipeline; the connection, used a moment ago,
        # is not pinged.
        assert round_trips.since_last() == 1
        monkeypatch.setattr(postgres_module, "PING_IDLE_SECONDS", 0.0)
        written(recorder)
        assert round_trips.since_last() == 2, "a connection idle for a while is pinged first"


def test_reads_under_the_write_lock_use_the_connection_that_holds_it_and_others_no_transaction(
    recorder: LedgerPostgresApplicationRecorder, postgres_url: str
) -> None:
    table = f"{recorder.datastore.schema or 'public'}.{recorder.events_table_name}"
    with counted(recorder) as round_trips:
        for _ in range(WARM_WRITES):
            written(recorder)
        round_trips.since_last()
        with recorder.reading() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert round_trips.since_last() == 1
        with recorder.write_lock(LOCK_WAIT_SECONDS) as held:
            assert held
            round_trips.since_last()
            with recorder.reading() as cursor:
                cursor.execute("SELECT pg_backend_pid() AS pid")
                row = cursor.fetchone()
                assert row is not None
            assert round_trips.since_last() == 1
            key_class, key = writers_lock_key(recorder.datastore.schema, recorder.events_table_name)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                [(holder,)] = admin.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
                    "AND classid::bigint = %s AND objid::bigint = %s AND granted",
                    (key_class, key & 0xFFFF_FFFF),
                ).fetchall()
                [(table_holder,)] = admin.execute(
                    "SELECT pid FROM pg_locks WHERE relation = %s::regclass "
                    "AND mode = 'RowExclusiveLock' AND granted",
                    (table,),
                ).fetchall()
            assert row["pid"] == holder == table_holder
            event = StoredEvent(uuid4(), 0, "test:Written", b"{}")
            assert recorder.insert_events([event])
            assert round_trips.since_last() == 1, "the held write commits in one round trip"


def test_a_catch_up_reads_each_stream_by_its_index_before_the_table_has_statistics(
    recorder: LedgerPostgresApplicationRecorder, postgres_url: str
) -> None:
    table = f"{recorder.datastore.schema or 'public'}.{recorder.events_table_name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    streams = [uuid4() for _ in range(LOG_STREAMS)]
    recorder.insert_events(
        [
            StoredEvent(stream, version, "test:Written", b"{}")
            for stream in streams
            for version in range(EVENTS_PER_STREAM)
        ]
    )
    wanted = dict.fromkeys(streams[:8], EVENTS_PER_STREAM - 3)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        [(reltuples,)] = admin.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,)
        ).fetchall()
        assert reltuples < 0, "never analyzed: the planner guesses the table's size"
        explained = admin.execute(
            psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + postgres_after_query(recorder),
            (list(wanted), list(wanted.values())),
        ).fetchone()
    assert explained is not None
    plan = explained[0]
    scanned = set(_scans_of(plan[0]["Plan"], recorder.events_table_name))
    assert "Seq Scan" not in scanned, plan
    assert scanned, plan
    newer = events_after(recorder, wanted)
    assert newer is not None
    assert {s: [e.originator_version for e in found] for s, found in newer.items()} == {
        stream: [EVENTS_PER_STREAM - 2, EVENTS_PER_STREAM - 1] for stream in wanted
    }


def _scans_of(node: dict[str, Any], table: str) -> Iterator[str]:
    """The kinds of scan a plan makes of ``table``."""
    if node.get("Relation Name") == table:
        yield str(node["Node Type"])
    for child in node.get("Plans", []):
        yield from _scans_of(child, table)


def test_the_lock_reads_the_held_streams_in_its_own_round_trip_and_later_reads_cost_none(
    recorder: LedgerPostgresApplicationRecorder,
) -> None:
    """A contended group's catch-up (decision 0018) is read with the lock: between the
    grant and the commit the writer waits for no read of the streams it named."""
    held_id, other_id = uuid4(), uuid4()
    later, other_later = (StoredEvent(i, 1, "test:Written", b"{}") for i in (held_id, other_id))
    recorder.insert_events([StoredEvent(i, 0, "test:Written", b"{}") for i in (held_id, other_id)])
    recorder.insert_events([later, other_later])
    with counted(recorder) as round_trips:
        for _ in range(WARM_WRITES):
            written(recorder)
        round_trips.since_last()
        with recorder.write_lock(LOCK_WAIT_SECONDS, {held_id: 0}) as held:
            assert held
            assert round_trips.since_last() == 1, "the lock and the read: one round trip"
            assert events_after(recorder, {held_id: 0}) == {held_id: [later]}
            assert round_trips.since_last() == 0
            # What was read ahead is taken once; a stream the lock did not read is read.
            both = events_after(recorder, {held_id: 0, other_id: 0})
            assert round_trips.since_last() == 1
            assert both == {held_id: [later], other_id: [other_later]}


def test_a_lock_not_free_in_time_reads_nothing_ahead_and_leaves_the_connection_clean(
    recorder: LedgerPostgresApplicationRecorder, postgres_url: str
) -> None:
    stream = uuid4()
    first = StoredEvent(stream, 0, "test:Written", b"{}")
    recorder.insert_events([first])
    table = f"{recorder.datastore.schema or 'public'}.{recorder.events_table_name}"
    with psycopg.connect(postgres_url) as holder:
        holder.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        with recorder.write_lock(0.1, {stream: -1}) as held:
            assert not held
            assert events_after(recorder, {stream: -1}) == {stream: [first]}
        holder.rollback()
    with recorder.write_lock(LOCK_WAIT_SECONDS, {stream: 0}) as held:
        assert held
        assert events_after(recorder, {stream: 0}) == {}
        assert recorder.insert_events([StoredEvent(stream, 1, "test:Written", b"{}")])
