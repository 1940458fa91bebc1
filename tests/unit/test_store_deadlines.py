"""A store call that failed is tried again only while the writer's deadline leaves room
for a wait and another try (app/persistence/deadlines.py, ``tried_in_time``)."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import OperationalError

from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import OutcomeUnknownError
from app.domain.values import account_uuid
from app.persistence.deadlines import seconds_left, store_calls_until
from app.persistence.postgres import INSERT_TRIES_MAX, tried_in_time
from app.persistence.stores import sqlite_env
from tests.conftest import store_env
from tests.support.waiting import eventually

POOL_WAIT_SECONDS = 1.0  # the pool's wait for a connection, as the default settings give
SHORT_WRITE_TIMEOUT_SECONDS = 0.5


def datastore() -> Any:
    return SimpleNamespace(pool=SimpleNamespace(timeout=POOL_WAIT_SECONDS))


def failing(tries: list[float]) -> Any:
    def attempt() -> None:
        tries.append(time.monotonic())
        raise OperationalError("connection refused")

    return attempt


def test_without_a_deadline_a_failing_write_is_tried_as_often_as_the_library_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)  # the waits between tries
    tries: list[float] = []
    with pytest.raises(OperationalError):
        tried_in_time(datastore(), failing(tries))
    assert len(tries) == INSERT_TRIES_MAX


def test_no_second_try_starts_that_could_not_end_before_the_deadline() -> None:
    tries: list[float] = []
    with (
        store_calls_until(time.monotonic() + POOL_WAIT_SECONDS / 2),
        pytest.raises(OperationalError),
    ):
        tried_in_time(datastore(), failing(tries))
    assert len(tries) == 1


def test_a_write_held_up_past_its_deadline_is_tried_once_and_not_again() -> None:
    """Its callers were answered ``outcome_unknown``: landing is allowed, a wait is not."""
    tries: list[float] = []
    with store_calls_until(time.monotonic() - 1), pytest.raises(OperationalError):
        tried_in_time(datastore(), failing(tries))
    assert len(tries) == 1


def test_a_write_that_succeeds_is_answered_and_the_deadline_ends_with_its_block() -> None:
    with store_calls_until(time.monotonic() + 5):
        assert tried_in_time(datastore(), lambda: [7]) == [7]
        with store_calls_until(time.monotonic() + 1):  # an inner block keeps the sooner
            left = seconds_left()
            assert left is not None
            assert left <= 1
        outer = seconds_left()
        assert outer is not None
        assert outer > 1
    assert seconds_left() is None


def test_the_ledgers_select_of_a_streams_events_is_tried_in_time(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer reads a settled transfer's events with the library's select (a resent
    post or void): with the server gone it stops by the deadline, not after ten tries."""
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)  # the waits between tries
    with Ledger(store_env(postgres_url)) as ledger:
        recorder = ledger.recorder
        tries: list[float] = []

        @contextmanager
        def unreachable() -> Iterator[Any]:
            tries.append(time.monotonic())
            raise OperationalError("connection refused")
            yield  # a generator, as the library's get_connection

        monkeypatch.setattr(recorder.datastore, "get_connection", unreachable)  # type: ignore[attr-defined]
        with (
            store_calls_until(time.monotonic() + POOL_WAIT_SECONDS / 2),
            pytest.raises(OperationalError),
        ):
            recorder.select_events(uuid4())
        assert len(tries) == 1
        with pytest.raises(OperationalError):
            recorder.select_events(uuid4())  # no deadline: as many tries as the library's
        assert len(tries) == 1 + INSERT_TRIES_MAX


@contextmanager
def ledger_with_short_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: int
) -> Iterator[Ledger]:
    """A ledger on SQLite whose writes answer ``outcome_unknown`` after
    ``SHORT_WRITE_TIMEOUT_SECONDS``, with accounts snapshotted every ``interval``
    versions: bank (it pays) and alice, and bob (written to know a group is done)."""
    monkeypatch.setattr(ledger_module, "ACCOUNT_SNAPSHOT_INTERVAL", interval)
    env = {
        **sqlite_env(str(tmp_path / "events.sqlite")),
        "LEDGER_WRITE_TIMEOUT_SECONDS": str(SHORT_WRITE_TIMEOUT_SECONDS),
    }
    with Ledger(env) as ledger:
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "CREDITS"))
        ledger.open_account(OpenAccount("bob", "CREDITS"))
        yield ledger


def write_late(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, command: RecordTransfer) -> None:
    """``command`` committed after its deadline (its caller is told ``outcome_unknown``),
    and its group over, snapshots included."""
    record_events = ledger._record_events

    def slow_commit(events: Any) -> Any:
        written = record_events(events)
        time.sleep(SHORT_WRITE_TIMEOUT_SECONDS * 2)  # committed, after the deadline
        return written

    monkeypatch.setattr(ledger, "_record_events", slow_commit)
    groups_before = len(ledger.committer.write_seconds)
    with pytest.raises(OutcomeUnknownError):
        ledger.record_transfer(command)
    assert eventually(lambda: len(ledger.committer.write_seconds) > groups_before, 30)
    monkeypatch.setattr(ledger, "_record_events", record_events)


def test_no_snapshot_is_taken_once_the_groups_callers_stopped_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ledger_with_short_deadline(tmp_path, monkeypatch, interval=2) as ledger:
        assert ledger.snapshots is not None
        ledger.record_transfer(RecordTransfer("t0", "bank", "alice", 1))  # t1 snapshots
        write_late(ledger, monkeypatch, RecordTransfer("t1", "bank", "alice", 5))
        assert ledger.snapshot_failures == 2  # bank's and alice's, skipped and counted
        assert ledger.snapshots.recorder.select_events(account_uuid("alice")) == []
        # (The next group that holds them takes them: the test below.)
        assert ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5)).created is False


def test_a_snapshot_skipped_past_the_deadline_is_taken_by_the_next_group_that_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not left to the account's next interval: a late group (long reads) leaves the
    next read of the account shorter, not longer."""
    interval = 4
    with ledger_with_short_deadline(tmp_path, monkeypatch, interval) as ledger:
        assert ledger.snapshots is not None
        while (ledger.get_account("alice").version or 0) % interval != interval - 1:
            ledger.record_transfer(RecordTransfer(f"t{uuid4()}", "bank", "alice", 1))
        write_late(ledger, monkeypatch, RecordTransfer("late", "bank", "alice", 5))  # crosses
        assert ledger.snapshots.recorder.select_events(account_uuid("alice")) == []
        ledger.record_transfer(RecordTransfer("next", "bank", "alice", 1))  # crosses none
        ledger.record_transfer(RecordTransfer("after", "bank", "bob", 1))  # "next" is done
        version = ledger.get_account("alice").version
        assert version is not None
        assert version % interval == 1
        snapshots = ledger.snapshots.recorder.select_events(account_uuid("alice"))
        assert [snapshot.originator_version for snapshot in snapshots] == [version]
