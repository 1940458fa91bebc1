"""A PostgreSQL server restarted under a running ledger: the first reads after it
succeed, in the writer and in the views (``reading_retried``).

The restart cut every pooled connection, and the first use of each fails in one of two
ways, both covered: a connection used a moment ago is handed out unchecked
(``PING_IDLE_SECONDS``) and its read fails; one idle for longer is pinged, the ping
fails, and psycopg_pool then waits out its whole wait for a connection. Either way the
read is tried once more, on a connection that works."""

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.bootstrap import build_services, shutdown
from app.domain.errors import (
    LedgerError,
    OutcomeUnknownError,
    StoreUnavailableError,
    WriteTimeoutError,
)
from app.domain.values import account_uuid
from app.events.database import Database, PartSchema
from app.persistence import postgres
from app.persistence.faults import store_fault
from app.persistence.postgres import insert_on, reading_retried
from app.persistence.stores import event_store_env
from app.settings import Settings
from projections.backends import PostgresLedgerView
from projections.runner import open_view
from tests.api.helpers import ISSUER, open_account, open_issuer, record, transfer_body
from tests.support.pgserver import PostgresServer, running_postgres
from tests.support.waiting import eventually

# PING_IDLE_SECONDS for each way a dropped connection shows: never pinged (every
# connection counts as used a moment ago), or always pinged (every one counts as idle).
UNPINGED: Final = 3600.0
PINGED: Final = 0.0
PING_CASES: Final = [
    pytest.param(UNPINGED, id="used-a-moment-ago"),
    pytest.param(PINGED, id="idle-and-pinged"),
]
# What one retried read may take at most: the pool's wait for a connection (one second
# here) twice, with room for a loaded machine.
READ_BOUND_SECONDS: Final = 5.0
TRANSFERS_BEFORE: Final = 5
# Longer than a restart takes on a loaded machine: the stream stays contended across it.
CONTENDED_FOR_SECONDS: Final = 60.0
_databases = itertools.count()
# A write deadline shorter than the library's ten tries of an insert on a server that is
# down (each waits a second for a connection, then 0.2 s: some 12 s), and what the writer
# may take past it on a loaded machine (the two together still well short of those 12 s).
SHORT_WRITE_TIMEOUT_SECONDS: Final = 3
DEADLINE_SLACK_SECONDS: Final = 5.0
WRITER_WAIT_SECONDS: Final = 30.0
WRITE_ANSWERS_STORE_DOWN: Final = (StoreUnavailableError, OutcomeUnknownError, WriteTimeoutError)


@pytest.fixture(scope="module")
def restartable_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own (the session's is shared and must stay up)."""
    with running_postgres(fsync=False) as server:
        yield server


@pytest.fixture
def database_url(restartable_postgres: PostgresServer) -> str:
    return restartable_postgres.create_database(f"restart_{next(_databases)}")


def cut_by_the_server(connection: Any, database_url: str) -> None:
    """The server ends ``connection``'s session; raises as its next use does."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))
    connection.execute("SELECT 1")  # raises: the connection is gone


def restart(server: PostgresServer) -> None:
    server.stop()
    server.start()


def two_account_ledger(database_url: str, **settings: str) -> Ledger:
    """A ledger on the server with the issuer and alice open (closed again if either
    opening fails, so no writer thread outlives the test)."""
    ledger = Ledger({**event_store_env(database_url), **settings})
    try:
        ledger.open_account(OpenAccount(ISSUER, "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "CREDITS"))
    except BaseException:
        ledger.close()
        raise
    return ledger


@pytest.mark.parametrize("ping_idle_seconds", PING_CASES)
def test_the_writer_reads_again_on_the_first_use_after_a_restart(
    restartable_postgres: PostgresServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    ping_idle_seconds: float,
) -> None:
    monkeypatch.setattr(postgres, "PING_IDLE_SECONDS", ping_idle_seconds)
    ledger = two_account_ledger(database_url)
    try:
        sent = RecordTransfer("t1", ISSUER, "alice", 5)
        first = ledger.record_transfer(sent)
        assert first.created

        restart(restartable_postgres)

        # A resend reads the original's position back: the writer's first read.
        started = time.monotonic()
        again = ledger.record_transfer(sent)
        assert time.monotonic() - started < READ_BOUND_SECONDS
        assert not again.created
        assert again.position == first.position
        assert ledger.get_account("alice").balance == 5
    finally:
        ledger.close()


@pytest.mark.parametrize("ping_idle_seconds", PING_CASES)
def test_a_write_under_the_write_lock_takes_it_again_on_the_first_use_after_a_restart(
    restartable_postgres: PostgresServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    ping_idle_seconds: float,
) -> None:
    """A group touching a stream another process writes takes the store's write lock
    first (decision 0018): with its accounts cached, asking for the lock is its first
    use of a connection after the restart. Nothing is held on a connection the restart
    cut, so the lock is asked for again on a working one."""
    monkeypatch.setattr(postgres, "PING_IDLE_SECONDS", ping_idle_seconds)
    monkeypatch.setattr(ledger_module, "CONTENDED_SECONDS", CONTENDED_FOR_SECONDS)
    ledger = two_account_ledger(database_url)
    try:
        assert ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5)).created
        ledger._mark_contended([account_uuid("alice")])  # as after a race lost to another

        restart(restartable_postgres)

        started = time.monotonic()
        after = ledger.record_transfer(RecordTransfer("t2", ISSUER, "alice", 5))
        assert time.monotonic() - started < READ_BOUND_SECONDS
        assert after.created
        assert ledger.locked_writes == 1, "written under the write lock"
        assert ledger.get_account("alice").balance == 10
    finally:
        ledger.close()


def test_a_write_under_the_write_lock_whose_commit_answer_was_lost_answers_as_a_resend(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write under the lock committed, then the server cut the connection before its
    answer came back: whether it was written is not known there. It is written again on
    another connection, as the library does for its own writes: the store's unique key
    refuses the copy, and the command answers as a resend (never "nothing was written",
    after which a client could send the transfer again under a new id)."""
    monkeypatch.setattr(ledger_module, "CONTENDED_SECONDS", CONTENDED_FOR_SECONDS)
    cut: list[int] = []

    def committed_then_cut(recorder: Any, connection: Any, events: Any, *, begin: bool) -> Any:
        ids = insert_on(recorder, connection, events, begin=begin)
        if not begin and not cut:  # on the held connection, once: its answer is lost
            cut.append(connection.info.backend_pid)
            cut_by_the_server(connection, database_url)
        return ids

    ledger = two_account_ledger(database_url)
    try:
        ledger._mark_contended([account_uuid("alice")])
        monkeypatch.setattr(postgres, "insert_on", committed_then_cut)

        answer = ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5))

        assert cut, "the write went through the held connection"
        assert answer.transfer.amount == 5
        assert ledger.get_account("alice").balance == 5, "written once"
        resent = ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5))
        assert (resent.created, resent.position) == (False, answer.position)
        assert ledger.get_account("alice").balance == 5
    finally:
        ledger.close()


def test_a_lost_commit_answer_whose_store_stays_unreachable_answers_outcome_unknown(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write under the lock committed and its connection was cut before the answer
    came back, and every later try failed too (the server went away): whether it was
    written is not known, so the answer says so (``outcome_unknown``), never "nothing was
    written". Once the store answers again, the same command answers as a resend."""
    monkeypatch.setattr(ledger_module, "CONTENDED_SECONDS", CONTENDED_FOR_SECONDS)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)  # the library's retry waits
    tries_after_cut: list[bool] = []

    def committed_then_unreachable(
        recorder: Any, connection: Any, events: Any, *, begin: bool
    ) -> Any:
        if begin:  # every later try, on another connection: the server does not answer
            tries_after_cut.append(True)
            raise psycopg.OperationalError("connection refused")
        insert_on(recorder, connection, events, begin=begin)
        cut_by_the_server(connection, database_url)

    ledger = two_account_ledger(database_url)
    try:
        ledger._mark_contended([account_uuid("alice")])
        monkeypatch.setattr(postgres, "insert_on", committed_then_unreachable)

        with pytest.raises(OutcomeUnknownError):
            ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5))

        assert tries_after_cut, "the write was tried again elsewhere"
        monkeypatch.setattr(postgres, "insert_on", insert_on)
        resent = ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5))
        assert resent.created is False, "the first try had committed"
        assert ledger.get_account("alice").balance == 5
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("cut_midway", "answer"),
    [
        pytest.param(True, OutcomeUnknownError, id="a-try-cut-midway"),
        pytest.param(False, StoreUnavailableError, id="no-try-reached-the-server"),
    ],
)
def test_a_write_every_try_of_which_failed_says_whether_it_may_have_committed(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    cut_midway: bool,
    answer: type[Exception],
) -> None:
    """A write (not under the lock) all of whose tries failed: when one of them lost its
    connection in the middle of its round trip, the commit may have been made, so the
    answer is ``outcome_unknown``; when none did, nothing was written
    (``store_unavailable``), and the ledger writes nothing either way."""
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)  # the library's retry waits
    tries: list[int] = []

    def failing(recorder: Any, connection: Any, events: Any, *, begin: bool) -> Any:
        tries.append(connection.info.backend_pid)
        if cut_midway and len(tries) == 1:
            cut_by_the_server(connection, database_url)
        raise psycopg.OperationalError("connection refused")

    ledger = two_account_ledger(database_url)
    try:
        monkeypatch.setattr(postgres, "insert_on", failing)

        with pytest.raises((LedgerError, OperationalError)) as raised:
            ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5))

        assert type(store_fault(raised.value)) is answer
        assert len(tries) > 1, "the write was tried again"
        monkeypatch.setattr(postgres, "insert_on", insert_on)
        assert ledger.get_account("alice").balance == 0
    finally:
        ledger.close()


def short_deadline_ledger(database_url: str) -> Ledger:
    """A ledger whose writes wait ``SHORT_WRITE_TIMEOUT_SECONDS``, with two accounts."""
    return two_account_ledger(
        database_url, LEDGER_WRITE_TIMEOUT_SECONDS=str(SHORT_WRITE_TIMEOUT_SECONDS)
    )


def next_group_seconds(ledger: Ledger, groups_before: int) -> float:
    """How long the writer took over its next group write, once it has ended."""
    assert eventually(
        lambda: len(ledger.committer.write_seconds) > groups_before, WRITER_WAIT_SECONDS
    ), "the writer ended the group"
    return ledger.committer.write_seconds[-1]


def test_a_write_while_the_server_is_down_frees_the_writer_by_its_deadline(
    restartable_postgres: PostgresServer, database_url: str
) -> None:
    """The library would try an insert ten times, each after a wait for a connection
    (about 12 s): longer than the write deadline. The writer stops trying in time, so it
    is free again when its callers are answered, and the next write after the server is
    back succeeds; the caller's answer is one docs/writes.md gives for a store that went
    away, and resending it is safe."""
    ledger = short_deadline_ledger(database_url)
    try:
        assert ledger.record_transfer(RecordTransfer("before", ISSUER, "alice", 1)).created
        groups_before = len(ledger.committer.write_seconds)

        restartable_postgres.stop()
        try:
            with pytest.raises(WRITE_ANSWERS_STORE_DOWN):
                ledger.record_transfer(RecordTransfer("down", ISSUER, "alice", 2))
            took = next_group_seconds(ledger, groups_before)
        finally:
            restartable_postgres.start()

        assert took <= SHORT_WRITE_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
        after = ledger.record_transfer(RecordTransfer("after", ISSUER, "alice", 4))
        assert after.created
        ledger.record_transfer(RecordTransfer("down", ISSUER, "alice", 2))  # resent: safe
        assert ledger.get_account("alice").balance == 1 + 2 + 4
    finally:
        ledger.close()


def test_a_snapshot_after_a_commit_on_a_server_gone_meanwhile_frees_the_writer_in_time(
    restartable_postgres: PostgresServer, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer snapshots accounts after its commit; when the server went away in
    between, the snapshot is given up (and counted) by the group's deadline, not after
    the library's ten tries, and the committed write answers success."""
    monkeypatch.setattr(ledger_module, "ACCOUNT_SNAPSHOT_INTERVAL", 2)
    ledger = short_deadline_ledger(database_url)
    try:
        ledger.record_transfer(RecordTransfer("t0", ISSUER, "alice", 1))  # t1 snapshots
        record_events = ledger._record_events

        def committed_then_server_gone(events: Any) -> Any:
            written = record_events(events)
            restartable_postgres.stop()
            return written

        monkeypatch.setattr(ledger, "_record_events", committed_then_server_gone)
        groups_before = len(ledger.committer.write_seconds)
        try:
            outcome = ledger.record_transfer(RecordTransfer("t1", ISSUER, "alice", 5))
            took = next_group_seconds(ledger, groups_before)
        finally:
            monkeypatch.setattr(ledger, "_record_events", record_events)
            restartable_postgres.start()

        assert outcome.created
        assert ledger.snapshot_failures >= 1
        assert took <= SHORT_WRITE_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
        assert ledger.get_account("alice").balance == 1 + 5
    finally:
        ledger.close()


@pytest.mark.parametrize("ping_idle_seconds", PING_CASES)
def test_the_views_read_again_on_the_first_use_after_a_restart(
    restartable_postgres: PostgresServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    ping_idle_seconds: float,
) -> None:
    monkeypatch.setattr(postgres, "PING_IDLE_SECONDS", ping_idle_seconds)
    view = open_view(database_url, 1)
    assert isinstance(view, PostgresLedgerView)
    try:
        assert view.balance("alice") is None
        assert view.commit_end(7) == 7

        restart(restartable_postgres)

        started = time.monotonic()
        assert view.balance("alice") is None
        assert time.monotonic() - started < READ_BOUND_SECONDS
        assert view.commit_end(7) == 7
    finally:
        view.datastore.close()


def test_a_read_on_a_server_that_stays_down_is_tried_once_more_at_most(
    restartable_postgres: PostgresServer, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is gone, not restarted. The first read meets a dropped connection and
    tries once more, which finds none: a store fault (503) within the bound. The next
    read has no dropped connection to go on: it fails after one wait, not retried."""
    monkeypatch.setattr(postgres, "PING_IDLE_SECONDS", PINGED)  # each hand-out meets the drop
    ledger = Ledger(event_store_env(database_url))
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    checks = 0
    check = datastore.pool.check

    def counted_check() -> None:
        nonlocal checks
        checks += 1
        check()

    monkeypatch.setattr(datastore.pool, "check", counted_check)
    try:
        reading_retried(datastore, lambda cursor: cursor.execute("SELECT 1"))
        restartable_postgres.stop()
        try:
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(OperationalError):
                    reading_retried(datastore, lambda cursor: cursor.execute("SELECT 1"))
                assert time.monotonic() - started < READ_BOUND_SECONDS
                assert checks == 1  # by the first read, which met the drop; not the second
        finally:
            restartable_postgres.start()
    finally:
        ledger.close()


@pytest.mark.slow
def test_the_first_requests_after_a_postgresql_restart_succeed(
    restartable_postgres: PostgresServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postgres, "PING_IDLE_SECONDS", UNPINGED)
    settings = Settings(
        event_store=database_url, read_model=database_url, data_dir=tmp_path, log_format="console"
    )
    services = build_services(settings, projections=True)
    try:
        with TestClient(app=create_app(services)) as client:
            client.headers["Authorization"] = f"Bearer {services.keys.create('admin')}"
            served_after_a_restart(client, restartable_postgres)
    finally:
        shutdown(services)


def served_after_a_restart(client: TestClient[Litestar], server: PostgresServer) -> None:
    open_issuer(client)
    open_account(client, "alice")
    last = {}
    for number in range(TRANSFERS_BEFORE):
        last = record(client, f"t{number}", ISSUER, "alice", 1)
    seen = f"min_position={last['position']}"
    reads = [
        f"/v1/accounts/alice?{seen}",
        f"/v1/transfers/t0?{seen}",
        f"/v1/transfers?account_id=alice&{seen}",
        f"/v1/ledger/totals?{seen}",
    ]
    for path in reads:  # every pool has connections in use when the server goes
        before = client.get(path)
        assert before.status_code == 200, (path, before.text)

    restart(server)

    # The writer: a resend reads the original's position back; a new transfer writes.
    replay = client.post("/v1/transfers", json=transfer_body("t0", ISSUER, "alice", 1))
    assert replay.status_code == 200, replay.text
    new = client.post("/v1/transfers", json=transfer_body("after", ISSUER, "alice", 1))
    assert new.status_code == 201, new.text
    # The views: each read answers, none a 503.
    for path in reads:
        read = client.get(path)
        assert read.status_code == 200, (path, read.text)
    alice = client.get(f"/v1/accounts/alice?min_position={new.json()['position']}")
    assert alice.status_code == 200, alice.text
    assert alice.json()["balance"] == TRANSFERS_BEFORE + 1


def test_the_events_database_works_on_the_first_use_after_a_restart(
    restartable_postgres: PostgresServer, database_url: str
) -> None:
    """The events database (the feed, webhook subscriptions and deliveries) has its own
    pool: after a restart cut its connections, the next transactions find working ones."""
    database = Database(database_url)
    try:
        database.create(
            PartSchema("marks", ["CREATE TABLE IF NOT EXISTS marks (n integer)"], "marks")
        )
        with database.transaction(write=True) as cursor:
            cursor.execute("INSERT INTO marks VALUES (?)", (1,))

        restart(restartable_postgres)

        with database.transaction(write=True) as cursor:
            cursor.execute("INSERT INTO marks VALUES (?)", (2,))
        with database.transaction() as cursor:
            cursor.execute("SELECT n FROM marks ORDER BY n")
            assert [row[0] for row in cursor.fetchall()] == [1, 2]
    finally:
        database.close()
