"""The events table's writers and PostgreSQL's maintenance (decision 0039): VACUUM,
ANALYZE and autovacuum hold the table in ``SHARE UPDATE EXCLUSIVE`` mode while they
work, and a write must not wait for them. Under the library's ``LOCK TABLE … IN
EXCLUSIVE MODE`` it did: autovacuum that got the table between two writes held every
writer until PostgreSQL's deadlock check cancelled it a second later (the "1 s stall"),
and an anti-wraparound vacuum, never cancelled, would have held them for its whole run.

The writers still commit one at a time, in the order they asked (tests/e2e/
test_write_lock.py), and a writer of an older version, which holds the table in
``EXCLUSIVE`` mode, is still waited for."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.postgres import LedgerPostgresApplicationRecorder
from tests.conftest import store_env

pytestmark = pytest.mark.postgres

# A write's deadline here: long enough for a loaded machine, short enough that a write
# held by the maintenance's lock fails the test instead of hanging it.
WRITE_TIMEOUT_SECONDS: Final = 5.0
# How long the maintenance (or an older writer) holds the table while the test checks.
HOLD_SECONDS: Final = 0.5
WAIT_SECONDS: Final = 30.0


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


def test_a_writer_holding_the_table_in_exclusive_mode_is_waited_for(
    ledger: Ledger, postgres_url: str
) -> None:
    """An older version's writer (or the library's own insert) takes the table in
    ``EXCLUSIVE`` mode: a write that comes meanwhile commits after it, with a later
    notification id, so a reader following the log misses neither."""
    table = events_table(ledger)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerPostgresApplicationRecorder)
    with psycopg.connect(postgres_url) as older, ThreadPoolExecutor(max_workers=1) as pool:
        older.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        [(older_id,)] = older.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "VALUES (%s, 0, 'test:Older', '\\x7b7d') RETURNING notification_id",
            (uuid4(),),
        ).fetchall()
        waiting = pool.submit(
            recorder.insert_events, [StoredEvent(uuid4(), 0, "test:Written", b"{}")]
        )
        time.sleep(HOLD_SECONDS)
        assert not waiting.done(), "a write overtook a writer holding the table"
        older.commit()
        ids = waiting.result(WAIT_SECONDS)
    assert ids is not None
    assert list(ids) == [ids[0]]
    assert ids[0] > older_id
