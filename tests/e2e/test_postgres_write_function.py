"""The events table's write as one server-side function (decision 0027), against the
real throwaway PostgreSQL server: one statement and one round trip per write, the
library's table lock and notification kept, and each write bringing back what other
writers committed since the same thread's previous write, so that a writer's cache
follows other processes without a read of its own."""

import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any, Final
from uuid import UUID, uuid4

import psycopg
import psycopg.pq
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

import app.application.ledger as ledger_module
import app.persistence.postgres as postgres_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import InsufficientFundsError
from app.persistence.postgres import LedgerPostgresApplicationRecorder, insert_on
from tests.conftest import store_env

pytestmark = pytest.mark.postgres

WRITERS: Final = 4
WRITES_PER_WRITER: Final = 30
EVENTS_PER_WRITE_MAX: Final = 3
NOTIFY_WAIT_SECONDS: Final = 10.0
THREAD_WAIT_SECONDS: Final = 60.0
UNIT: Final = "CREDITS"
ISSUER: Final = "system:issuance"
HOT: Final = "user:hot"


def recorder_of(ledger: Ledger) -> LedgerPostgresApplicationRecorder:
    assert isinstance(ledger.recorder, LedgerPostgresApplicationRecorder)
    return ledger.recorder


def new_events(count: int) -> list[StoredEvent]:
    return [StoredEvent(uuid4(), 0, "test:Written", b"{}") for _ in range(count)]


def keys(events: list[StoredEvent]) -> list[tuple[UUID | str, int]]:
    return [(event.originator_id, event.originator_version) for event in events]


@contextmanager
def counting_round_trips(connection: psycopg.Connection[Any]) -> Iterator[Callable[[], int]]:
    """How many times the server said it was ready for the next query (libpq's trace):
    one per round trip. The count is taken when the block ends."""
    with tempfile.TemporaryFile("w+") as trace:
        connection.pgconn.trace(trace.fileno())
        counted: list[int] = []
        try:
            yield lambda: counted[0]
        finally:
            connection.pgconn.untrace()
            trace.flush()
            trace.seek(0)
            counted.append(trace.read().count("ReadyForQuery"))


def test_a_write_is_one_statement_in_its_own_transaction_or_the_one_holding_the_lock(
    postgres_url: str,
) -> None:
    """On its own a write is one statement (one round trip, its own transaction); in a
    transaction that holds the table lock (decision 0018), the call and its COMMIT go in
    one pipeline, and the commit releases the lock. A conflict is psycopg's error and
    leaves the connection out of any transaction; the ids are the log's, in order."""
    with Ledger(store_env(postgres_url)) as ledger:
        recorder = recorder_of(ledger)
        stream = uuid4()
        events = [StoredEvent(stream, version, "topic", b"{}") for version in range(4)]
        table = f"{recorder.datastore.schema or 'public'}.{recorder.events_table_name}"
        with recorder.datastore.get_connection() as connection:
            insert_on(recorder, connection, new_events(1), begin=True)  # prepared once
            with counting_round_trips(connection) as round_trips:
                rows = insert_on(recorder, connection, events[:2], begin=True)
            assert round_trips() == 1
            assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            connection.execute("BEGIN")
            connection.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            with counting_round_trips(connection) as round_trips:
                rows += insert_on(recorder, connection, events[2:], begin=False)
            assert round_trips() == 1
            assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            locks = connection.execute(
                "SELECT mode FROM pg_locks WHERE relation = %s::regclass AND pid = %s",
                (table, connection.info.backend_pid),
            ).fetchall()
            assert locks == [], "the commit released the table lock"
            assert insert_on(recorder, connection, [], begin=True) == []
            refused = insert_on(recorder, connection, [events[0], *new_events(1)], begin=True)
            assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ids = [row["log_position"] for row in rows]
        assert all(row["stream_id"] is None for row in rows), "nothing to bring back yet"
        notifications = recorder.select_notifications(start=ids[0], limit=len(events) + 1)
        assert [n.id for n in notifications] == ids, "the refused write wrote nothing"
        assert [n.originator_version for n in notifications] == [0, 1, 2, 3]
        assert [row["log_position"] for row in refused] == [ids[-1]], "the log's head"
        assert "duplicate key" in refused[0]["refused"]


# Values whose text form needs quoting or escaping inside an array literal, and versions
# past each of PostgreSQL's smaller integer types.
AWKWARD_STATES: Final = (bytes(range(256)), b'{"a":"\\",\n"b":null}', b"", b"NULL")
AWKWARD_TOPICS: Final = ('t{1,"2"}', "NULL", " spaced\\ topic ", "t\u00e9\u2603")
AWKWARD_VERSIONS: Final = (0, 2**15, 2**31 + 1, 2**62)


def test_a_write_stores_every_id_version_topic_and_state_exactly_as_given(
    postgres_url: str,
) -> None:
    """The write's arguments travel in PostgreSQL's binary format: states with every byte
    value, topics with the array literal's special characters, and versions past
    smallint and integer in one write come back unchanged: read from the table, and
    brought back by another writer's next write."""
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        written = [
            StoredEvent(uuid4(), version, topic, state)
            for version, topic, state in zip(
                AWKWARD_VERSIONS, AWKWARD_TOPICS, AWKWARD_STATES, strict=True
            )
        ]
        recorder_of(theirs).insert_events(new_events(1))  # so that it follows the log
        recorder_of(mine).insert_events(written)
        for event in written:
            assert list(recorder_of(mine).select_events(event.originator_id)) == [event]
        recorder_of(theirs).insert_events(new_events(1))
        assert recorder_of(theirs).others_written() == written


def test_a_write_notifies_the_listeners_of_the_events_table(postgres_url: str) -> None:
    """Subscriptions (the projections, ``ledger deliver``) wake on the library's channel."""
    with Ledger(store_env(postgres_url)) as ledger:
        recorder = recorder_of(ledger)
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f'LISTEN "{recorder.channel_name}"')
            recorder.insert_events(new_events(1))
            notified = list(listener.notifies(timeout=NOTIFY_WAIT_SECONDS, stop_after=1))
        assert [n.channel for n in notified] == [recorder.channel_name]


def test_a_write_brings_back_what_others_committed_since_this_threads_previous_one(
    postgres_url: str,
) -> None:
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        recorder, other = recorder_of(mine), recorder_of(theirs)
        assert not recorder.follows_log()
        recorder.insert_events(new_events(2))
        assert recorder.others_written() == [], "a first write brings back nothing"
        assert recorder.follows_log()
        first, second = new_events(2), new_events(1)
        other.insert_events(first)
        other.insert_events(second)
        recorder.insert_events(new_events(1))
        assert keys(recorder.others_written() or []) == keys(first + second)
        assert recorder.others_written() == [], "taken once"
        recorder.insert_events(new_events(1))
        assert recorder.others_written() == [], "its own writes are not brought back"


def test_a_refused_write_brings_back_what_others_wrote_and_follows_on_from_the_head(
    postgres_url: str,
) -> None:
    """A lost race writes nothing, raises the library's conflict, and still brings back
    what others wrote since this thread's last write (the race's cause among them)."""
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        recorder, other = recorder_of(mine), recorder_of(theirs)
        stream = uuid4()
        recorder.insert_events([StoredEvent(stream, 0, "test:Written", b"{}")])
        theirs_first = [StoredEvent(stream, 1, "test:Written", b"{}")]
        other.insert_events(theirs_first)
        head = recorder.max_notification_id()
        with pytest.raises(IntegrityError):
            recorder.insert_events([StoredEvent(stream, 1, "test:Mine", b"{}"), *new_events(1)])
        assert recorder.max_notification_id() == head, "nothing written"
        assert keys(recorder.others_written() or []) == keys(theirs_first)
        later = new_events(1)
        other.insert_events(later)
        recorder.insert_events(new_events(1))
        assert keys(recorder.others_written() or []) == keys(later), "from the head on"


def test_a_thread_that_others_outpaced_past_the_bound_is_told_it_lost_track(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "OTHERS_WRITTEN_MAX", 3)
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        recorder = recorder_of(mine)
        recorder.insert_events(new_events(1))
        recorder_of(theirs).insert_events(new_events(4))
        recorder.insert_events(new_events(1))
        assert recorder.others_written() is None
        recorder_of(theirs).insert_events(new_events(3))
        recorder.insert_events(new_events(1))
        assert len(recorder.others_written() or []) == 3, "following again from there"


def test_concurrent_writers_each_get_back_exactly_what_the_others_wrote_between_their_writes(
    postgres_url: str,
) -> None:
    """Writers of several processes (a ledger each) writing at once: each is brought
    back every event the others committed between its first write and its last, once,
    in log order, and none of its own (the table lock orders the log's positions as
    commits, so a write sees every earlier position committed)."""
    start = threading.Barrier(WRITERS)

    def write(
        recorder: LedgerPostgresApplicationRecorder, seed: int
    ) -> tuple[list[int], list[StoredEvent]]:
        sizes = random.Random(seed)  # a workload, not secrets
        own: list[int] = []
        brought: list[StoredEvent] = []
        start.wait(THREAD_WAIT_SECONDS)
        for _ in range(WRITES_PER_WRITER):
            own += recorder.insert_events(new_events(sizes.randint(1, EVENTS_PER_WRITE_MAX))) or []
            others = recorder.others_written()
            assert others is not None
            brought += others
        return own, brought

    with ExitStack() as stack:
        ledgers = [stack.enter_context(Ledger(store_env(postgres_url))) for _ in range(WRITERS)]
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            futures = [
                pool.submit(write, recorder_of(ledger), n) for n, ledger in enumerate(ledgers)
            ]
            results = [future.result(THREAD_WAIT_SECONDS) for future in futures]
        log = recorder_of(ledgers[0]).select_notifications(start=1, limit=10_000)
    interleaved = 0
    for own, brought in results:
        owned = set(own)
        between = [n for n in log if own[0] < n.id < own[-1] and n.id not in owned]
        assert keys(brought) == [(n.originator_id, n.originator_version) for n in between]
        interleaved += len(between)
    assert interleaved > 0, "the writers never interleaved: nothing was tested"


def test_a_writer_catches_up_with_another_processs_write_through_its_own_next_write(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process spends from an account this writer has cached; this writer's
    next write, on other accounts, brings that back, so its write on the account after
    that neither reads the store first nor loses a race."""
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        open_and_fund(mine)  # HOT cached
        theirs.record_transfer(RecordTransfer("theirs", HOT, "user:1", 10))
        mine.record_transfer(RecordTransfer("calm", ISSUER, "user:2", 1))

        def no_read(*_: object) -> None:
            raise AssertionError("the writer read the store to catch up")

        monkeypatch.setattr(ledger_module, "events_after", no_read)
        assert_spends_the_rest(mine, theirs)
        assert (mine.conflicts, mine.locked_writes) == (0, 0)


def test_a_writer_that_lost_track_starts_a_new_cache_and_still_writes_right(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "OTHERS_WRITTEN_MAX", 2)
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        open_and_fund(mine)  # HOT cached
        for number in range(3):
            theirs.record_transfer(RecordTransfer(f"theirs:{number}", HOT, "user:1", 10))
        mine.record_transfer(RecordTransfer("calm", ISSUER, "user:2", 1))
        spent = mine.record_transfer(RecordTransfer("mine", HOT, "user:2", 70))
        assert spent.created
        assert mine.conflicts == 0, "HOT was read again, not raced on a stale copy"
        with pytest.raises(InsufficientFundsError):
            mine.record_transfer(RecordTransfer("too-much", HOT, "user:2", 1))
        assert theirs.get_account(HOT).balance == 0


def test_a_lost_race_is_explained_by_what_the_write_brought_back_without_a_read(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process spent from an account this writer had cached just before this
    writer's write on it: the write loses the race, and what it brought back says which
    stream moved (no heads query); the transfer runs again on the caught-up account."""
    with Ledger(store_env(postgres_url)) as mine, Ledger(store_env(postgres_url)) as theirs:
        open_and_fund(mine)  # HOT cached
        theirs.record_transfer(RecordTransfer("theirs", HOT, "user:1", 10))

        def no_heads(*_: object) -> None:
            raise AssertionError("the writer asked the store which streams moved")

        monkeypatch.setattr(ledger_module, "stream_heads", no_heads)
        assert_spends_the_rest(mine, theirs)
        assert mine.conflicts == 1


def open_and_fund(ledger: Ledger) -> None:
    """HOT holds 100 (and is in the ledger's cache), paid to user:1 and user:2."""
    ledger.open_account(OpenAccount(ISSUER, UNIT, allow_negative=True))
    for account in (HOT, "user:1", "user:2"):
        ledger.open_account(OpenAccount(account, UNIT))
    ledger.record_transfer(RecordTransfer("fund", ISSUER, HOT, 100))


def assert_spends_the_rest(mine: Ledger, theirs: Ledger) -> None:
    """After the other process took 10 of HOT's 100, this writer spends the other 90."""
    assert mine.record_transfer(RecordTransfer("mine", HOT, "user:2", 90)).created
    assert theirs.get_account(HOT).balance == 0
    assert theirs.get_account(HOT).debits_posted == 100


def test_one_writers_writes_in_a_row_run_on_one_server_process(postgres_url: str) -> None:
    """The pool hands out the connection returned last (``LedgerPostgresFactory``), so
    a writer's writes one after another run on the server process it wrote with last,
    however many others the pool holds idle: not on each of them in turn."""
    with Ledger(store_env(postgres_url)) as ledger:
        recorder = recorder_of(ledger)
        recorder.datastore.pool.wait()  # the pool's own connections all opened first
        with (
            recorder.datastore.get_connection() as first,
            recorder.datastore.get_connection() as second,
            recorder.datastore.get_connection() as third,
        ):
            for connection in (first, second, third):
                connection.execute("SELECT 1")
        for number in range(3):
            ledger.open_account(OpenAccount(f"user:{number}", UNIT))
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            writers = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE %s",
                (f"%{recorder.write_function_name}%",),
            ).fetchall()
    assert len(writers) == 1
