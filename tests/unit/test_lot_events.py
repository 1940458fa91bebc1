"""Events and snapshots evolved. Lots (class_version 2): version 1 events and snapshots
written before lots existed still load, fold to the same balances (all in the general
lot) and keep verifying in the hash chain. The opening's metadata (account version 3) is
kept through updates."""

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Snapshot

from app.domain.account import Account
from app.domain.chain import GENESIS, chain_digest, expected_chain
from app.domain.lots import GENERAL, Allocation, Lot, LotBook
from app.domain.transfer import Transfer
from app.persistence.transcodings import LotBookAsList

MOMENT = datetime(2026, 3, 1, tzinfo=UTC)
DEBITED: Any = Account.Debited  # built by hand here, as the mapper would from a record


def test_a_version_1_debit_is_upcast_to_a_debit_from_the_general_lot() -> None:
    state: dict[str, Any] = {"transfer_id": "t1", "amount": 7}
    Account.Debited.upcast_v1_v2(state)
    assert state["allocations"] is None
    event = DEBITED(
        originator_id=uuid4(),
        originator_version=3,
        timestamp=MOMENT,
        chain="x",
        **state,
    )
    account = Account.open("a", "CREDITS", False, 0, {})
    account.credit("t0", 10, pending=False)
    event.apply(account)
    assert account.lots.general.remaining == 3
    assert account.balance == 3


def test_a_version_1_event_upcast_still_verifies_in_the_chain() -> None:
    originator_id = uuid4()
    written = {"transfer_id": "t1", "amount": 7}
    chain = chain_digest(GENESIS, "Account.Debited", originator_id, 1, MOMENT, written)
    upcast = dict(written)
    Account.Debited.upcast_v1_v2(upcast)
    event = DEBITED(
        originator_id=originator_id, originator_version=1, timestamp=MOMENT, chain=chain, **upcast
    )
    assert expected_chain(GENESIS, event) == chain


def test_a_version_2_event_hashes_its_allocations() -> None:
    originator_id = uuid4()
    fields = {"transfer_id": "t1", "amount": 7, "allocations": [{"grant_id": "g", "amount": 7}]}
    chain = chain_digest(GENESIS, "Account.Debited", originator_id, 1, MOMENT, fields)
    forged = {**fields, "allocations": [{"grant_id": None, "amount": 7}]}
    event = DEBITED(
        originator_id=originator_id, originator_version=1, timestamp=MOMENT, chain=chain, **forged
    )
    assert expected_chain(GENESIS, event) != chain


def test_a_version_1_transfer_has_no_grant_and_its_hold_reserved_the_general_lot() -> None:
    state: dict[str, Any] = {}
    Transfer.TransferRecorded.upcast_v1_v2(state)
    assert state == {"grant": None, "allocations": None}
    posted: dict[str, Any] = {"amount": 3}
    Transfer.PendingPosted.upcast_v1_v2(posted)
    assert posted["allocations"] is None


def test_a_version_1_snapshot_puts_the_balance_and_holds_in_the_general_lot() -> None:
    state: dict[str, Any] = {"credits_posted": 50, "debits_posted": 20, "debits_pending": 5}
    Account.upcast_v1_v2(state)
    book: LotBook = state["lots"]
    assert (book.general.remaining, book.general.reserved) == (30, 5)
    assert state["grants_received"] == 0


def test_a_lot_book_round_trips_through_its_snapshot_transcoding() -> None:
    book = LotBook([Lot("g1", LotBook().general.terms, 9, 4, 1)])
    book.consume([Allocation(GENERAL, 3)])
    transcoding = LotBookAsList()
    copy = transcoding.decode(transcoding.encode(book))
    assert list(copy) == list(book)


def test_an_account_keeps_its_opening_metadata_through_updates_and_its_snapshot() -> None:
    account = Account.open("a", "CREDITS", False, 0, {"plan": "free"})
    account.update_metadata({"plan": "pro"})
    assert account.metadata == {"plan": "pro"}
    assert account.same_opening("CREDITS", False, 0, {"plan": "free"})
    assert not account.same_opening("CREDITS", False, 0, {"plan": "pro"})
    copy: Any = Snapshot.take(account).mutate(None)
    assert copy.same_opening("CREDITS", False, 0, {"plan": "free"})


def test_a_version_2_snapshot_compares_a_resent_opening_with_the_metadata_it_holds() -> None:
    """A version 2 snapshot does not say what the opening's metadata was: a resend is
    compared with the metadata as it stood in the snapshot (the earlier rule)."""
    account = Account.open("a", "CREDITS", False, 0, {"plan": "free"})
    account.update_metadata({"plan": "pro"})
    snapshot = Snapshot.take(account)
    state = dict(snapshot.state)
    del state["opened_metadata"]
    state["class_version"] = 2
    old = Snapshot(
        originator_id=snapshot.originator_id,
        originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp,
        topic=snapshot.topic,
        state=state,
    )
    copy: Any = old.mutate(None)
    assert copy.opened_metadata is None
    assert copy.same_opening("CREDITS", False, 0, {"plan": "pro"})
    assert not copy.same_opening("CREDITS", False, 0, {"plan": "free"})
