"""Credit lots: what an account's balance is made of, and the order it is spent in.

A **grant** is a credit that opens a lot with its own terms (expiry, effective time,
priority, category). Every other credit joins the account's **general lot** (no expiry,
priority 50, paid, always effective), which is also where an overdraft goes: spending past
the spendable lots takes the general lot below zero, and later credits fill it first.

Spending (a posted debit or a hold) takes from the *spendable* lots — effective now and not
expired — in the **burn-down order**:

1. priority ascending (0 first);
2. expiry ascending, lots without expiry last;
3. promotional before paid;
4. effective time ascending (the general lot counts as effective since always);
5. grant sequence ascending: the order the grants reached this account's stream, which is
   the order of their log positions (the general lot comes first).

The :class:`LotBook` keeps the live lots of one account. Its ``plan_*`` methods are pure
(they read the book and the given time and say what a command would do); the other
methods apply what an event recorded and are deterministic, so that replaying an account's
stream rebuilds the same book. Invariants kept by every method:

- the lots' ``remaining`` sum to the account's balance;
- a grant lot has ``0 <= reserved <= remaining``; only the general lot may go negative;
- a grant lot leaves the book when nothing remains in it (consumed or expired and moved
  to breakage), so the book holds live lots only, at most :data:`LIVE_LOTS_MAX`.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Literal

from app.domain.errors import (
    GrantConsumedError,
    GrantExpiredError,
    GrantRemainingExceededError,
    GrantReservedError,
    LiveLotLimitExceededError,
    ValidationError,
)

Category = Literal["paid", "promotional"]
CATEGORIES: Final[tuple[Category, ...]] = ("paid", "promotional")
LotStatus = Literal["live", "expired", "consumed"]

PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 100
PRIORITY_DEFAULT: Final = 50
CATEGORY_DEFAULT: Final[Category] = "paid"
# Live grant lots one account may hold (the general lot not counted). It bounds the
# aggregate's size and the cost of a spend; past it a grant is refused, not queued.
LIVE_LOTS_MAX: Final = 1000

# The general lot has no grant: ``None`` stands for it wherever a grant id is expected.
GENERAL: Final = None
GrantId = str | None

_ALWAYS: Final = datetime.min.replace(tzinfo=UTC)
_NEVER: Final = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LotTerms:
    """What a grant says about its lot. ``sequence`` orders grants of one account."""

    expires_at: datetime | None
    effective_at: datetime
    priority: int
    category: Category
    sequence: int

    def burn_down_key(self) -> tuple[int, bool, datetime, bool, datetime, int]:
        return (
            self.priority,
            self.expires_at is None,
            _NEVER if self.expires_at is None else self.expires_at,
            self.category != "promotional",
            self.effective_at,
            self.sequence,
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def is_effective(self, now: datetime) -> bool:
        return self.effective_at <= now


GENERAL_TERMS: Final = LotTerms(
    expires_at=None,
    effective_at=_ALWAYS,
    priority=PRIORITY_DEFAULT,
    category=CATEGORY_DEFAULT,
    sequence=-1,
)


@dataclass(frozen=True, slots=True)
class Allocation:
    """How much one lot gave to (or got back from) one movement."""

    grant_id: GrantId
    amount: int


@dataclass(frozen=True, slots=True)
class Lot:
    grant_id: GrantId
    terms: LotTerms
    amount: int  # as granted
    remaining: int  # still in the lot, reserved part included
    reserved: int = 0  # held by pending debits

    @property
    def free(self) -> int:
        return self.remaining - self.reserved

    def is_spendable(self, now: datetime) -> bool:
        return self.terms.is_effective(now) and not self.terms.is_expired(now)

    def status(self, now: datetime) -> LotStatus:
        if self.remaining == 0 and self.reserved == 0:
            return "consumed"
        return "expired" if self.terms.is_expired(now) else "live"


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a hold ends: ``consumed`` posts, ``released`` goes back to its lots, and
    ``breakage`` is the part of ``released`` whose lot has expired meanwhile (it must
    leave the account for breakage in the same command)."""

    consumed: tuple[Allocation, ...]
    released: tuple[Allocation, ...]
    breakage: tuple[Allocation, ...]


@dataclass(frozen=True, slots=True)
class Return:
    """What a reversal gives back: ``returned`` to lots (``revived`` lists lots that had
    left the book and come back), and ``breakage`` for lots expired meanwhile."""

    returned: tuple[Allocation, ...]
    revived: tuple[Lot, ...]
    breakage: tuple[Allocation, ...]


def check_grant_terms(
    priority: object = PRIORITY_DEFAULT, category: object = CATEGORY_DEFAULT
) -> tuple[int, Category]:
    """The edge's check of a grant's priority and category (times are checked by the caller)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValidationError("grant.priority must be an integer", field="grant.priority")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValidationError(
            f"grant.priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}",
            field="grant.priority",
        )
    if category == "paid":
        return priority, "paid"
    if category == "promotional":
        return priority, "promotional"
    raise ValidationError("grant.category must be 'paid' or 'promotional'", field="grant.category")


def merged(allocations: Iterable[Allocation]) -> tuple[Allocation, ...]:
    """One entry per lot, in first-seen order, without zero amounts."""
    totals: dict[GrantId, int] = {}
    for allocation in allocations:
        totals[allocation.grant_id] = totals.get(allocation.grant_id, 0) + allocation.amount
    return tuple(Allocation(grant, amount) for grant, amount in totals.items() if amount)


def total(allocations: Iterable[Allocation]) -> int:
    return sum(allocation.amount for allocation in allocations)


class LotBook:
    """The live lots of one account (see the module docstring)."""

    __slots__ = ("_lots", "_order")

    def __init__(self, lots: Iterable[Lot] = ()) -> None:
        self._lots: dict[GrantId, Lot] = {GENERAL: Lot(GENERAL, GENERAL_TERMS, 0, 0)}
        for lot in lots:
            self._lots[lot.grant_id] = lot
        self._order: list[GrantId] | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> "LotBook":
        # Lots are immutable and the order list is replaced, never changed in place: a
        # new dict is a full copy. (The aggregate cache deep-copies every account it
        # hands out; copying each lot would cost a spend O(lots) object copies.)
        book = LotBook.__new__(LotBook)
        book._lots = dict(self._lots)
        book._order = self._order
        return book

    # Reading --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Lot]:
        """Every lot (the general lot included) in burn-down order."""
        return (self._lots[grant_id] for grant_id in self._burn_down_order())

    def __len__(self) -> int:
        return len(self._lots)

    def get(self, grant_id: GrantId) -> Lot | None:
        return self._lots.get(grant_id)

    @property
    def general(self) -> Lot:
        return self._lots[GENERAL]

    @property
    def live_grants(self) -> int:
        return len(self._lots) - 1

    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self._lots.values())

    @property
    def reserved(self) -> int:
        return sum(lot.reserved for lot in self._lots.values())

    def available(self, now: datetime) -> int:
        """What may be spent now: the free part of the spendable lots. Reserved parts of
        lots that expired meanwhile stay with their holds, counted nowhere."""
        if len(self._lots) == 1:
            return self.general.free
        return sum(lot.free for lot in self._lots.values() if lot.is_spendable(now))

    def _burn_down_order(self) -> list[GrantId]:
        if self._order is None:
            self._order = sorted(self._lots, key=lambda g: self._lots[g].terms.burn_down_key())
        return self._order

    # Planning (pure) --------------------------------------------------------------------

    def plan_spend(self, amount: int, now: datetime) -> tuple[Allocation, ...]:
        """Where ``amount`` comes from: the spendable lots' free parts in burn-down order,
        then (overdraft) the general lot below what it holds. The caller has already
        checked the account's floor against :meth:`available`."""
        assert amount > 0
        if len(self._lots) == 1:
            return (Allocation(GENERAL, amount),)
        allocations: list[Allocation] = []
        left = amount
        for grant_id in self._burn_down_order():
            lot = self._lots[grant_id]
            if lot.free <= 0 or not lot.is_spendable(now):
                continue
            taken = min(lot.free, left)
            allocations.append(Allocation(grant_id, taken))
            left -= taken
            if not left:
                break
        if left:
            allocations.append(Allocation(GENERAL, left))
        return merged(allocations)

    def plan_settlement(
        self, reservations: Sequence[Allocation], posted_amount: int, now: datetime
    ) -> Settlement:
        """A hold posts ``posted_amount`` of what it reserved, in the order it reserved it;
        the rest goes back to the same lots, or to breakage where the lot has expired."""
        assert 0 <= posted_amount <= total(reservations)
        consumed: list[Allocation] = []
        released: list[Allocation] = []
        left = posted_amount
        for reservation in reservations:
            taken = min(reservation.amount, left)
            left -= taken
            if taken:
                consumed.append(Allocation(reservation.grant_id, taken))
            if reservation.amount - taken:
                released.append(Allocation(reservation.grant_id, reservation.amount - taken))
        breakage = [r for r in released if self._is_expired(r.grant_id, now)]
        return Settlement(tuple(consumed), tuple(released), tuple(breakage))

    def plan_expiry(self, now: datetime) -> tuple[Allocation, ...]:
        """The free remainder of every expired lot, due to breakage (earliest first)."""
        return tuple(
            Allocation(lot.grant_id, lot.free)
            for lot in self
            if lot.grant_id is not GENERAL and lot.terms.is_expired(now) and lot.free > 0
        )

    def plan_claw_back(
        self, grant_id: str, amount: int | None, now: datetime
    ) -> tuple[Allocation, ...]:
        """A grant's reversal takes back what is still free in its lot (all of it, or
        ``amount``): never what was spent, reserved or has expired."""
        lot = self._lots.get(grant_id)
        if lot is None or lot.free <= 0:
            reserved = 0 if lot is None else lot.reserved
            if reserved:
                raise GrantReservedError(
                    f"grant {grant_id} is reserved by pending transfers; void or post them",
                    grant_id=grant_id,
                )
            raise GrantConsumedError(
                f"grant {grant_id} has been consumed; nothing is left to reverse",
                grant_id=grant_id,
            )
        if lot.terms.is_expired(now):
            raise GrantExpiredError(
                f"grant {grant_id} expired at {lot.terms.expires_at}; its remainder goes "
                "to breakage",
                grant_id=grant_id,
            )
        wanted = lot.free if amount is None else amount
        if wanted > lot.free:
            raise GrantRemainingExceededError(
                f"grant {grant_id} has {lot.free} left to reverse, {wanted} asked",
                grant_id=grant_id,
                remaining=lot.free,
            )
        return (Allocation(grant_id, wanted),)

    def plan_return(
        self,
        allocations: Sequence[Allocation],
        amount: int,
        now: datetime,
        departed: Mapping[str, Lot],
    ) -> Return:
        """A spend's reversal gives ``amount`` back to the lots it came from, the latest
        taken first. A lot that has left the book comes back from ``departed`` (its terms
        as granted, with nothing remaining); one that has expired sends its part to
        breakage instead."""
        assert 0 < amount <= total(allocations)
        returned: list[Allocation] = []
        left = amount
        for allocation in reversed(allocations):
            given = min(allocation.amount, left)
            left -= given
            if given:
                returned.append(Allocation(allocation.grant_id, given))
            if not left:
                break
        revived: list[Lot] = []
        breakage: list[Allocation] = []
        for allocation in returned:
            grant_id = allocation.grant_id
            if grant_id is GENERAL:
                continue
            lot = self._lots.get(grant_id)
            if lot is None:
                # Even an expired lot comes back, for its part to leave again to breakage.
                lot = departed[grant_id]
                revived.append(lot)
            if lot.terms.is_expired(now):
                breakage.append(allocation)
        self._check_revivals(revived, now)
        return Return(merged(returned), tuple(revived), merged(breakage))

    def _check_revivals(self, revived: Sequence[Lot], now: datetime) -> None:
        """A reversal may bring back lots that had left the book; those still unexpired
        stay live, so they count against the limit like a new grant (an expired one
        leaves again to breakage in the same command)."""
        staying = sum(1 for lot in revived if not lot.terms.is_expired(now))
        if staying and self.live_grants + staying > LIVE_LOTS_MAX:
            raise LiveLotLimitExceededError(
                f"the reversal would bring back {staying} consumed lots to an account holding "
                f"{self.live_grants} live grant lots (at most {LIVE_LOTS_MAX}); let some be "
                "consumed or expire first",
                live_lots=self.live_grants,
            )

    def plan_grant(self, grant_id: str, amount: int) -> int:
        """How much of a new grant first fills the general lot's overdraft (the rest opens
        the lot). Refused past the live-lot limit or for a grant id already live."""
        assert grant_id not in self._lots, "a grant id is its transfer's id: never reused"
        if self.live_grants >= LIVE_LOTS_MAX:
            raise LiveLotLimitExceededError(
                f"the account already holds {LIVE_LOTS_MAX} live grant lots; let some be "
                "consumed or expire first",
                live_lots=self.live_grants,
            )
        return min(amount, max(0, -self.general.remaining))

    # Applying (deterministic; what events record) --------------------------------------

    def consume(self, allocations: Iterable[Allocation]) -> None:
        for allocation in allocations:
            self._change(allocation.grant_id, -allocation.amount, 0)

    def reserve(self, allocations: Iterable[Allocation]) -> None:
        for allocation in allocations:
            self._change(allocation.grant_id, 0, allocation.amount)

    def settle(self, consumed: Iterable[Allocation], released: Iterable[Allocation]) -> None:
        for allocation in consumed:
            self._change(allocation.grant_id, -allocation.amount, -allocation.amount)
        for allocation in released:
            self._change(allocation.grant_id, 0, -allocation.amount)

    def restore_general(self, remaining: int, reserved: int) -> None:
        """The general lot as a snapshot recorded it."""
        self._lots[GENERAL] = replace(self.general, remaining=remaining, reserved=reserved)

    def set_general(self, remaining: int, reserved: int) -> None:
        """The general lot holding ``remaining``, ``reserved`` of it held: where a run of
        movements of the general lot alone (an atomic batch's) leaves it."""
        general = self._lots[GENERAL]
        self._lots[GENERAL] = Lot(GENERAL, general.terms, general.amount, remaining, reserved)

    def credit_general(self, amount: int) -> None:
        self._change(GENERAL, amount, 0)

    def open_lot(self, grant_id: str, amount: int, filled: int, terms: LotTerms) -> None:
        """A grant of ``amount``: ``filled`` goes to the general lot's overdraft, the rest
        opens the lot (a grant that only filled the overdraft opens nothing)."""
        assert grant_id not in self._lots
        assert 0 <= filled <= amount
        if filled:
            self._change(GENERAL, filled, 0)
        if amount - filled:
            self._lots[grant_id] = Lot(grant_id, terms, amount, amount - filled)
            self._order = None

    def restore(self, returned: Iterable[Allocation], revived: Iterable[Lot]) -> None:
        for lot in revived:
            assert lot.grant_id not in self._lots
            self._lots[lot.grant_id] = replace(lot, remaining=0, reserved=0)
            self._order = None
        for allocation in returned:
            self._change(allocation.grant_id, allocation.amount, 0)

    def _change(self, grant_id: GrantId, remaining_delta: int, reserved_delta: int) -> None:
        lot = self._lots[grant_id]
        # Built directly: ``dataclasses.replace`` costs a spend several times as much.
        lot = Lot(
            grant_id,
            lot.terms,
            lot.amount,
            lot.remaining + remaining_delta,
            lot.reserved + reserved_delta,
        )
        if grant_id is not GENERAL:
            assert 0 <= lot.reserved <= lot.remaining, lot
            if lot.remaining == 0:
                del self._lots[grant_id]
                self._order = None
                return
        self._lots[grant_id] = lot

    def _is_expired(self, grant_id: GrantId, now: datetime) -> bool:
        lot = self._lots.get(grant_id)
        return lot is not None and lot.terms.is_expired(now)
