"""The SQLite recorder writes through one connection of its own, kept open: the same
rows, positions, errors and transactions as the library's pooled write, without the
pool's hand-out and with its statements compiled once."""

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.sqlite import SQLiteDatastore

from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.compat import ExecutemanySQLiteRecorder, on_new_sqlite_connections
from app.domain.values import transfer_uuid
from app.persistence.sqlite_subscription import (
    SMALL_WRITE_CACHE_KIB,
    SMALL_WRITE_EVENTS_MAX,
    WRITER_AUTOCHECKPOINT_PAGES,
    WRITER_CACHE_KIB,
    SubscribableSQLiteApplicationRecorder,
)
from app.persistence.stores import event_store_env, sqlite_url

LOCK_HELD_SECONDS: Final = 0.3
# ``PRAGMA synchronous`` as SQLite answers it.
NORMAL_SYNC: Final = 1
FULL_SYNC: Final = 2
READS: Final = 5


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[SubscribableSQLiteApplicationRecorder]:
    datastore = SQLiteDatastore(str(tmp_path / "events.sqlite"))
    made = SubscribableSQLiteApplicationRecorder(datastore)
    made.create_table()
    yield made
    made.close_writer()
    datastore.close()


def events(stream: UUID, versions: range) -> list[StoredEvent]:
    return [StoredEvent(stream, version, "topic", b'{"v":%d}' % version) for version in versions]


def stored_rows(path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(path) as reading:
        return reading.execute(
            "SELECT rowid, originator_id, originator_version FROM stored_events ORDER BY rowid"
        ).fetchall()


def test_writes_share_one_connection_and_answer_the_rows_rowids(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    first, second = uuid4(), uuid4()
    assert recorder.insert_events(events(first, range(3))) == [1, 2, 3]
    writer = recorder._writer
    assert writer is not None
    assert recorder.insert_events(events(second, range(2))) == [4, 5]
    assert recorder._writer is writer  # kept open, not handed out per write
    assert stored_rows(tmp_path / "events.sqlite") == [
        (1, first.hex, 0),
        (2, first.hex, 1),
        (3, first.hex, 2),
        (4, second.hex, 0),
        (5, second.hex, 1),
    ]
    # What the library's own pooled write would answer for the same rows, after them.
    pooled = ExecutemanySQLiteRecorder.insert_events(recorder, events(uuid4(), range(2)))
    assert pooled == [6, 7]
    assert recorder.insert_events(events(uuid4(), range(1))) == [8]


def test_a_refused_write_records_none_of_its_rows_and_the_next_write_succeeds(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    stream = uuid4()
    recorder.insert_events(events(stream, range(2)))
    with pytest.raises(IntegrityError):  # the library's error, as its own write raises
        recorder.insert_events([*events(uuid4(), range(1)), *events(stream, range(1, 2))])
    assert [row[2] for row in stored_rows(tmp_path / "events.sqlite")] == [0, 1]
    assert recorder.insert_events(events(stream, range(2, 3))) == [3]


def test_each_write_is_one_transaction_of_its_rows(
    recorder: SubscribableSQLiteApplicationRecorder,
) -> None:
    recorder.insert_events(events(uuid4(), range(1)))
    writer: Any = recorder._writer
    statements: list[str] = []
    writer._sqlite_conn.set_trace_callback(statements.append)
    recorder.insert_events(events(uuid4(), range(2)))
    assert statements[0] == "BEGIN"
    assert statements[-1] == "COMMIT"
    assert sum(statement.startswith("INSERT") for statement in statements) == 2


def test_a_write_waits_for_another_connections_write_lock_within_the_timeout(
    tmp_path: Path,
) -> None:
    datastore = SQLiteDatastore(str(tmp_path / "events.sqlite"), lock_timeout=10)
    recorder = SubscribableSQLiteApplicationRecorder(datastore)
    recorder.create_table()
    other = sqlite3.connect(
        tmp_path / "events.sqlite", isolation_level=None, check_same_thread=False
    )
    try:
        other.execute("BEGIN IMMEDIATE")
        releasing = threading.Timer(LOCK_HELD_SECONDS, other.rollback)
        releasing.start()
        started = time.monotonic()
        assert recorder.insert_events(events(uuid4(), range(1))) == [1]
        assert time.monotonic() - started >= LOCK_HELD_SECONDS * 0.9
        releasing.join()
    finally:
        other.close()
        recorder.close_writer()
        datastore.close()


def test_closing_the_writer_closes_its_connection_and_a_later_write_opens_another(
    recorder: SubscribableSQLiteApplicationRecorder,
) -> None:
    recorder.insert_events(events(uuid4(), range(1)))
    writer = recorder._writer
    assert writer is not None
    recorder.close_writer()
    assert writer.closed
    assert recorder._writer is None
    assert recorder.insert_events(events(uuid4(), range(1))) == [2]
    assert recorder._writer is not None


def test_a_ledger_closes_its_recorders_write_connection(tmp_path: Path) -> None:
    ledger = Ledger(event_store_env(sqlite_url(tmp_path / "ledger.sqlite")))
    ledger.open_account(OpenAccount("issuer", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS"))
    outcome = ledger.record_transfer(RecordTransfer("t1", "issuer", "alice", 5))
    recorder = ledger.recorder
    assert isinstance(recorder, SubscribableSQLiteApplicationRecorder)
    writer = recorder._writer
    assert writer is not None
    # The answer's position is the row the write put there, as the pool's write told it.
    with sqlite3.connect(tmp_path / "ledger.sqlite") as reading:
        (rowid,) = reading.execute(
            "SELECT rowid FROM stored_events WHERE originator_id = ? AND originator_version = 0",
            (transfer_uuid("t1").hex,),
        ).fetchone()
    assert outcome.position == rowid
    ledger.close()
    assert writer.closed


def test_the_write_lock_connection_is_each_threads_own_and_none_by_default(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    """Held by one thread, the lock's connection is that thread's alone: another
    thread's write goes through the recorder's own connection (and waits for the lock)."""
    with recorder.write_lock(timeout_seconds=5) as held:
        assert held
        assert recorder._held.connection is not None
        seen: list[object] = []
        other = threading.Thread(target=lambda: seen.append(recorder._held.connection))
        other.start()
        other.join()
        assert seen == [None]
        assert recorder.insert_events(events(uuid4(), range(1))) == [1]
    assert recorder._held.connection is None
    assert recorder.insert_events(events(uuid4(), range(1))) == [2]
    assert len(stored_rows(tmp_path / "events.sqlite")) == 2


def test_a_commit_that_fails_leaving_its_transaction_open_does_not_break_later_writes(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    stream = uuid4()
    recorder.insert_events(events(stream, range(1)))
    writer = recorder._writer
    assert writer is not None

    commit = writer.commit

    def commit_refused() -> None:  # as SQLite answers a COMMIT it cannot do yet: still open
        writer.commit = commit  # type: ignore[method-assign]  # the next one goes through
        raise sqlite3.OperationalError("database is locked")

    writer.commit = commit_refused  # type: ignore[method-assign]
    with pytest.raises(OperationalError):
        recorder.insert_events(events(stream, range(1, 2)))
    # Not left in its transaction: rolled back (or, had that failed, dropped).
    kept = recorder._writer_connection
    assert kept is None or not kept.in_transaction
    assert recorder.insert_events(events(stream, range(1, 3))) == [2, 3]
    assert [row[2] for row in stored_rows(tmp_path / "events.sqlite")] == [0, 1, 2]


def test_the_write_connection_keeps_a_large_page_cache_and_every_connection_checkpoints_late(
    recorder: SubscribableSQLiteApplicationRecorder,
) -> None:
    recorder.insert_events(events(uuid4(), range(SMALL_WRITE_EVENTS_MAX + 1)))
    writer = recorder._writer_connection
    assert writer is not None
    # Negative: a size in KiB, not in pages.
    assert writer.execute("PRAGMA cache_size").fetchone() == (-WRITER_CACHE_KIB,)
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (WRITER_AUTOCHECKPOINT_PAGES,)
    # The pool's connections (reads, and the snapshots' writes) checkpoint as late.
    with recorder.datastore.transaction(commit=False) as cursor:
        pooled = cursor.sqlite_cursor.connection
        assert tuple(pooled.execute("PRAGMA wal_autocheckpoint").fetchone()) == (
            WRITER_AUTOCHECKPOINT_PAGES,
        )
    # The library's own default, for contrast: a connection opened without the recorder.
    with sqlite3.connect(recorder.datastore.pool.db_name, uri=True) as plain:
        assert plain.execute("PRAGMA wal_autocheckpoint").fetchone() != (
            WRITER_AUTOCHECKPOINT_PAGES,
        )


def test_the_events_commit_with_a_sync_of_their_own_and_the_pools_commits_without(
    recorder: SubscribableSQLiteApplicationRecorder,
) -> None:
    """FULL (2): every commit syncs the WAL. NORMAL (1): a commit does not, the next FULL
    one syncs its frames with its own (the pool's commits are snapshots: optimisations)."""
    recorder.insert_events(events(uuid4(), range(1)))
    assert recorder.writer_pragma("synchronous") == FULL_SYNC
    with recorder.write_lock(timeout_seconds=5) as held:
        assert held
        locked = recorder._held.connection
        assert locked is not None
        assert locked.execute("PRAGMA synchronous").fetchone() == (FULL_SYNC,)
    with recorder.datastore.transaction(commit=False) as cursor:
        pooled = cursor.sqlite_cursor.connection
        assert tuple(pooled.execute("PRAGMA synchronous").fetchone()) == (NORMAL_SYNC,)


def test_a_ledgers_events_never_commit_through_the_pool_and_its_snapshots_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What lets the pool's commits go without a sync of their own: only snapshots (and
    the tables' creation) are written through it."""
    monkeypatch.setattr(ledger_module, "ACCOUNT_SNAPSHOT_INTERVAL", 3)
    ledger = Ledger(event_store_env(sqlite_url(tmp_path / "ledger.sqlite")))
    pooled_statements: list[str] = []
    on_new_sqlite_connections(
        ledger.recorder.datastore,  # type: ignore[attr-defined]
        lambda connection: connection.set_trace_callback(pooled_statements.append),
    )
    ledger.open_account(OpenAccount("issuer", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS"))
    for index in range(4):
        ledger.record_transfer(RecordTransfer(f"t{index}", "issuer", "alice", 1))
    ledger.record_batch(
        [RecordTransfer(f"b{index}", "issuer", "alice", 1) for index in range(4)], atomic=True
    )
    ledger.close()
    inserts = [s for s in pooled_statements if s.lstrip().upper().startswith("INSERT")]
    assert inserts  # the snapshots
    assert all("snapshots" in statement for statement in inserts)
    assert not any("stored_events" in statement for statement in inserts)


def test_the_write_connections_settings_are_read_from_it_once_it_is_open(
    recorder: SubscribableSQLiteApplicationRecorder,
) -> None:
    """What a benchmark's floor is given: the write connection's own settings, which a
    pool's connection does not share (its page cache is SQLite's default)."""
    assert recorder.writer_pragma("journal_mode") == "wal"  # no write yet: a pool's
    assert recorder.writer_pragma("cache_size") != -WRITER_CACHE_KIB
    recorder.insert_events(events(uuid4(), range(SMALL_WRITE_EVENTS_MAX + 1)))
    assert recorder.writer_pragma("cache_size") == -WRITER_CACHE_KIB
    assert recorder.writer_pragma("wal_autocheckpoint") == WRITER_AUTOCHECKPOINT_PAGES
    assert recorder.writer_pragma("journal_mode") == "wal"
    recorder.insert_events(events(uuid4(), range(1)))  # a small write: the small cache
    assert recorder.writer_pragma("cache_size") == -SMALL_WRITE_CACHE_KIB


def test_the_write_connections_page_cache_is_sized_for_each_write(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    """A small write's commit walks the whole page cache when the write split an index
    page out of order: the small writes run with a small cache, a large write with the
    large one (its pages must all fit), and the small ones after it shrink it again."""

    def cache_kib() -> int:
        writer = recorder._writer_connection
        assert writer is not None
        size: int = writer.execute("PRAGMA cache_size").fetchone()[0]
        return -size

    recorder.insert_events(events(uuid4(), range(SMALL_WRITE_EVENTS_MAX)))
    assert cache_kib() == SMALL_WRITE_CACHE_KIB
    recorder.insert_events(events(uuid4(), range(SMALL_WRITE_EVENTS_MAX + 1)))
    assert cache_kib() == WRITER_CACHE_KIB
    recorder.insert_events(events(uuid4(), range(1)))
    assert cache_kib() == SMALL_WRITE_CACHE_KIB
    assert len(stored_rows(tmp_path / "events.sqlite")) == 2 * SMALL_WRITE_EVENTS_MAX + 2


def test_the_recorders_reads_keep_their_statements_compiled(
    recorder: SubscribableSQLiteApplicationRecorder,
) -> None:
    recorder.insert_events(events(uuid4(), range(3)))
    with recorder.datastore.transaction(commit=False) as cursor:
        reader = cursor.sqlite_cursor.connection  # the pool's one idle connection after this
    compiled: list[str] = []

    def authorize(action: int, argument: str | None, *_: object) -> int:
        # Asked only while a statement compiles: once with SQLITE_SELECT per select.
        if action == sqlite3.SQLITE_SELECT or argument == "BEGIN":
            compiled.append(argument or "SELECT")
        return sqlite3.SQLITE_OK

    reader.set_authorizer(authorize)
    for _ in range(READS):
        assert len(recorder.select_notifications(1, 10)) == 3
    reader.set_authorizer(None)
    # Its BEGIN and its query compiled once each (the library's pool compiles them on
    # every read: it caches one statement).
    assert sorted(compiled) == ["BEGIN", "SELECT"]


def test_each_state_is_stored_as_the_very_blob_of_its_bytes(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    stream = uuid4()
    written = events(stream, range(2))
    recorder.insert_events(written)
    with sqlite3.connect(tmp_path / "events.sqlite") as reading:
        stored = reading.execute(
            "SELECT typeof(state), state FROM stored_events ORDER BY rowid"
        ).fetchall()
    assert stored == [("blob", event.state) for event in written]
    assert [event.state for event in recorder.select_events(stream)] == [
        event.state for event in written
    ]


def test_a_write_that_fails_outside_sqlite_leaves_no_transaction_open_for_the_next(
    recorder: SubscribableSQLiteApplicationRecorder, tmp_path: Path
) -> None:
    recorder.insert_events(events(uuid4(), range(1)))
    # A version SQLite cannot hold: the driver raises OverflowError (not a sqlite3
    # error) after the write's BEGIN.
    with pytest.raises(OverflowError):
        recorder.insert_events([StoredEvent(uuid4(), 2**64, "topic", b"{}")])
    assert recorder.insert_events(events(uuid4(), range(1))) == [2]
    assert [row[0] for row in stored_rows(tmp_path / "events.sqlite")] == [1, 2]
