"""After a conflict with another process's write, the writer runs some of the group's
commands again at once (those the conflict did not concern) and sends the others to a
later group (``Ledger._after_conflict``). By then their callers' deadline may have
passed: each was answered ``outcome_unknown`` (the writer had taken its command), or
is about to be. The writer then writes none of them (nothing keeps working for callers
who all stopped waiting), and a caller still listening hears ``write_timeout``: nothing
was written, which is then true."""

import time
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import (
    ConcurrencyConflictError,
    OutcomeUnknownError,
    TransferNotFoundError,
    WriteTimeoutError,
)
from app.persistence.stores import sqlite_env
from tests.support.waiting import eventually

WRITE_TIMEOUT_SECONDS: Final = 0.3
# Past the callers' deadline by this much when the conflict is met.
PAST_DEADLINE_SECONDS: Final = 0.1
WAIT_SECONDS: Final = 10.0
NOT_WRITTEN_OR_UNKNOWN: Final = (OutcomeUnknownError, WriteTimeoutError, ConcurrencyConflictError)


def test_commands_a_conflict_sends_back_after_their_deadline_are_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    with Ledger(env) as first, Ledger(env) as second:
        for account_id in ("bank", "other-bank"):
            first.open_account(OpenAccount(account_id, "CREDITS", allow_negative=True))
        for account_id in ("alice", "bob"):
            first.open_account(OpenAccount(account_id, "CREDITS"))
        # The first ledger knows every account (cached), so it writes without reading.
        first.record_transfer(RecordTransfer("warm-alice", "bank", "alice", 1))
        first.record_transfer(RecordTransfer("warm-bob", "other-bank", "bob", 1))

        record_events = first._record_events
        writes_tried: list[int] = []

        def moved_by_another_then_late(events: Any) -> Any:
            # The group's first write: meanwhile another process moved bank and alice,
            # and the write reaches the store after its callers' deadline.
            if not writes_tried:
                second.record_transfer(RecordTransfer("elsewhere", "bank", "alice", 1))
                time.sleep(WRITE_TIMEOUT_SECONDS + PAST_DEADLINE_SECONDS)
            writes_tried.append(len(events))
            return record_events(events)

        monkeypatch.setattr(first, "_record_events", moved_by_another_then_late)
        # The short deadline for the group under test only (the committer reads it at
        # each submit): the set-up's writes and the last one keep the default, which a
        # loaded machine does not reach.
        monkeypatch.setattr(first.committer, "timeout_seconds", WRITE_TIMEOUT_SECONDS)
        conflicts_before = first.conflicts
        groups_before = first.committer.groups_written
        # One group: the transfer on the moved accounts, and one the conflict did not
        # concern (other-bank to bob), which would be written again at once.
        outcome = first.record_batch(
            [
                RecordTransfer("contended", "bank", "alice", 2),
                RecordTransfer("bystander", "other-bank", "bob", 3),
            ],
            atomic=False,
        )
        # The callers were answered at their deadline (outcome_unknown), or, on a
        # machine so busy that the writer gave up on their commands first, that nothing
        # was written; the writer is done with the group once it has written what it
        # was going to.
        assert all(isinstance(result, NOT_WRITTEN_OR_UNKNOWN) for result in outcome.results)
        assert eventually(lambda: first.committer.groups_written > groups_before, WAIT_SECONDS)
        assert first.conflicts == conflicts_before + 1, "the write did meet the conflict"
        assert len(writes_tried) == 1, "no write once every caller's deadline had passed"
        for transfer_id in ("contended", "bystander"):
            with pytest.raises(TransferNotFoundError):
                second.get_transfer(transfer_id)
        assert second.get_account("bob").credits_posted == 1
        # The writer goes on: the next command is written (its own write, the default
        # deadline).
        monkeypatch.undo()
        assert first.record_transfer(RecordTransfer("after", "other-bank", "bob", 4)).created
        assert second.get_account("bob").credits_posted == 5
