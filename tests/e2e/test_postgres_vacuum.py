"""The events table's writers and PostgreSQL's maintenance (decision 0039): VACUUM,
ANALYZE and autovacuum hold the table in ``SHARE UPDATE EXCLUSIVE`` mode while they
work, and a write must not wait for them. Under the library's ``LOCK TABLE … IN
EXCLUSIVE MODE`` it did: autovacuum that got the table between two writes held every
writer until PostgreSQL's deadlock check cancelled it a second later (the "1 s stall"),
and an anti-wraparound vacuum, never cancelled, would have held them for its whole run.

The writers still commit one at a time, in the order they asked (tests/e2e/
test_write_lock.py), and a writer of an older version, which holds the table in
``EXCLUSIVE`` mode, is still waited for; this version's writers never run the older
version's write function."""

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.postgres import LedgerPostgresApplicationRecorder, writers_lock_key
from app.persistence.streams import events_after
from tests.conftest import store_env

pytestmark = pytest.mark.postgres

# A write's deadline here: long enough for a loaded machine, short enough that a write
# held by the maintenance's lock fails the test instead of hanging it.
WRITE_TIMEOUT_SECONDS: Final = 5.0
# How long the maintenance (or an older writer) holds the table while the test checks.
HOLD_SECONDS: Final = 0.5
WAIT_SECONDS: Final = 30.0

# The write function as the versions before decision 0039 create it at their start,
# word for word (``write_function`` at 7606a53), under the name they gave it.
OLDER_WRITE_FUNCTION_NAME: Final = "{channel}_append"
OLDER_WRITE_FUNCTION: Final = (
    "CREATE OR REPLACE FUNCTION {schema}.{function}("
    "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
    "lock_timeout_ms integer, known bigint, others_max integer) "
    "RETURNS TABLE (log_position bigint, stream_id {id_type}, stream_version bigint, "
    "stream_topic text, stream_state bytea, refused text) "
    "LANGUAGE plpgsql AS $BODY$ "
    "DECLARE written bigint[]; "
    "BEGIN "
    "PERFORM set_config('lock_timeout', lock_timeout_ms || 'ms', true); "
    "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
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
)


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    env = {**store_env(postgres_url), "WRITE_TIMEOUT_SECONDS": str(WRITE_TIMEOUT_SECONDS)}
    with Ledger(env) as ledger:
        ledger.open_account(OpenAccount("issuance", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("user", "CREDITS"))
        yield ledger


def events_table(ledger: Ledger) -> str:
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)
    return f"{recorder.datastore.schema}.{recorder.events_table_name}"


@pytest.mark.parametrize(
    "maintenance", ["ANALYZE {table}", "LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE"]
)
def test_writes_go_on_while_maintenance_holds_the_events_table(
    ledger: Ledger, postgres_url: str, maintenance: str
) -> None:
    table = events_table(ledger)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)
    with psycopg.connect(postgres_url) as maintainer:
        # ANALYZE in a transaction holds the table's SHARE UPDATE EXCLUSIVE lock to its
        # end, as VACUUM and autovacuum hold it while they work.
        maintainer.execute(maintenance.format(table=table))
        [(mode,)] = maintainer.execute(
            "SELECT mode FROM pg_locks WHERE relation = %s::regclass AND pid = "
            "pg_backend_pid() AND granted",
            (table,),
        ).fetchall()
        assert mode == "ShareUpdateExclusiveLock"
        outcome = ledger.record_transfer(RecordTransfer("t-1", "issuance", "user", 5))
        assert outcome.transfer.amount == 5
        with recorder.write_lock(WRITE_TIMEOUT_SECONDS) as held:
            assert held, "the writers' lock waited for the maintenance"
            assert recorder.insert_events([StoredEvent(uuid4(), 0, "test:Written", b"{}")])
        maintainer.rollback()
    assert ledger.get_account("user").balance == 5


def older_write(older: psycopg.Connection[Any], table: str, stream: UUID, version: int) -> int:
    """What a writer of an older version does in its transaction: the table in
    ``EXCLUSIVE`` mode, then its insert (uncommitted); the event's notification id."""
    older.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    [(older_id,)] = older.execute(
        f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, 'test:Older', '\\x7b7d') RETURNING notification_id",
        (stream, version),
    ).fetchall()
    return int(older_id)


def test_a_writer_holding_the_table_in_exclusive_mode_is_waited_for(
    ledger: Ledger, postgres_url: str
) -> None:
    """An older version's writer (or the library's own insert) takes the table in
    ``EXCLUSIVE`` mode: a write that comes meanwhile commits after it, with a later
    notification id, so a reader following the log misses neither; and it reads what
    others wrote (decision 0027) only once the older writer has committed, so it brings
    that writer's event back."""
    table = events_table(ledger)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)

    def write() -> tuple[Sequence[int] | None, list[StoredEvent] | None]:
        ids = recorder.insert_events([StoredEvent(uuid4(), 0, "test:Written", b"{}")])
        return ids, recorder.others_written()

    older_stream = uuid4()
    with psycopg.connect(postgres_url) as older, ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(write).result(WAIT_SECONDS)  # the pool's thread follows the log now
        older_id = older_write(older, table, older_stream, 0)
        waiting = pool.submit(write)
        time.sleep(HOLD_SECONDS)
        assert not waiting.done(), "a write overtook a writer holding the table"
        older.commit()
        ids, others = waiting.result(WAIT_SECONDS)
    assert ids is not None
    assert list(ids) == [ids[0]]
    assert ids[0] > older_id
    assert others is not None
    assert [(e.originator_id, e.topic) for e in others] == [(older_stream, "test:Older")]


def test_the_write_lock_reads_ahead_once_a_writer_holding_the_table_has_committed(
    ledger: Ledger, postgres_url: str
) -> None:
    """The write lock's read of the group's streams (decision 0018) comes after an older
    version's writer that held the table: it sees that writer's event, and the write
    under the lock cannot lose a race to it."""
    table = events_table(ledger)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)
    stream = uuid4()
    assert recorder.insert_events([StoredEvent(stream, 0, "test:Written", b"{}")])

    def read_under_the_lock() -> dict[UUID, list[StoredEvent]] | None:
        with recorder.write_lock(WAIT_SECONDS, {stream: 0}) as held:
            assert held
            return events_after(recorder, {stream: 0})

    with psycopg.connect(postgres_url) as older, ThreadPoolExecutor(max_workers=1) as pool:
        older_write(older, table, stream, 1)
        waiting = pool.submit(read_under_the_lock)
        time.sleep(HOLD_SECONDS)
        assert not waiting.done(), "the write lock was held with a writer holding the table"
        older.commit()
        found = waiting.result(WAIT_SECONDS)
    assert found is not None
    assert [(e.originator_version, e.topic) for e in found[stream]] == [(1, "test:Older")]


# The write lock's timeout, and the two holds that take it past its timeout when each of
# its two waits has a timeout of its own: the table's, ended at three quarters of it (an
# older version's writer), then the writers' lock, ended at 1.4 times it.
SPLIT_LOCK_TIMEOUT_SECONDS: Final = 2.0
TABLE_HELD_SECONDS: Final = 1.5
WRITERS_LOCK_HELD_SECONDS: Final = 1.3


def test_the_write_locks_waits_for_the_table_and_the_writers_lock_end_by_its_timeout(
    ledger: Ledger, postgres_url: str
) -> None:
    """The write lock waits for the table (an older version's writer holds it), then for
    the writers' lock: it waits for the second only for what is left of its timeout, so
    that it answers "not free in time" by then (decision 0018: at most until the
    group's earliest deadline), not after waiting up to its whole timeout twice."""
    table = events_table(ledger)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)
    key_class, key = writers_lock_key(recorder.datastore.schema, recorder.events_table_name)

    def try_the_lock() -> bool:
        with recorder.write_lock(SPLIT_LOCK_TIMEOUT_SECONDS) as held:
            return held

    with (
        psycopg.connect(postgres_url) as older,
        psycopg.connect(postgres_url) as writer,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        older.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        writer.execute("SELECT pg_advisory_xact_lock(%s, %s)", (key_class, key))
        asked = pool.submit(try_the_lock)
        time.sleep(TABLE_HELD_SECONDS)
        assert not asked.done(), "the write lock was held with a writer holding the table"
        older.commit()
        time.sleep(WRITERS_LOCK_HELD_SECONDS)
        writer.commit()
        held = asked.result(WAIT_SECONDS)
    assert not held, "the write lock waited past its timeout"
    with recorder.write_lock(SPLIT_LOCK_TIMEOUT_SECONDS) as held_after:
        assert held_after, "the lock stayed held after a wait that timed out"


def test_an_older_process_started_since_leaves_this_versions_writes_alone(
    ledger: Ledger, postgres_url: str
) -> None:
    """During a rolling upgrade a process of an older version that starts after this one
    (restarted, or scaled up) creates its write function again, with the table in
    ``EXCLUSIVE`` mode. This version's writers must not run that body: one holding the
    write lock (the table in ``ROW EXCLUSIVE`` mode and the writers' lock) would ask for
    ``EXCLUSIVE`` while another writer, holding ``ROW EXCLUSIVE``, waits for the
    writers' lock, and PostgreSQL cancels one of them as a deadlock a second later."""
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)
    env = {**store_env(postgres_url), "WRITE_TIMEOUT_SECONDS": str(WRITE_TIMEOUT_SECONDS)}
    with Ledger(env) as other, ThreadPoolExecutor(max_workers=1) as pool:
        other_recorder = other.recorder
        assert isinstance(other_recorder, LedgerPostgresApplicationRecorder)
        # The older process starts after both of this version's.
        with psycopg.connect(postgres_url, autocommit=True) as older:
            older.execute(
                SQL(OLDER_WRITE_FUNCTION).format(
                    schema=Identifier(recorder.datastore.schema),
                    function=Identifier(
                        OLDER_WRITE_FUNCTION_NAME.format(channel=recorder.channel_name)
                    ),
                    table=Identifier(recorder.events_table_name),
                    channel=Identifier(recorder.channel_name),
                    id_type=Identifier(recorder.datastore.originator_id_type),
                )
            )

        def write_under_the_lock() -> Sequence[int] | None:
            with other_recorder.write_lock(WAIT_SECONDS) as held:
                assert held
                return other_recorder.insert_events([StoredEvent(uuid4(), 0, "t:W", b"{}")])

        with recorder.write_lock(WAIT_SECONDS) as held:
            assert held
            waiting = pool.submit(write_under_the_lock)
            time.sleep(HOLD_SECONDS)
            assert not waiting.done(), "another writer wrote while the lock was held"
            ids = recorder.insert_events([StoredEvent(uuid4(), 0, "test:Written", b"{}")])
        other_ids = waiting.result(WAIT_SECONDS)
    assert ids is not None
    assert other_ids is not None
    assert ids[0] < other_ids[0]
