"""Credit grants through the Ledger (SPEC invariant 7), on SQLite, a real PostgreSQL
server and the KurrentDB fake: lots, the burn-down order, allocations, expiry to breakage,
holds, reversals, overdraft and every new rejection code. The ledger's clock is simulated."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import DueGrant, TransferOutcome
from app.domain import errors
from app.domain.lots import GENERAL, LIVE_LOTS_MAX, Allocation
from app.domain.values import breakage_account_id, transfer_uuid
from tests.conftest import store_env, store_url

ISSUANCE = "issuance"
ALICE = "user:alice"
SHOP = "shop"
BREAKAGE = breakage_account_id("CREDITS")
START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres", "kurrentdb-fake"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Ledger]:
    url = store_url(str(request.param), tmp_path, request)
    ledger = Ledger(store_env(url), clock=clock)
    ledger.open_account(OpenAccount(ISSUANCE, "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(ALICE, "CREDITS", overdraft_limit=20))
    ledger.open_account(OpenAccount(SHOP, "CREDITS"))
    yield ledger
    ledger.close()


def grant(
    ledger: Ledger,
    grant_id: str,
    amount: int,
    *,
    expires_in: float | None = None,
    effective_in: float | None = None,
    priority: int = 50,
    category: str = "paid",
) -> None:
    now = ledger.clock()
    terms = GrantTerms(
        expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
        effective_at=None if effective_in is None else now + timedelta(seconds=effective_in),
        priority=priority,
        category=category,  # type: ignore[arg-type]
    )
    ledger.record_transfer(RecordTransfer(grant_id, ISSUANCE, ALICE, amount, grant=terms))


def spend(ledger: Ledger, transfer_id: str, amount: int) -> tuple[Allocation, ...]:
    return ledger.record_transfer(
        RecordTransfer(transfer_id, ALICE, SHOP, amount)
    ).transfer.allocations


def remaining(ledger: Ledger, grant_id: str) -> int | None:
    lot = ledger.account_lots(ALICE).get(grant_id)
    return None if lot is None else lot.remaining


def test_a_spend_takes_from_lots_in_the_burn_down_order_and_answers_its_allocations(
    ledger: Ledger,
) -> None:
    grant(ledger, "pack", 10)
    grant(ledger, "promo", 10, category="promotional", expires_in=3600)
    grant(ledger, "urgent", 5, priority=10)
    taken = spend(ledger, "s1", 18)
    assert taken == (Allocation("urgent", 5), Allocation("promo", 10), Allocation("pack", 3))
    assert ledger.get_transfer("s1").allocations == taken
    account = ledger.get_account(ALICE)
    assert (account.balance, account.available) == (7, 7)
    assert remaining(ledger, "pack") == 7
    assert remaining(ledger, "promo") is None  # consumed lots leave the account


def test_expired_credit_is_never_spent_even_before_the_expiry_transfer(
    ledger: Ledger, clock: Clock
) -> None:
    grant(ledger, "promo", 10, expires_in=60)
    clock.advance(60)
    account = ledger.get_account(ALICE)
    assert (account.balance, account.available) == (10, 0)
    with pytest.raises(errors.OverdraftLimitExceededError):
        spend(ledger, "s1", 21)
    assert spend(ledger, "s2", 5) == (Allocation(GENERAL, 5),)  # overdraft, not the lot
    assert remaining(ledger, "promo") == 10


def test_expiry_moves_the_remainder_to_breakage_once(ledger: Ledger, clock: Clock) -> None:
    grant(ledger, "promo", 10, expires_in=60)
    spend(ledger, "s1", 4)
    with pytest.raises(errors.GrantNotYetExpiredError):
        ledger.expire_grant("promo")
    clock.advance(61)
    first = ledger.expire_grant("promo")
    assert first is not None
    assert first.created
    assert (first.transfer.id, first.transfer.amount) == ("expiry:promo", 6)
    assert first.transfer.allocations == (Allocation("promo", 6),)
    head = ledger.recorder.max_notification_id()
    again = ledger.expire_grant("promo")
    assert again is not None
    assert not again.created
    assert ledger.recorder.max_notification_id() == head
    assert ledger.get_account(BREAKAGE).balance == 6
    assert ledger.get_account(ALICE).balance == 0
    assert remaining(ledger, "promo") is None


def test_a_batch_of_expiries_reads_no_grant_only_the_accounts_holding_the_lots(
    ledger: Ledger, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(ledger, "promo", 10, expires_in=60)
    grant(ledger, "bonus", 7, expires_in=60)
    grant(ledger, "later", 5, expires_in=3600)
    spend(ledger, "s1", 4)
    clock.advance(61)
    requested: list[UUID] = []
    load_one, load_many = ledger.load_aggregate, ledger.load_aggregates

    def one(originator_id: UUID) -> Aggregate | None:
        requested.append(originator_id)
        return load_one(originator_id)

    def many(originator_ids: list[UUID]) -> dict[UUID, Aggregate]:
        requested.extend(originator_ids)
        return load_many(originator_ids)

    monkeypatch.setattr(ledger, "load_aggregate", one)
    monkeypatch.setattr(ledger, "load_aggregates", many)
    due = [DueGrant("bonus", ALICE), DueGrant("later", ALICE), DueGrant("promo", ALICE)]
    bonus, later, promo = ledger.expire_grants(due)
    assert isinstance(bonus, TransferOutcome)
    assert isinstance(promo, TransferOutcome)
    assert (bonus.transfer.id, bonus.transfer.amount) == ("expiry:bonus", 7)
    assert (promo.transfer.id, promo.transfer.amount) == ("expiry:promo", 6)
    assert isinstance(later, errors.GrantNotYetExpiredError)
    assert not {transfer_uuid(g) for g in ("promo", "bonus", "later")} & set(requested)
    assert ledger.get_account(BREAKAGE).balance == 13
    assert remaining(ledger, "later") == 5


def test_a_batch_expiry_of_a_lot_already_gone_writes_nothing_and_reads_no_transfer(
    ledger: Ledger, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant(ledger, "promo", 10, expires_in=60)
    grant(ledger, "used", 5, priority=0, expires_in=60)
    spend(ledger, "s1", 5)  # "used" is consumed: its lot has gone
    clock.advance(61)
    (moved,) = ledger.expire_grants([DueGrant("promo", ALICE)])
    assert isinstance(moved, TransferOutcome)
    assert moved.created
    head = ledger.recorder.max_notification_id()
    requested: list[UUID] = []
    load_one = ledger.load_aggregate

    def one(originator_id: UUID) -> Aggregate | None:
        requested.append(originator_id)
        return load_one(originator_id)

    monkeypatch.setattr(ledger, "load_aggregate", one)
    # The view lagging behind its own expiries names "promo" again; "used" has no lot.
    assert ledger.expire_grants([DueGrant("promo", ALICE), DueGrant("used", ALICE)]) == [
        None,
        None,
    ]
    assert ledger.recorder.max_notification_id() == head
    transfers = {transfer_uuid(i) for i in ("promo", "used", "expiry:promo", "expiry:used")}
    assert not transfers & set(requested)
    (unknown,) = ledger.expire_grants([DueGrant("promo", "nobody")])
    assert isinstance(unknown, errors.AccountNotFoundError)
    assert ledger.get_account(BREAKAGE).balance == 10


def test_a_future_grant_is_in_the_balance_but_not_available_until_its_time(
    ledger: Ledger, clock: Clock
) -> None:
    grant(ledger, "later", 10, effective_in=100)
    account = ledger.get_account(ALICE)
    assert (account.balance, account.available) == (10, 0)
    clock.advance(100)
    assert ledger.get_account(ALICE).available == 10


def test_a_hold_reserves_from_lots_and_its_post_returns_the_rest_to_the_same_lots(
    ledger: Ledger,
) -> None:
    grant(ledger, "promo", 10, category="promotional")
    grant(ledger, "pack", 10)
    hold = ledger.record_transfer(RecordTransfer("h1", ALICE, SHOP, 15, pending=True))
    assert hold.transfer.allocations == (Allocation("promo", 10), Allocation("pack", 5))
    assert ledger.get_account(ALICE).available == 5
    posted = ledger.post_pending("h1", 12)
    assert posted.transfer.allocations == (Allocation("promo", 10), Allocation("pack", 2))
    assert remaining(ledger, "pack") == 8
    assert ledger.get_account(ALICE).available == 8


def test_a_void_after_the_lot_expired_sends_the_reserved_part_to_breakage(
    ledger: Ledger, clock: Clock
) -> None:
    grant(ledger, "promo", 10, expires_in=60)
    ledger.record_transfer(RecordTransfer("h1", ALICE, SHOP, 6, pending=True))
    clock.advance(61)
    moved = ledger.expire_grant("promo")
    assert moved is not None
    assert moved.transfer.amount == 4  # the reserved part stays with the hold
    ledger.void_pending("h1")
    assert ledger.get_account(BREAKAGE).balance == 10
    assert ledger.get_transfer("breakage:h1").allocations == (Allocation("promo", 6),)
    assert ledger.get_account(ALICE).balance == 0


def test_a_hold_that_times_out_returns_its_reservations_to_their_lots_or_to_breakage(
    ledger: Ledger, clock: Clock
) -> None:
    # A hold's timeout runs from its time stamp (the wall clock): the simulated clock
    # starts there.
    clock.now = datetime.now(tz=UTC)
    grant(ledger, "promo", 10, expires_in=60, priority=10)
    grant(ledger, "pack", 10, priority=20)
    grant(ledger, "spare", 10, priority=90)
    hold = RecordTransfer("h1", ALICE, SHOP, 15, pending=True, timeout_seconds=120)
    reserved = ledger.record_transfer(hold).transfer.allocations
    assert reserved == (Allocation("promo", 10), Allocation("pack", 5))
    lots = ledger.account_lots(ALICE)
    assert [(lot.remaining, lot.reserved) for lot in lots if lot.grant_id] == [
        (10, 10),
        (10, 5),
        (10, 0),
    ]
    clock.advance(61)  # promo expires while the hold still holds all of it
    assert ledger.expire_grant("promo") is None  # nothing free to move: all reserved
    clock.advance(60)
    expired = ledger.expire_pending("h1")
    assert expired.transfer.status == "expired"
    lots = ledger.account_lots(ALICE)
    assert lots.get("promo") is None  # expired meanwhile: its part went to breakage
    assert [(lot.grant_id, lot.remaining, lot.reserved) for lot in lots if lot.grant_id] == [
        ("pack", 10, 0),
        ("spare", 10, 0),
    ]
    assert ledger.get_transfer("breakage:h1").allocations == (Allocation("promo", 10),)
    assert ledger.get_account(BREAKAGE).balance == 10
    alice = ledger.get_account(ALICE)
    assert (alice.balance, alice.available, alice.debits_pending) == (20, 20, 0)
    assert ledger.get_account(SHOP).balance == 0
    again = ledger.expire_pending("h1")  # the worker running twice writes nothing more
    assert again.transfer.status == "expired"
    assert ledger.get_account(BREAKAGE).balance == 10


def test_reversing_a_spend_returns_each_allocation_to_its_lot(ledger: Ledger, clock: Clock) -> None:
    grant(ledger, "pack", 5)
    grant(ledger, "promo", 5, expires_in=60, category="promotional")
    spend(ledger, "s1", 10)
    clock.advance(61)
    reversal = ledger.reverse_transfer("s1", "r1")
    assert reversal.transfer.amount == 10
    assert remaining(ledger, "pack") == 5  # revived
    assert remaining(ledger, "promo") is None  # expired meanwhile: straight to breakage
    assert ledger.get_account(BREAKAGE).balance == 5
    assert ledger.get_account(ALICE).balance == 5


def test_a_partial_reversal_gives_back_the_latest_taken_first(ledger: Ledger) -> None:
    grant(ledger, "promo", 5, category="promotional")
    grant(ledger, "pack", 5)
    spend(ledger, "s1", 10)
    ledger.reverse_transfer("s1", "r1", amount=3)
    assert remaining(ledger, "pack") == 3
    assert remaining(ledger, "promo") is None


def test_reversing_a_grant_claws_back_what_is_left_and_refuses_a_consumed_one(
    ledger: Ledger,
) -> None:
    grant(ledger, "g1", 10)
    spend(ledger, "s1", 4)
    clawed = ledger.reverse_transfer("g1", "r1")
    assert clawed.transfer.amount == 6
    assert clawed.transfer.allocations == (Allocation("g1", 6),)
    assert ledger.get_account(ALICE).balance == 0
    grant(ledger, "g2", 5)
    spend(ledger, "s2", 5)
    before = ledger.get_account(ALICE)
    with pytest.raises(errors.GrantConsumedError) as refused:
        ledger.reverse_transfer("g2", "r2")
    assert refused.value.code == "grant_consumed"
    assert ledger.get_account(ALICE) == before


def test_a_partial_grant_reversal_past_what_is_left_is_refused(ledger: Ledger) -> None:
    grant(ledger, "g1", 10)
    spend(ledger, "s1", 4)
    with pytest.raises(errors.GrantRemainingExceededError):
        ledger.reverse_transfer("g1", "r1", amount=7)
    assert ledger.reverse_transfer("g1", "r1", amount=6).transfer.amount == 6


def test_an_expired_grant_cannot_be_reversed(ledger: Ledger, clock: Clock) -> None:
    grant(ledger, "g1", 10, expires_in=10)
    clock.advance(10)
    with pytest.raises(errors.GrantExpiredError):
        ledger.reverse_transfer("g1", "r1")


def test_an_overdraft_goes_into_the_general_lot_and_the_next_grant_fills_it_first(
    ledger: Ledger,
) -> None:
    spend(ledger, "s1", 15)
    grant(ledger, "g1", 20)
    assert remaining(ledger, "g1") == 5
    lots = ledger.account_lots(ALICE)
    assert lots.general.remaining == 0
    assert ledger.get_account(ALICE).balance == 5


def test_the_live_lot_limit_refuses_one_more_grant_with_a_clear_code(ledger: Ledger) -> None:
    ledger.record_batch(
        [
            RecordTransfer(f"g{n}", ISSUANCE, ALICE, 1, grant=GrantTerms())
            for n in range(LIVE_LOTS_MAX)
        ],
        atomic=True,
    )
    with pytest.raises(errors.LiveLotLimitExceededError) as refused:
        grant(ledger, "one-more", 1)
    assert refused.value.code == "live_lot_limit_exceeded"


def test_a_reversal_that_would_revive_a_consumed_lot_past_the_live_lot_limit_is_refused(
    ledger: Ledger, clock: Clock
) -> None:
    grant(ledger, "early", 5, priority=0, expires_in=60)
    spend(ledger, "s1", 5)  # consumes "early": its lot leaves the account
    ledger.record_batch(
        [
            RecordTransfer(f"g{n}", ISSUANCE, ALICE, 1, grant=GrantTerms())
            for n in range(LIVE_LOTS_MAX)
        ],
        atomic=True,
    )
    head = ledger.recorder.max_notification_id()
    with pytest.raises(errors.LiveLotLimitExceededError) as refused:
        ledger.reverse_transfer("s1", "r1")
    assert refused.value.code == "live_lot_limit_exceeded"
    assert ledger.recorder.max_notification_id() == head
    assert remaining(ledger, "early") is None
    assert ledger.get_account(ALICE).balance == LIVE_LOTS_MAX
    # Once the lot has expired it would not stay: the reversal goes through, to breakage.
    clock.advance(61)
    reversal = ledger.reverse_transfer("s1", "r1")
    assert reversal.transfer.amount == 5
    assert remaining(ledger, "early") is None
    assert ledger.get_account(BREAKAGE).balance == 5
    assert ledger.get_account(ALICE).balance == LIVE_LOTS_MAX


def test_a_grant_is_part_of_the_idempotent_body(ledger: Ledger) -> None:
    grant(ledger, "g1", 10, priority=10)
    grant(ledger, "g1", 10, priority=10)  # the same body: a replay
    with pytest.raises(errors.IdempotencyConflictError):
        grant(ledger, "g1", 10, priority=20)
    with pytest.raises(errors.IdempotencyConflictError):
        ledger.record_transfer(RecordTransfer("g1", ISSUANCE, ALICE, 10))


@pytest.mark.parametrize(
    "terms",
    [
        GrantTerms(priority=101),
        GrantTerms(category="gift"),  # type: ignore[arg-type]
        GrantTerms(expires_at=datetime(2026, 1, 1)),  # no offset: refused
        GrantTerms(
            expires_at=datetime(2026, 1, 1, tzinfo=UTC),
            effective_at=datetime(2026, 2, 1, tzinfo=UTC),
        ),
    ],
)
def test_grant_terms_out_of_range_are_refused(ledger: Ledger, terms: GrantTerms) -> None:
    with pytest.raises(errors.ValidationError):
        ledger.record_transfer(RecordTransfer("g1", ISSUANCE, ALICE, 1, grant=terms))


def test_a_grant_cannot_be_pending(ledger: Ledger) -> None:
    with pytest.raises(errors.ValidationError):
        ledger.record_transfer(
            RecordTransfer("g1", ISSUANCE, ALICE, 1, pending=True, grant=GrantTerms())
        )


def test_lots_survive_a_restart_from_snapshots_and_streams(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    first = Ledger(store_env(url), clock=clock)
    first.open_account(OpenAccount(ISSUANCE, "CREDITS", allow_negative=True))
    first.open_account(OpenAccount(ALICE, "CREDITS"))
    terms = GrantTerms(expires_at=START + timedelta(days=1), priority=5)
    first.record_transfer(RecordTransfer("g1", ISSUANCE, ALICE, 700, grant=terms))
    first.record_batch(
        [RecordTransfer(f"s{n}", ALICE, ISSUANCE, 1) for n in range(600)], atomic=True
    )
    first.close()
    again = Ledger(store_env(url), clock=clock)
    lot = again.account_lots(ALICE).get("g1")
    assert lot is not None
    assert (lot.remaining, lot.terms.priority, lot.terms.expires_at) == (
        100,
        5,
        START + timedelta(days=1),
    )
    again.close()
