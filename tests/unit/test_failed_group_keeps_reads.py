"""What a group read from the store stays cached when its write fails (``Ledger._forget``).

A group whose accounts are not cached (after a restart, or a long history with no recent
snapshot) reads and folds them before it writes. When that takes its deadline's time, the
store call of its write is cut (a store deadline) and the write fails. If the failure
let go of what the group read, the next group would read and fold it all again, and
fail the same way: every write failing, group after group, although the store is
healthy. Put back as read, the next group finds it cached and writes at once."""

from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.values import account_uuid
from app.persistence.positions import stream_heads
from app.persistence.stores import sqlite_env

ACCOUNTS = [f"user:{number}" for number in range(5)]
WRITES = 4


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """A store whose accounts have some history, written by another (earlier) process."""
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    with Ledger(env) as earlier:
        earlier.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        for account_id in ACCOUNTS:
            earlier.open_account(OpenAccount(account_id, "CREDITS"))
            for number in range(3):
                earlier.record_transfer(
                    RecordTransfer(f"{account_id}:{number}", "bank", account_id, 1)
                )
    return env


def cut_when_reads_were_made(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The write of a group that had to read streams from the store fails, as a store
    deadline would cut it when the reads took the group's time. Returns, per write
    tried, how many streams its group read (folded) first."""
    folds = 0
    fold = ledger._fold

    def counted_fold(stream: Any) -> Any:
        nonlocal folds
        folds += 1
        return fold(stream)

    record_events = ledger._record_events
    reads_per_write: list[int] = []

    def record(events: Any) -> Any:
        nonlocal folds
        reads_per_write.append(folds)
        read, folds = folds, 0
        if read:
            raise OperationalError("the store call ran past its deadline")
        return record_events(events)

    monkeypatch.setattr(ledger, "_fold", counted_fold)
    monkeypatch.setattr(ledger, "_record_events", record)
    return reads_per_write


def test_a_failed_write_keeps_what_its_group_read_so_the_next_group_writes(
    store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger(store) as ledger:  # a restart: nothing cached
        reads_per_write = cut_when_reads_were_made(ledger, monkeypatch)
        batch = [
            RecordTransfer(f"b:{account_id}", "bank", account_id, 5) for account_id in ACCOUNTS
        ]
        outcomes: list[str] = []
        for _ in range(WRITES):
            try:
                ledger.record_batch(batch, atomic=True)
                outcomes.append("written")
            except OperationalError:
                outcomes.append("failed")
        # The first write failed after its reads; the next one found them cached.
        assert outcomes == ["failed", "written", "written", "written"]
        # (the resends after it are replays: nothing more to write).
        assert reads_per_write == [len(ACCOUNTS) + 1, 0]
        # What was kept is what the store holds: the failed write left nothing behind,
        # the written one moved each account once (the resends replayed it).
        for account_id in ACCOUNTS:
            assert ledger.get_account(account_id).balance == 3 + 5
        assert ledger.get_account("bank").balance == -len(ACCOUNTS) * 8
        # And the writer's cache holds each account as the store does.
        ids = [account_uuid(account_id) for account_id in ["bank", *ACCOUNTS]]
        heads = stream_heads(ledger.recorder, ids)
        assert {i: ledger._written.get(i).version for i in ids} == heads
