"""What a command's rules passed is what the ledger writes: a checked command's metadata
(an update's changes) is a read-only copy, which neither the command's holder nor the
caller's own dict can change afterwards."""

import asyncio
from collections.abc import Iterator
from types import MappingProxyType

import pytest

from app.application.commands import (
    OpenAccount,
    RecordReversal,
    RecordTransfer,
    UpdateAccountMetadata,
)
from app.application.ledger import Ledger
from app.domain import limits

TOO_LONG = "x" * (limits.METADATA_VALUE_LENGTH_MAX + 1)  # what no check would let through


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}) as ledger:
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "CREDITS"))
        yield ledger


def test_a_checked_commands_metadata_refuses_changes() -> None:
    checked: list[OpenAccount | RecordTransfer | RecordReversal] = [
        OpenAccount("a", "CREDITS", metadata={"plan": "pro"}).checked(),
        RecordTransfer("t", "bank", "alice", 5, metadata={"order": "1"}).checked(),
        RecordReversal("t", "r", metadata={"why": "refund"}).checked(),
    ]
    for command in checked:
        with pytest.raises(TypeError):
            command.metadata["sneaked"] = TOO_LONG  # type: ignore[index]
    update = UpdateAccountMetadata("a", {"plan": None}).checked()
    with pytest.raises(TypeError):
        update.changes["plan"] = TOO_LONG  # type: ignore[index]
    assert [dict(command.metadata) for command in checked] == [
        {"plan": "pro"},
        {"order": "1"},
        {"why": "refund"},
    ]


def test_the_callers_dict_changed_after_an_edge_checked_it_changes_nothing_written(
    ledger: Ledger,
) -> None:
    metadata = {"order": "1"}
    command = RecordTransfer("t1", "bank", "alice", 5, metadata=metadata).checked_across_fields()
    metadata["sneaked"] = TOO_LONG  # after the rules passed, before the write
    outcome = ledger.record_transfer(command)
    assert outcome.transfer.metadata == {"order": "1"}
    assert ledger.get_transfer("t1").metadata == {"order": "1"}


def test_an_opening_and_an_update_checked_at_the_edge_write_what_was_checked(
    ledger: Ledger,
) -> None:
    metadata = {"plan": "free"}
    opening = OpenAccount("carol", "CREDITS", metadata=metadata).checked_across_fields()
    metadata["sneaked"] = TOO_LONG
    ledger.open_account(opening)
    assert ledger.get_account("carol").metadata == {"plan": "free"}
    changes: dict[str, str | None] = {"plan": "pro"}
    update = UpdateAccountMetadata("carol", changes).checked_beyond_body()
    changes["sneaked"] = TOO_LONG
    asyncio.run(ledger.update_account_async(update))
    assert ledger.get_account("carol").metadata == {"plan": "pro"}


def test_python_callers_may_pass_any_mapping_and_read_only_metadata_is_resent_alike(
    ledger: Ledger,
) -> None:
    read_only = MappingProxyType({"order": "7"})
    first = ledger.record_transfer(RecordTransfer("t7", "bank", "alice", 3, metadata=read_only))
    again = ledger.record_transfer(
        RecordTransfer("t7", "bank", "alice", 3, metadata={"order": "7"})
    )
    assert first.created
    assert not again.created
    assert again.transfer.metadata == {"order": "7"}
