"""The snapshots a group write is due are written together: one store call for all the
accounts that crossed a snapshot interval in that group, where the store takes several
streams at once (``Ledger._snapshot_accounts``), one per account where it does not."""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.values import account_uuid
from app.persistence.stores import sqlite_env
from app.persistence.streams import writes_streams_together

INTERVAL = 4
USERS = [f"user:{number}" for number in range(6)]


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    monkeypatch.setattr(ledger_module, "ACCOUNT_SNAPSHOT_INTERVAL", INTERVAL)
    with Ledger(sqlite_env(str(tmp_path / "events.sqlite"))) as ledger:
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        for user in USERS:
            ledger.open_account(OpenAccount(user, "CREDITS"))
        yield ledger


def snapshot_writes(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[list[StoredEvent]]:
    """Each call of the snapshot store's recorder, with the snapshots it was given."""
    assert ledger.snapshots is not None
    recorder: Any = ledger.snapshots.recorder
    insert_events = recorder.insert_events
    calls: list[list[StoredEvent]] = []

    def recording(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        calls.append(list(stored_events))
        return insert_events(stored_events, **kwargs)

    monkeypatch.setattr(recorder, "insert_events", recording)
    return calls


def newest_snapshot_version(ledger: Ledger, account_id: str) -> int | None:
    assert ledger.snapshots is not None
    newest = list(ledger.snapshots.get(account_uuid(account_id), desc=True, limit=1))
    return newest[0].originator_version if newest else None


def test_the_accounts_that_cross_an_interval_in_one_group_are_snapshotted_in_one_write(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = snapshot_writes(ledger, monkeypatch)
    # Each user is credited INTERVAL times in one atomic batch: every account crosses.
    batch = [
        RecordTransfer(f"t:{user}:{n}", "bank", user, 1) for n in range(INTERVAL) for user in USERS
    ]
    ledger.record_batch(batch, atomic=True)
    versions = {account_id: ledger.get_account(account_id).version for account_id in USERS}
    ledger.record_transfer(RecordTransfer("after", "bank", USERS[0], 1))  # the batch's done
    assert len(calls) == 1
    assert {stored.originator_id for stored in calls[0]} == {
        account_uuid(account_id) for account_id in ["bank", *USERS]
    }
    for user in USERS:
        assert newest_snapshot_version(ledger, user) == versions[user]
    assert newest_snapshot_version(ledger, "bank") == len(batch)
    assert ledger.snapshot_failures == 0


def test_a_store_that_takes_one_stream_per_call_gets_one_snapshot_per_call(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = snapshot_writes(ledger, monkeypatch)
    monkeypatch.setattr(ledger_module, "writes_streams_together", lambda recorder: False)
    batch = [
        RecordTransfer(f"t:{user}:{n}", "bank", user, 1) for n in range(INTERVAL) for user in USERS
    ]
    ledger.record_batch(batch, atomic=True)
    ledger.record_transfer(RecordTransfer("after", "bank", USERS[0], 1))
    assert sorted(len(call) for call in calls) == [1] * (len(USERS) + 1)
    for user in USERS[1:]:  # the first was credited once more since
        assert newest_snapshot_version(ledger, user) == ledger.get_account(user).version


def test_the_sql_and_memory_snapshot_stores_take_several_streams_per_call(
    ledger: Ledger,
) -> None:
    assert ledger.snapshots is not None
    assert writes_streams_together(ledger.snapshots.recorder)
    with Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}) as in_memory:
        assert in_memory.snapshots is not None
        assert writes_streams_together(in_memory.snapshots.recorder)


def test_an_account_read_with_an_intervals_worth_of_events_after_its_snapshot_is_snapshotted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account read from the store with ``INTERVAL`` events or more after its newest
    snapshot (written when none was due, e.g. its snapshots skipped) is snapshotted by
    the next group that writes it, though that group crosses no interval: else every
    read of it (after a restart, after an eviction) folds the whole tail again."""
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    monkeypatch.setattr(ledger_module, "ACCOUNT_SNAPSHOT_INTERVAL", 1_000)  # none due
    with Ledger(env) as earlier:
        earlier.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        earlier.open_account(OpenAccount("alice", "CREDITS"))
        earlier.open_account(OpenAccount("bob", "CREDITS"))
        for number in range(INTERVAL + 1):
            earlier.record_transfer(RecordTransfer(f"t{number}", "bank", "alice", 1))
        read_at = earlier.get_account("alice").version
        assert read_at is not None
    monkeypatch.setattr(ledger_module, "ACCOUNT_SNAPSHOT_INTERVAL", INTERVAL)
    assert read_at // INTERVAL == (read_at + 1) // INTERVAL  # the next write crosses none
    with Ledger(env) as ledger:  # a restart: alice is read from the store
        assert newest_snapshot_version(ledger, "alice") is None
        ledger.record_transfer(RecordTransfer("next", "bank", "alice", 1))
        ledger.record_transfer(RecordTransfer("after", "bank", "bob", 1))  # "next" is done
        assert newest_snapshot_version(ledger, "alice") == read_at + 1
        ledger.record_transfer(RecordTransfer("later", "bank", "alice", 1))
        ledger.record_transfer(RecordTransfer("after-later", "bank", "bob", 1))
        assert newest_snapshot_version(ledger, "alice") == read_at + 1  # owed once
