"""The store's write lock (``app/persistence/write_lock.py``, decision 0018) on the two
stores that have one: a holder's write cannot be overtaken, other writers wait for its
commit, a lock that is not free in time is not held, and leaving the block without a
write releases it. Two ledgers stand for two processes: each has its own connections."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from app.application.ledger import Ledger
from app.persistence.stores import event_store_env
from app.persistence.write_lock import WriteLocking
from tests.conftest import store_env, store_url

WAIT_SECONDS: Final = 30.0
HOLD_SECONDS: Final = 0.3
SHORT_LOCK_WAIT_SECONDS: Final = 0.2


@pytest.fixture
def two(shared_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    with Ledger(store_env(shared_url)) as first, Ledger(store_env(shared_url)) as second:
        yield first, second


def locking(ledger: Ledger) -> WriteLocking:
    recorder = ledger.recorder
    assert isinstance(recorder, WriteLocking)
    return recorder


def event(stream: UUID, version: int = 0) -> StoredEvent:
    return StoredEvent(stream, version, "test:Written", b"{}")


def test_a_holder_is_not_overtaken_and_other_writers_wait_for_its_commit(
    two: tuple[Ledger, Ledger],
) -> None:
    holder, other = two
    stream = uuid4()
    with ThreadPoolExecutor(max_workers=1) as pool:
        with locking(holder).write_lock(WAIT_SECONDS) as held:
            assert held
            # The other process tries to write the same version meanwhile: it waits.
            waiting = pool.submit(other.recorder.insert_events, [event(stream)])
            time.sleep(HOLD_SECONDS)
            assert not waiting.done(), "another writer wrote while the lock was held"
            ids = holder.recorder.insert_events([event(stream)])
        assert ids is not None
        assert len(ids) == 1
        # The holder committed first; the waiter then loses the race it would have won.
        with pytest.raises(IntegrityError):
            waiting.result(WAIT_SECONDS)
    [recorded] = other.recorder.select_events(stream)
    assert (recorded.originator_version, recorded.topic) == (0, "test:Written")
    assert other.recorder.max_notification_id() == ids[0]


def test_a_lock_that_is_not_free_in_time_is_not_held(two: tuple[Ledger, Ledger]) -> None:
    holder, other = two
    stream = uuid4()
    with locking(holder).write_lock(WAIT_SECONDS) as held:
        assert held
        started = time.monotonic()
        with locking(other).write_lock(SHORT_LOCK_WAIT_SECONDS) as other_held:
            assert not other_held
        assert time.monotonic() - started < WAIT_SECONDS
        holder.recorder.insert_events([event(stream)])
    # Not held, the other writes as usual (its own transaction, after the holder's).
    with locking(other).write_lock(SHORT_LOCK_WAIT_SECONDS) as other_held:
        assert other_held
    ids = other.recorder.insert_events([event(stream, 1)])
    assert ids is not None
    assert [e.originator_version for e in holder.recorder.select_events(stream)] == [0, 1]


def test_leaving_the_block_without_a_write_releases_the_lock_and_writes_nothing(
    two: tuple[Ledger, Ledger],
) -> None:
    holder, other = two
    before = other.recorder.max_notification_id()
    with locking(holder).write_lock(WAIT_SECONDS) as held:
        assert held
    with locking(other).write_lock(SHORT_LOCK_WAIT_SECONDS) as other_held:
        assert other_held, "the lock stayed held after its block"
    assert other.recorder.max_notification_id() == before


def test_a_conflicting_write_under_the_lock_fails_and_releases_it(
    two: tuple[Ledger, Ledger],
) -> None:
    holder, other = two
    stream = uuid4()
    other.recorder.insert_events([event(stream)])
    with locking(holder).write_lock(WAIT_SECONDS) as held:
        assert held
        with pytest.raises(IntegrityError):
            holder.recorder.insert_events([event(stream)])
    assert other.recorder.insert_events([event(stream, 1)]) is not None


STATEMENT_TIMEOUT_SECONDS: Final = 1
LONGER_LOCK_WAIT_SECONDS: Final = 3.0


@pytest.mark.postgres
def test_a_lock_wait_cut_short_by_the_statement_timeout_is_not_held_and_fails_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A write timeout set above the store timeout: the lock's wait is cancelled by the
    connection's statement_timeout first. Not free in time all the same: not held."""
    url = store_url("postgres", tmp_path, request)
    env = event_store_env(url, timeout_seconds=STATEMENT_TIMEOUT_SECONDS)
    with Ledger(store_env(url)) as holder, Ledger(env) as other:
        stream = uuid4()
        with locking(holder).write_lock(WAIT_SECONDS) as held:
            assert held
            with locking(other).write_lock(LONGER_LOCK_WAIT_SECONDS) as other_held:
                assert not other_held
            holder.recorder.insert_events([event(stream)])
        with locking(other).write_lock(LONGER_LOCK_WAIT_SECONDS) as other_held:
            assert other_held, "the connection stayed unusable after the cancelled wait"
        other.recorder.insert_events([event(stream, 1)])
        assert [e.originator_version for e in holder.recorder.select_events(stream)] == [0, 1]
