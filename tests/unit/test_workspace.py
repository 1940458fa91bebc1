"""The workspace's per-command rollback, and the rule it rests on: aggregate state is
immutable values, or containers of them, so that an image one level deep restores it."""

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.workspace import Workspace, immutable_state_problems
from app.domain.account import Account
from app.domain.errors import InsufficientFundsError
from app.domain.transfer import Transfer
from app.domain.values import account_uuid, transfer_uuid


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    ledger.open_account(OpenAccount("issuer", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS", metadata={"tier": "gold"}))
    ledger.open_account(OpenAccount("bob", "CREDITS"))
    ledger.record_transfer(RecordTransfer("fund", "issuer", "alice", 100))
    ledger.record_transfer(RecordTransfer("hold", "alice", "bob", 10, pending=True))
    ledger.post_pending("hold", 7)
    ledger.record_transfer(RecordTransfer("spend", "alice", "bob", 5))
    ledger.reverse_transfer("spend", "refund")
    yield ledger
    ledger.close()


def stored(ledger: Ledger, originator_id: UUID) -> Aggregate:
    aggregate = ledger.load_aggregate(originator_id)
    assert aggregate is not None
    return aggregate


def test_every_aggregate_holds_only_state_an_undo_image_can_restore(ledger: Ledger) -> None:
    aggregates = [stored(ledger, account_uuid(i)) for i in ("issuer", "alice", "bob")]
    aggregates += [stored(ledger, transfer_uuid(i)) for i in ("fund", "hold", "spend", "refund")]
    assert {type(aggregate) for aggregate in aggregates} == {Account, Transfer}
    for aggregate in aggregates:
        assert immutable_state_problems(aggregate) == [], type(aggregate).__name__


def test_a_container_of_mutable_objects_in_aggregate_state_is_reported() -> None:
    class Lot:
        def __init__(self) -> None:
            self.remaining = 5

    account = Account.open("carol", "CREDITS", False, 0, {})
    account.lots_by_grant = {"grant-1": Lot()}  # type: ignore[attr-defined]
    assert immutable_state_problems(account) == ["lots_by_grant"]


def test_a_rejected_command_is_rolled_back_to_exactly_what_it_found(ledger: Ledger) -> None:
    work = Workspace(ledger)
    work.begin()
    alice = work.account("alice")
    before = copy.deepcopy(vars(alice))
    work.begin()
    alice = work.account("alice")
    bob = work.account("bob")
    created = work.add(Transfer.record("t", "alice", "bob", 1, "CREDITS", False, None, {}, None))
    alice.debit("t", 1, pending=False, now=datetime.now(tz=UTC))
    alice.metadata["tier"] = "changed in place"
    with pytest.raises(InsufficientFundsError):
        bob.check_debit(1_000, datetime.now(tz=UTC))
    work.rollback()
    restored = dict(vars(alice))
    assert list(restored.pop("lots")) == list(before.pop("lots"))
    assert restored == before
    assert alice.metadata == {"tier": "gold"}
    assert work.find_transfer("t") is None
    assert created.transfer_id not in work.transfers


def test_a_rejected_first_command_drops_what_it_changed_and_reads_it_again(
    ledger: Ledger,
) -> None:
    """No earlier command of the group changed alice: she is not imaged, and once the
    command that debited her is rejected she is read again from the store, as it was."""
    before = copy.deepcopy(vars(stored(ledger, account_uuid("alice"))))
    work = Workspace(ledger)
    work.begin()
    alice = work.account("alice")
    bob = work.account("bob")
    alice.debit("t", 1, pending=False, now=datetime.now(tz=UTC))
    with pytest.raises(InsufficientFundsError):
        bob.check_debit(1_000, datetime.now(tz=UTC))
    work.rollback()
    assert work.account("bob") is bob, "only read: kept as it is"
    again = work.account("alice")
    assert again is not alice, "changed: dropped, and read again"
    restored = dict(vars(again))
    assert list(restored.pop("lots")) == list(before.pop("lots"))
    assert restored == before
    assert stored(ledger, account_uuid("alice")) is again, "the writer's cache holds the reread"


def test_only_the_groups_new_aggregates_of_kept_commands_are_new(ledger: Ledger) -> None:
    work = Workspace(ledger)
    work.begin()
    kept = work.add(Transfer.record("k", "alice", "bob", 1, "CREDITS", False, None, {}, None))
    work.begin()
    work.add(Transfer.record("r", "alice", "bob", 1, "CREDITS", False, None, {}, None))
    work.rollback()
    assert work.created() == [kept]
    assert work.account("alice") not in work.created()


def test_a_workspace_keeping_bases_puts_back_what_its_commands_changed_but_not_new_ones(
    ledger: Ledger,
) -> None:
    """After a failed write the group's aggregates are ahead of the store: with
    ``keep_bases`` each stored one goes back to exactly what the group first read,
    however many of its commands changed it; what the group created is not put back."""
    before = copy.deepcopy(vars(stored(ledger, account_uuid("alice"))))
    work = Workspace(ledger, keep_bases=True)
    for number in range(2):
        work.begin()
        alice = work.account("alice")
        work.account("bob").credit(f"t{number}", 1, pending=False)
        alice.debit(f"t{number}", 1, pending=False, now=datetime.now(tz=UTC))
        alice.metadata["tier"] = f"changed by command {number}"
        work.add(Transfer.record(f"t{number}", "alice", "bob", 1, "CREDITS", False, None, {}, None))
    assert alice.version == before["_version"] + 2
    assert work.restore_bases() == {account_uuid("alice"), account_uuid("bob")}
    restored = dict(vars(alice))
    assert list(restored.pop("lots")) == list(before.pop("lots"))
    assert restored == before
    assert alice.metadata == {"tier": "gold"}
    assert stored(ledger, account_uuid("alice")) is alice, "still the cached object"
    assert Workspace(ledger).restore_bases() == set(), "without keep_bases nothing is imaged"
