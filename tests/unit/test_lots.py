"""Credit lots (app/domain/lots.py): the burn-down order, holds, reversals, expiry, overdraft.

The stateful test drives a LotBook the way the Account aggregate does (plan, then apply
what the plan says) with a simulated clock, and checks every step against a reference
model written independently below: a list of plain records, ordered by a comparison that
states the SPEC's rules one at a time instead of a sort key. After every step: the same
allocations as the model, expired credit never spent, lots sum to the balance, every
movement balanced across the account, the issuer, the spender and breakage.
"""

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.domain.errors import (
    GrantConsumedError,
    GrantExpiredError,
    GrantRemainingExceededError,
    GrantReservedError,
    LedgerError,
    LiveLotLimitExceededError,
    ValidationError,
)
from app.domain.lots import (
    GENERAL,
    LIVE_LOTS_MAX,
    Allocation,
    Category,
    Lot,
    LotBook,
    LotTerms,
    check_grant_terms,
    total,
)

START: Final = datetime(2026, 3, 1, tzinfo=UTC)
OVERDRAFT_LIMIT: Final = 40


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


def terms(
    sequence: int,
    *,
    expires: int | None = None,
    effective: int = 0,
    priority: int = 50,
    category: Category = "paid",
) -> LotTerms:
    return LotTerms(
        expires_at=None if expires is None else at(expires),
        effective_at=at(effective),
        priority=priority,
        category=category,
        sequence=sequence,
    )


def granted(book: LotBook, grant_id: str, amount: int, lot_terms: LotTerms) -> None:
    book.open_lot(grant_id, amount, book.plan_grant(grant_id, amount), lot_terms)


# Examples: one rule of the order at a time -------------------------------------------


def test_lower_priority_is_spent_first() -> None:
    book = LotBook()
    granted(book, "late", 10, terms(0, priority=60))
    granted(book, "early", 10, terms(1, priority=10))
    assert book.plan_spend(15, at(1)) == (Allocation("early", 10), Allocation("late", 5))


def test_earlier_expiry_is_spent_first_and_no_expiry_last() -> None:
    book = LotBook()
    granted(book, "never", 10, terms(0))
    granted(book, "later", 10, terms(1, expires=200))
    granted(book, "sooner", 10, terms(2, expires=100))
    assert book.plan_spend(25, at(1)) == (
        Allocation("sooner", 10),
        Allocation("later", 10),
        Allocation("never", 5),
    )


def test_promotional_is_spent_before_paid() -> None:
    book = LotBook()
    granted(book, "pack", 10, terms(0, category="paid"))
    granted(book, "promo", 10, terms(1, category="promotional"))
    assert book.plan_spend(12, at(1)) == (Allocation("promo", 10), Allocation("pack", 2))


def test_earlier_effective_time_then_earlier_grant_is_spent_first() -> None:
    book = LotBook()
    granted(book, "b", 10, terms(0, effective=5))
    granted(book, "a", 10, terms(1, effective=2))
    granted(book, "c", 10, terms(2, effective=2))
    assert book.plan_spend(25, at(10)) == (
        Allocation("a", 10),
        Allocation("c", 10),
        Allocation("b", 5),
    )


def test_future_and_expired_lots_are_in_the_balance_but_not_available() -> None:
    book = LotBook()
    granted(book, "future", 10, terms(0, effective=100))
    granted(book, "gone", 7, terms(1, expires=50))
    granted(book, "now", 3, terms(2))
    assert book.balance == 20
    assert book.available(at(10)) == 10
    assert book.available(at(60)) == 3
    assert book.available(at(100)) == 13
    assert book.plan_spend(5, at(60)) == (Allocation("now", 3), Allocation(GENERAL, 2))


def test_overdraft_goes_into_the_general_lot_and_the_next_grant_fills_it_first() -> None:
    book = LotBook()
    granted(book, "g1", 5, terms(0))
    book.consume(book.plan_spend(12, at(1)))
    assert book.general.remaining == -7
    assert book.balance == -7
    granted(book, "g2", 10, terms(1))
    assert book.general.remaining == 0
    lot = book.get("g2")
    assert lot is not None
    assert (lot.amount, lot.remaining) == (10, 3)
    assert book.balance == 3


def test_a_grant_that_only_fills_the_overdraft_opens_no_lot() -> None:
    book = LotBook()
    book.consume(book.plan_spend(12, at(1)))
    granted(book, "small", 5, terms(0))
    assert book.get("small") is None
    assert book.general.remaining == -7


def test_the_live_lot_limit_refuses_one_more_grant() -> None:
    book = LotBook(Lot(f"g{n}", terms(n), 1, 1) for n in range(LIVE_LOTS_MAX))
    with pytest.raises(LiveLotLimitExceededError) as refused:
        book.plan_grant("one-more", 1)
    assert refused.value.code == "live_lot_limit_exceeded"
    book.consume([Allocation("g0", 1)])
    assert book.plan_grant("one-more", 1) == 0


def test_a_hold_posted_in_part_returns_the_rest_to_the_same_lots() -> None:
    book = LotBook()
    granted(book, "promo", 10, terms(0, category="promotional"))
    granted(book, "pack", 10, terms(1))
    reservations = book.plan_spend(15, at(1))
    book.reserve(reservations)
    assert book.available(at(1)) == 5
    settlement = book.plan_settlement(reservations, 12, at(2))
    assert settlement.consumed == (Allocation("promo", 10), Allocation("pack", 2))
    assert settlement.released == (Allocation("pack", 3),)
    assert settlement.breakage == ()
    book.settle(settlement.consumed, settlement.released)
    assert book.get("promo") is None
    pack = book.get("pack")
    assert pack is not None
    assert (pack.remaining, pack.reserved) == (8, 0)


def test_a_hold_voided_after_its_lot_expired_sends_that_part_to_breakage() -> None:
    book = LotBook()
    granted(book, "promo", 10, terms(0, expires=50))
    reservations = book.plan_spend(6, at(1))
    book.reserve(reservations)
    assert book.plan_expiry(at(60)) == (Allocation("promo", 4),)
    book.consume(book.plan_expiry(at(60)))
    settlement = book.plan_settlement(reservations, 0, at(61))
    assert settlement.breakage == (Allocation("promo", 6),)
    book.settle(settlement.consumed, settlement.released)
    book.consume(settlement.breakage)
    assert book.get("promo") is None
    assert book.balance == 0


def test_a_spend_reversal_revives_a_consumed_lot_and_breaks_an_expired_one() -> None:
    book = LotBook()
    alive = terms(0)
    doomed = terms(1, expires=50, category="promotional")
    granted(book, "alive", 5, alive)
    granted(book, "doomed", 5, doomed)
    spent = book.plan_spend(10, at(1))
    book.consume(spent)
    assert len(book) == 1
    departed = {"alive": Lot("alive", alive, 5, 0), "doomed": Lot("doomed", doomed, 5, 0)}
    back = book.plan_return(spent, 8, at(60), departed)
    assert back.returned == (Allocation("alive", 5), Allocation("doomed", 3))
    assert back.breakage == (Allocation("doomed", 3),)
    book.restore(back.returned, back.revived)
    book.consume(back.breakage)
    lot = book.get("alive")
    assert lot is not None
    assert (lot.amount, lot.remaining) == (5, 5)
    assert book.get("doomed") is None
    assert book.balance == 5


def test_a_grant_reversal_takes_back_only_what_is_free_and_says_why_not() -> None:
    book = LotBook()
    granted(book, "g", 10, terms(0, expires=100))
    book.consume(book.plan_spend(4, at(1)))
    assert book.plan_claw_back("g", None, at(2)) == (Allocation("g", 6),)
    with pytest.raises(GrantRemainingExceededError):
        book.plan_claw_back("g", 7, at(2))
    book.reserve(book.plan_spend(6, at(3)))
    with pytest.raises(GrantReservedError):
        book.plan_claw_back("g", None, at(3))
    with pytest.raises(GrantConsumedError):
        book.plan_claw_back("gone", None, at(3))
    book.settle((), (Allocation("g", 6),))
    with pytest.raises(GrantExpiredError):
        book.plan_claw_back("g", None, at(100))


@pytest.mark.parametrize(
    ("priority", "category"), [(-1, "paid"), (101, "paid"), (True, "paid"), (50, "free")]
)
def test_grant_terms_out_of_range_are_refused(priority: object, category: object) -> None:
    with pytest.raises(ValidationError):
        check_grant_terms(priority, category)


# The reference model -------------------------------------------------------------------


@dataclass
class RefLot:
    grant_id: str | None
    amount: int
    remaining: int
    reserved: int
    expires: int | None
    effective: int
    priority: int
    category: str
    sequence: int

    def spendable(self, now: int) -> bool:
        return self.effective <= now and (self.expires is None or now < self.expires)


def compare(a: RefLot, b: RefLot) -> int:  # noqa: PLR0911  # one return per rule
    """The SPEC's order, one rule after the other."""
    if a.priority != b.priority:
        return -1 if a.priority < b.priority else 1
    if a.expires != b.expires:
        if a.expires is None:
            return 1
        if b.expires is None:
            return -1
        return -1 if a.expires < b.expires else 1
    if a.category != b.category:
        return -1 if a.category == "promotional" else 1
    if a.effective != b.effective:
        return -1 if a.effective < b.effective else 1
    return -1 if a.sequence < b.sequence else 1


@dataclass
class Model:
    now: int = 0
    lots: list[RefLot] = field(
        default_factory=lambda: [RefLot(None, 0, 0, 0, None, -(10**9), 50, "paid", -1)]
    )
    issuer: int = 0  # where grants and credits come from
    sink: int = 0  # where spends go
    breakage: int = 0
    terms: dict[str, RefLot] = field(default_factory=dict)

    def lot(self, grant_id: str | None) -> RefLot | None:
        return next((lot for lot in self.lots if lot.grant_id == grant_id), None)

    @property
    def general(self) -> RefLot:
        general = self.lot(None)
        assert general is not None
        return general

    def available(self) -> int:
        return sum(lot.remaining - lot.reserved for lot in self.lots if lot.spendable(self.now))

    def take(self, amount: int) -> list[tuple[str | None, int]]:
        taken: list[tuple[str | None, int]] = []
        for lot in sorted(self.lots, key=functools.cmp_to_key(compare)):
            free = lot.remaining - lot.reserved
            if amount and free > 0 and lot.spendable(self.now):
                part = min(free, amount)
                taken.append((lot.grant_id, part))
                amount -= part
        if amount:  # overdraft: the general lot gives the rest, in one entry
            if any(g is None for g, _ in taken):
                taken = [(g, p + amount if g is None else p) for g, p in taken]
            else:
                taken.append((None, amount))
        return taken

    def drop_empty(self) -> None:
        self.lots = [
            lot for lot in self.lots if lot.grant_id is None or lot.remaining or lot.reserved
        ]


def as_pairs(allocations: tuple[Allocation, ...]) -> list[tuple[str | None, int]]:
    return [(a.grant_id, a.amount) for a in allocations]


amounts = st.integers(min_value=1, max_value=30)


class LotsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = LotBook()
        self.model = Model()
        self.sequence = 0
        self.holds: dict[str, tuple[Allocation, ...]] = {}
        self.spends: dict[str, tuple[Allocation, ...]] = {}
        self.spent_left: dict[str, int] = {}  # what a spend can still give back
        self.departed: dict[str, Lot] = {}
        self.next_id = 0

    @initialize()
    def start(self) -> None:
        self.book = LotBook()

    def _new_id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    @property
    def now(self) -> datetime:
        return at(self.model.now)

    def _check_spendable(self, allocations: tuple[Allocation, ...]) -> None:
        for allocation in allocations:
            if allocation.grant_id is GENERAL:
                continue
            lot = self.book.get(allocation.grant_id)
            assert lot is not None
            assert lot.is_spendable(self.now), f"spent from {lot} at {self.now}"

    def _model_consume(self, pairs: list[tuple[str | None, int]]) -> None:
        for grant_id, part in pairs:
            lot = self.model.lot(grant_id)
            assert lot is not None
            lot.remaining -= part
        self.model.drop_empty()

    def _remember_departed(self) -> None:
        for grant_id, ref in self.model.terms.items():
            if self.book.get(grant_id) is None:
                self.departed[grant_id] = Lot(
                    grant_id,
                    terms(
                        ref.sequence,
                        expires=ref.expires,
                        effective=ref.effective,
                        priority=ref.priority,
                        category=ref.category,  # type: ignore[arg-type]
                    ),
                    ref.amount,
                    0,
                )

    @rule(
        amount=amounts,
        priority=st.sampled_from([0, 10, 50, 100]),
        category=st.sampled_from(["paid", "promotional"]),
        expires_in=st.none() | st.integers(min_value=1, max_value=300),
        effective_in=st.none() | st.integers(min_value=1, max_value=200),
    )
    def grant(
        self,
        amount: int,
        priority: int,
        category: Category,
        expires_in: int | None,
        effective_in: int | None,
    ) -> None:
        grant_id = self._new_id("g")
        effective = self.model.now + (effective_in or 0)
        expires = None if expires_in is None else self.model.now + expires_in
        lot_terms = terms(
            self.sequence,
            expires=expires,
            effective=effective,
            priority=priority,
            category=category,
        )
        filled = self.book.plan_grant(grant_id, amount)
        self.book.open_lot(grant_id, amount, filled, lot_terms)
        ref = RefLot(
            grant_id, amount, amount, 0, expires, effective, priority, category, self.sequence
        )
        self.sequence += 1
        self.model.terms[grant_id] = ref
        self.model.issuer -= amount
        fill = min(amount, max(0, -self.model.general.remaining))
        assert filled == fill
        self.model.general.remaining += fill
        ref.remaining -= fill
        if ref.remaining:
            self.model.lots.append(ref)
        self._remember_departed()

    @rule(amount=amounts)
    def credit_without_grant(self, amount: int) -> None:
        self.book.credit_general(amount)
        self.model.general.remaining += amount
        self.model.issuer -= amount

    def _fits(self, amount: int) -> bool:
        return self.model.available() - amount >= -OVERDRAFT_LIMIT

    @rule(amount=amounts)
    def spend(self, amount: int) -> None:
        if not self._fits(amount):
            return  # the account refuses it: nothing to plan
        allocations = self.book.plan_spend(amount, self.now)
        assert as_pairs(allocations) == self.model.take(amount)
        assert total(allocations) == amount
        self._check_spendable(allocations)
        self.book.consume(allocations)
        self._model_consume(as_pairs(allocations))
        spend_id = self._new_id("s")
        self.spends[spend_id] = allocations
        self.spent_left[spend_id] = amount
        self.model.sink += amount
        self._remember_departed()

    @rule(amount=amounts)
    def hold(self, amount: int) -> None:
        if not self._fits(amount):
            return
        reservations = self.book.plan_spend(amount, self.now)
        assert as_pairs(reservations) == self.model.take(amount)
        self._check_spendable(reservations)
        self.book.reserve(reservations)
        for grant_id, part in as_pairs(reservations):
            lot = self.model.lot(grant_id)
            assert lot is not None
            lot.reserved += part
        self.holds[self._new_id("h")] = reservations

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), post=st.booleans())
    def settle_hold(self, data: st.DataObject, post: bool) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.holds)))
        reservations = self.holds.pop(hold_id)
        reserved = total(reservations)
        posted = data.draw(st.integers(min_value=0, max_value=reserved)) if post else 0
        settlement = self.book.plan_settlement(reservations, posted, self.now)
        assert total(settlement.consumed) == posted
        assert total(settlement.consumed) + total(settlement.released) == reserved
        self.book.settle(settlement.consumed, settlement.released)
        self.book.consume(settlement.breakage)
        left = posted
        for grant_id, part in as_pairs(reservations):
            lot = self.model.lot(grant_id)
            assert lot is not None
            used = min(part, left)
            left -= used
            lot.reserved -= part
            lot.remaining -= used
            if grant_id is not None and lot.expires is not None and self.model.now >= lot.expires:
                lot.remaining -= part - used
                self.model.breakage += part - used
        self.model.sink += posted
        self.model.drop_empty()
        if posted:
            spend_id = self._new_id("s")
            self.spends[spend_id] = settlement.consumed
            self.spent_left[spend_id] = posted
        self._remember_departed()

    @rule()
    def expire(self) -> None:
        due = self.book.plan_expiry(self.now)
        self.book.consume(due)
        expected = 0
        for lot in self.model.lots:
            expired = lot.expires is not None and self.model.now >= lot.expires
            if lot.grant_id is not None and expired and lot.remaining > lot.reserved:
                expected += lot.remaining - lot.reserved
                lot.remaining = lot.reserved
        assert total(due) == expected
        self.model.breakage += expected
        self.model.drop_empty()
        self._remember_departed()

    @rule(seconds=st.integers(min_value=0, max_value=120))
    def advance_clock(self, seconds: int) -> None:
        self.model.now += seconds

    @precondition(lambda self: any(self.spent_left.values()))
    @rule(data=st.data())
    def reverse_spend(self, data: st.DataObject) -> None:
        spend_id = data.draw(
            st.sampled_from(sorted(s for s, left in self.spent_left.items() if left))
        )
        left = self.spent_left[spend_id]
        amount = data.draw(st.integers(min_value=1, max_value=left))
        allocations = self.spends[spend_id]
        given = total(allocations) - left  # given back already, latest-taken first
        remaining_allocations = _trim_from_end(allocations, given)
        back = self.book.plan_return(remaining_allocations, amount, self.now, self.departed)
        assert total(back.returned) == amount
        self.book.restore(back.returned, back.revived)
        self.book.consume(back.breakage)
        self.spent_left[spend_id] = left - amount
        self.model.sink -= amount
        for grant_id, part in as_pairs(back.returned):
            lot = self.model.lot(grant_id)
            if lot is None:
                assert grant_id is not None
                ref = self.model.terms[grant_id]
                lot = RefLot(**{**ref.__dict__, "remaining": 0, "reserved": 0})
                self.model.lots.append(lot)
            if grant_id is not None and lot.expires is not None and self.model.now >= lot.expires:
                self.model.breakage += part
            else:
                lot.remaining += part
        self.model.drop_empty()
        self._remember_departed()

    @precondition(lambda self: self.model.terms)
    @rule(data=st.data(), partial=st.booleans())
    def reverse_grant(self, data: st.DataObject, partial: bool) -> None:
        grant_id = data.draw(st.sampled_from(sorted(self.model.terms)))
        amount = data.draw(st.integers(min_value=1, max_value=30)) if partial else None
        lot = self.model.lot(grant_id)
        expected: type[LedgerError] | None = None
        if lot is None or lot.remaining - lot.reserved <= 0:
            reserved = lot is not None and lot.reserved > 0
            expected = GrantReservedError if reserved else GrantConsumedError
        elif lot.expires is not None and self.model.now >= lot.expires:
            expected = GrantExpiredError
        elif amount is not None and amount > lot.remaining - lot.reserved:
            expected = GrantRemainingExceededError
        if expected is not None:
            with pytest.raises(expected):
                self.book.plan_claw_back(grant_id, amount, self.now)
            return
        assert lot is not None
        taken = self.book.plan_claw_back(grant_id, amount, self.now)
        wanted = lot.remaining - lot.reserved if amount is None else amount
        assert as_pairs(taken) == [(grant_id, wanted)]
        self.book.consume(taken)
        lot.remaining -= wanted
        self.model.issuer += wanted
        self.model.drop_empty()
        self._remember_departed()

    # After every step -----------------------------------------------------------------

    @invariant()
    def lots_are_the_models(self) -> None:
        mine = sorted(
            ((lot.grant_id or "", lot.remaining, lot.reserved) for lot in self.book),
        )
        theirs = sorted(
            ((lot.grant_id or "", lot.remaining, lot.reserved) for lot in self.model.lots),
        )
        assert mine == theirs

    @invariant()
    def lots_sum_to_the_balance_and_every_movement_balances(self) -> None:
        balance = sum(lot.remaining for lot in self.model.lots)
        assert self.book.balance == balance
        assert self.model.issuer + balance + self.model.sink + self.model.breakage == 0

    @invariant()
    def available_counts_spendable_lots_only(self) -> None:
        assert self.book.available(self.now) == self.model.available()
        assert self.book.available(self.now) >= -OVERDRAFT_LIMIT

    @invariant()
    def expired_credit_is_never_available(self) -> None:
        for lot in self.book:
            if lot.grant_id is not None:
                assert 0 <= lot.reserved <= lot.remaining
                if lot.terms.is_expired(self.now):
                    assert not lot.is_spendable(self.now)


def _trim_from_end(allocations: tuple[Allocation, ...], given: int) -> tuple[Allocation, ...]:
    """What is left of a spend's allocations after ``given`` went back, latest first."""
    trimmed = list(allocations)
    while given:
        last = trimmed.pop()
        part = min(last.amount, given)
        given -= part
        if last.amount - part:
            trimmed.append(Allocation(last.grant_id, last.amount - part))
    return tuple(trimmed)


def test_lots_follow_the_reference_model_under_random_operations() -> None:
    run_state_machine_as_test(
        LotsMachine,
        settings=settings(max_examples=300, stateful_step_count=40, deadline=None),
    )
