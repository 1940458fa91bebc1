"""A group whose run fails before its write (the store unreachable while a rejection is
checked against it) leaves nothing behind in the writer's cache: what its earlier
commands changed was never written, so it must not be written later either."""

from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import TransferNotFoundError


def test_a_group_that_fails_before_its_write_leaves_no_unwritten_change_behind(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.open_account(OpenAccount("alice", "CREDITS", allow_negative=False))
    ledger.open_account(OpenAccount("bob", "CREDITS", allow_negative=True))
    ledger.record_transfer(RecordTransfer("fund", "bob", "alice", 10))

    def unreachable(*_: Any) -> set[Any]:
        raise OperationalError("the store went away")

    with monkeypatch.context() as patched:
        patched.setattr(ledger, "_moved_streams", unreachable)
        commands = [
            RecordTransfer("kept", "alice", "bob", 3),
            RecordTransfer("refused", "alice", "bob", 1_000),
        ]
        with pytest.raises(OperationalError):
            ledger.record_batch(commands, atomic=False)
    assert ledger.record_transfer(RecordTransfer("next", "alice", "bob", 1)).created
    with pytest.raises(TransferNotFoundError):  # never acknowledged, never written
        ledger.get_transfer("kept")
    assert ledger.get_account("alice").balance == 9
    assert ledger.get_account("bob").balance == -9
    # A resend of the command that failed moves its money once.
    assert ledger.record_transfer(RecordTransfer("kept", "alice", "bob", 3)).created
    assert ledger.get_account("alice").balance == 6
