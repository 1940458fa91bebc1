"""The Account aggregate: one stream per account, O(1) state whatever its history.

Commands validate and then trigger events; the events' ``apply`` only mutates, so that
replaying the stream never re-runs a check (the checks held when the event was written).
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from app.domain import limits
from app.domain.chain import ChainedAggregate, ChainedCreated, ChainedEvent
from app.domain.errors import (
    AccountClosedError,
    AccountHasPendingTransfersError,
    BalanceOverflowError,
    InsufficientFundsError,
    OverdraftLimitExceededError,
)
from app.domain.lots import (
    GENERAL,
    Allocation,
    Lot,
    LotBook,
    LotTerms,
    Settlement,
)
from app.domain.postings import BalanceDelta, Counters, DerivedBalances, post
from app.domain.values import account_uuid, canonical_metadata, check_metadata_size

AccountStatus = Literal["open", "closed"]
Side = Literal["debit", "credit"]
# What the account is to the operator's books (used by the accounting exports).
AccountType = Literal["asset", "liability", "income", "expense", "equity"]
ACCOUNT_TYPES: tuple[AccountType, ...] = ("asset", "liability", "income", "expense", "equity")


def default_account_type(allow_negative: bool) -> AccountType:
    """Without a stated type: an account with no floor is where credits are issued from
    (equity); any other holds credits the operator owes to someone (a liability)."""
    return "equity" if allow_negative else "liability"


class Account(DerivedBalances, ChainedAggregate):
    INITIAL_VERSION = 0
    # Version 2 keeps the account's live credit lots (snapshots of version 1 predate them).
    # Version 3 keeps the metadata the account was opened with (``opened_metadata``):
    # resending the opening answers the same after a metadata update.
    class_version: ClassVar[int] = 3

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        general = Lot(
            GENERAL,
            LotBook().general.terms,
            0,
            state["credits_posted"] - state["debits_posted"],
            state["debits_pending"],
        )
        state["lots"] = LotBook([general])
        state["grants_received"] = 0

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        # A snapshot of version 2 does not say what the metadata was at the opening:
        # None, and the opening is then compared with the metadata as it stands.
        state["opened_metadata"] = None

    class Opened(ChainedCreated):
        # Version 2: ``account_type``. None on version 1 events: the type is then the
        # default for the account's floor (default_account_type).
        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("account_type",)
        account_id: str
        unit: str
        allow_negative: bool
        overdraft_limit: int
        metadata: dict[str, str]
        account_type: str | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["account_type"] = None

    class Closed(ChainedEvent):
        def apply(self, aggregate: Any) -> None:
            aggregate.status = "closed"

    class Updated(ChainedEvent):
        """The account's metadata, as it stands after an update (its whole new value)."""

        metadata: dict[str, str]

        def apply(self, aggregate: Any) -> None:
            aggregate.metadata = dict(self.metadata)

    class BalanceChanged(ChainedEvent):
        """Base of every event that moves money on this account: it names its transfer."""

        transfer_id: str
        # Which leg of its transfer this event is: the account is the transfer's debit
        # side or its credit side (the other side is the counterparty).
        side: ClassVar[Side]

        def delta(self) -> BalanceDelta:
            raise NotImplementedError

        def apply(self, aggregate: Any) -> None:
            post(aggregate, self.delta())

    # Version 2 of the money events records which lots each movement took from or gave
    # to (credit grants). Version 1 events predate lots: everything they moved was in the
    # general lot, which is what ``None`` says (and what the upcasters write).

    class Debited(BalanceChanged):
        side: ClassVar[Side] = "debit"
        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("allocations",)
        amount: int
        allocations: list[dict[str, Any]] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["allocations"] = None

        def delta(self) -> BalanceDelta:
            return BalanceDelta(debits_posted=self.amount)

        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            aggregate.lots.consume(allocations_of(self.allocations, self.amount))

    class Credited(BalanceChanged):
        """A credit: to the general lot, or opening a ``grant``'s lot, or (a reversal)
        ``returned`` to the lots a spend took from, ``revived`` when they had left."""

        side: ClassVar[Side] = "credit"

        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("grant", "returned", "revived")
        amount: int
        grant: dict[str, Any] | None = None
        returned: list[dict[str, Any]] | None = None
        revived: list[dict[str, Any]] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["grant"] = state["returned"] = state["revived"] = None

        def delta(self) -> BalanceDelta:
            return BalanceDelta(credits_posted=self.amount)

        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            lots: LotBook = aggregate.lots
            if self.grant is not None:
                terms = terms_of(self.grant)
                lots.open_lot(self.transfer_id, self.amount, self.grant["filled"], terms)
                aggregate.grants_received = terms.sequence + 1
            elif self.returned is not None:
                lots.restore(allocations_of(self.returned, 0), lots_of(self.revived or []))
            else:
                lots.credit_general(self.amount)

    class DebitReserved(BalanceChanged):
        side: ClassVar[Side] = "debit"
        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("allocations",)
        amount: int
        allocations: list[dict[str, Any]] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["allocations"] = None

        def delta(self) -> BalanceDelta:
            return BalanceDelta(debits_pending=self.amount)

        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            aggregate.lots.reserve(allocations_of(self.allocations, self.amount))

    class CreditReserved(BalanceChanged):
        side: ClassVar[Side] = "credit"
        amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(credits_pending=self.amount)

    class DebitHoldSettled(BalanceChanged):
        """A hold ends: ``reserved_amount`` leaves pending, ``posted_amount`` (maybe 0) posts;
        ``consumed`` and ``released`` say from and to which lots."""

        side: ClassVar[Side] = "debit"

        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("consumed", "released")
        reserved_amount: int
        posted_amount: int
        consumed: list[dict[str, Any]] | None = None
        released: list[dict[str, Any]] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["consumed"] = state["released"] = None

        def delta(self) -> BalanceDelta:
            return BalanceDelta(
                debits_pending=-self.reserved_amount, debits_posted=self.posted_amount
            )

        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            aggregate.lots.settle(
                allocations_of(self.consumed, self.posted_amount),
                allocations_of(self.released, self.reserved_amount - self.posted_amount),
            )

    class CreditHoldSettled(BalanceChanged):
        side: ClassVar[Side] = "credit"
        reserved_amount: int
        posted_amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(
                credits_pending=-self.reserved_amount, credits_posted=self.posted_amount
            )

        def apply(self, aggregate: Any) -> None:
            super().apply(aggregate)
            if self.posted_amount:
                aggregate.lots.credit_general(self.posted_amount)

    @staticmethod
    def create_id(account_id: str) -> UUID:
        return account_uuid(account_id)

    def __init__(
        self,
        account_id: str,
        unit: str,
        allow_negative: bool,
        overdraft_limit: int,
        metadata: Mapping[str, str],
        account_type: str | None = None,
    ) -> None:
        self.account_id = account_id
        self.unit = unit
        self.account_type = account_type or default_account_type(allow_negative)
        self.allow_negative = allow_negative
        self.overdraft_limit = overdraft_limit
        self.metadata = dict(metadata)
        # What the opening said: an idempotent resend of it is compared with this,
        # whatever metadata updates came after (None: unknown, see upcast_v2_v3).
        self.opened_metadata: dict[str, str] | None = dict(metadata)
        self.status: AccountStatus = "open"
        self.debits_posted = 0
        self.credits_posted = 0
        self.debits_pending = 0
        self.credits_pending = 0
        self.lots = LotBook()
        self.grants_received = 0

    @classmethod
    def open(
        cls,
        account_id: str,
        unit: str,
        allow_negative: bool,
        overdraft_limit: int,
        metadata: Mapping[str, str],
        account_type: str | None = None,
    ) -> "Account":
        return cls._create_chained(
            cls.Opened,
            id=account_uuid(account_id),
            account_id=account_id,
            unit=unit,
            allow_negative=allow_negative,
            overdraft_limit=overdraft_limit,
            metadata=dict(metadata),  # the event's own (the command's is read-only)
            account_type=account_type or default_account_type(allow_negative),
        )

    # Derived figures -------------------------------------------------------------------

    @property
    def floor(self) -> int | None:
        """The lowest ``available`` may go, or None when the account has no floor."""
        return None if self.allow_negative else -self.overdraft_limit

    def same_opening(
        self,
        unit: str,
        allow_negative: bool,
        overdraft_limit: int,
        metadata: Mapping[str, str],
        account_type: str | None = None,
    ) -> bool:
        """Whether a resent opening is this account's (its metadata compared with the
        opening's, not with later updates)."""
        stated = account_type or default_account_type(allow_negative)
        opened_metadata = self.metadata if self.opened_metadata is None else self.opened_metadata
        return (
            self.unit,
            self.allow_negative,
            self.overdraft_limit,
            opened_metadata,
            self.account_type,
        ) == (unit, allow_negative, overdraft_limit, metadata, stated)

    # Commands --------------------------------------------------------------------------

    def close(self) -> None:
        if self.status == "closed":
            return
        if self.debits_pending or self.credits_pending:
            raise AccountHasPendingTransfersError(
                f"account {self.account_id} has pending transfers; post or void them first",
                account_id=self.account_id,
            )
        self.trigger_event(self.Closed)

    def update_metadata(self, changes: Mapping[str, str | None]) -> bool:
        """Merge checked ``changes`` into the metadata (None removes a key, JSON Merge
        Patch); False when nothing would change (no event)."""
        merged = {**self.metadata, **{k: v for k, v in changes.items() if v is not None}}
        for key in [k for k, v in changes.items() if v is None]:
            merged.pop(key, None)
        # Each change was checked where its command was built (UpdateAccountMetadata);
        # how many entries the merged whole holds is this account's rule.
        check_metadata_size(merged)
        merged = canonical_metadata(merged)
        if merged == self.metadata:
            return False
        self.trigger_event(self.Updated, metadata=merged)
        return True

    def available_at(self, now: datetime) -> int:
        """``available`` as spending sees it: only lots effective and unexpired at ``now``."""
        return self.lots.available(now)

    def check_debit(self, amount: int, now: datetime, *, from_lot: bool = False) -> None:
        """Every reason a debit (posted or pending) of ``amount`` would be refused.
        ``from_lot``: it takes back part of one lot's free amount (a grant's claw back),
        which cannot cross the floor: ``available`` minus that lot's part is what the
        other lots and the general lot give, and the general lot never goes below the
        floor (only a spend that ran out of lots takes it below zero, and that spend
        was checked)."""
        self._check_open()
        self._check_debit_headroom(amount)
        if not from_lot:
            self._check_floor(amount, now)

    def check_credit(self, amount: int) -> None:
        self._check_open()
        self._check_credit_headroom(amount)

    def debit(
        self,
        transfer_id: str,
        amount: int,
        *,
        pending: bool,
        now: datetime,
        allocations: Sequence[Allocation] | None = None,
    ) -> tuple[Allocation, ...]:
        """Spend ``amount`` in the burn-down order, or from the given ``allocations``
        (a grant's claw back, breakage), once ``check_debit`` has passed (breakage needs
        no check: it only moves what is no longer spendable). Returns where it came from."""
        taken = tuple(allocations) if allocations is not None else self.lots.plan_spend(amount, now)
        event_class = self.DebitReserved if pending else self.Debited
        self.trigger_event(
            event_class, transfer_id=transfer_id, amount=amount, allocations=records_of(taken)
        )
        return taken

    def credit(
        self,
        transfer_id: str,
        amount: int,
        *,
        pending: bool,
        grant: LotTerms | None = None,
        returned: Sequence[Allocation] | None = None,
        revived: Sequence[Lot] = (),
    ) -> None:
        self.check_credit(amount)
        if pending:
            assert grant is None, "a grant is never pending"
            self.trigger_event(self.CreditReserved, transfer_id=transfer_id, amount=amount)
            return
        grant_record = None
        if grant is not None:
            grant_record = {
                **term_record(grant),
                "filled": self.lots.plan_grant(transfer_id, amount),
            }
        self.trigger_event(
            self.Credited,
            transfer_id=transfer_id,
            amount=amount,
            grant=grant_record,
            returned=None if returned is None else records_of(returned),
            revived=None if returned is None else [lot_record(lot) for lot in revived],
        )

    def check_grant(self, transfer_id: str, amount: int) -> None:
        self.lots.plan_grant(transfer_id, amount)

    def next_grant_sequence(self) -> int:
        return self.grants_received

    def settle_debit_hold(
        self,
        transfer_id: str,
        reserved_amount: int,
        posted_amount: int,
        settlement: Settlement | None = None,
    ) -> None:
        # Holds settle on closed accounts too: close() refuses while anything is pending,
        # so this only ever finishes what was reserved while the account was open.
        assert 0 <= posted_amount <= reserved_amount <= self.debits_pending
        self.trigger_event(
            self.DebitHoldSettled,
            transfer_id=transfer_id,
            reserved_amount=reserved_amount,
            posted_amount=posted_amount,
            consumed=None if settlement is None else records_of(settlement.consumed),
            released=None if settlement is None else records_of(settlement.released),
        )

    def settle_credit_hold(
        self, transfer_id: str, reserved_amount: int, posted_amount: int
    ) -> None:
        assert 0 <= posted_amount <= reserved_amount <= self.credits_pending
        self.trigger_event(
            self.CreditHoldSettled,
            transfer_id=transfer_id,
            reserved_amount=reserved_amount,
            posted_amount=posted_amount,
        )

    # Guards ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.status != "open":
            raise AccountClosedError(
                f"account {self.account_id} is closed", account_id=self.account_id
            )

    def _check_debit_headroom(self, amount: int) -> None:
        # Pending and posted together: posting a hold later can then never overflow.
        if self.debits_posted + self.debits_pending + amount > limits.BALANCE_COUNTER_MAX:
            raise BalanceOverflowError(
                f"debits of account {self.account_id} would exceed 2^63-1",
                account_id=self.account_id,
            )

    def _check_credit_headroom(self, amount: int) -> None:
        if self.credits_posted + self.credits_pending + amount > limits.BALANCE_COUNTER_MAX:
            raise BalanceOverflowError(
                f"credits of account {self.account_id} would exceed 2^63-1",
                account_id=self.account_id,
            )

    def _check_floor(self, amount: int, now: datetime) -> None:
        floor = self.floor
        if floor is None:
            return
        available = self.available_at(now)
        if available - amount >= floor:
            return
        if self.overdraft_limit:
            raise OverdraftLimitExceededError(
                f"account {self.account_id} would go past its overdraft limit of "
                f"{self.overdraft_limit} (available {available}, amount {amount})",
                account_id=self.account_id,
                available=available,
            )
        raise InsufficientFundsError(
            f"account {self.account_id} has {available} available, {amount} needed",
            account_id=self.account_id,
            available=available,
        )


# Reading an account's events --------------------------------------------------------------


def fold_postings(events: Iterable[object], counters: Counters | None = None) -> Counters:
    """The account's counters after ``events`` (its own stream, in order), from
    ``counters`` or zero: the aggregate's fold (``post``) without the aggregate."""
    folded = Counters() if counters is None else counters
    for event in events:
        if isinstance(event, Account.BalanceChanged):
            post(folded, event.delta())
    return folded


def counterparty_id(
    event: "Account.BalanceChanged", debit_account_id: str, credit_account_id: str
) -> str:
    """The other account of the transfer a balance change belongs to."""
    return credit_account_id if event.side == "debit" else debit_account_id


# Lots in events: plain JSON-friendly records -------------------------------------------


def records_of(allocations: Iterable[Allocation]) -> list[dict[str, Any]]:
    return [{"grant_id": a.grant_id, "amount": a.amount} for a in allocations]


def allocations_of(records: list[dict[str, Any]] | None, amount: int) -> tuple[Allocation, ...]:
    """An event's allocations; ``None`` (version 1 events) means all from the general lot."""
    if records is None:
        return (Allocation(GENERAL, amount),) if amount else ()
    return tuple(Allocation(r["grant_id"], r["amount"]) for r in records)


def term_record(terms: LotTerms) -> dict[str, Any]:
    return {
        "expires_at": terms.expires_at,
        "effective_at": terms.effective_at,
        "priority": terms.priority,
        "category": terms.category,
        "sequence": terms.sequence,
    }


def terms_of(record: dict[str, Any]) -> LotTerms:
    return LotTerms(
        expires_at=record["expires_at"],
        effective_at=record["effective_at"],
        priority=record["priority"],
        category=record["category"],
        sequence=record["sequence"],
    )


def lot_record(lot: Lot) -> dict[str, Any]:
    return {"grant_id": lot.grant_id, "amount": lot.amount, **term_record(lot.terms)}


def lots_of(records: list[dict[str, Any]]) -> list[Lot]:
    return [Lot(r["grant_id"], terms_of(r), r["amount"], 0) for r in records]


def line_allocations(event: Any) -> list[dict[str, Any]]:
    """The lots a statement line moved, signed as the line is (debits negative): for a
    spend or hold the lots it took or reserved, for a hold's end the lots it consumed,
    for a grant its own lot, for a reversal the lots given back. Empty for movements of
    the general lot alone and for events from before lots."""
    if isinstance(event, Account.Credited):
        if event.grant is not None:
            return [{"grant_id": event.transfer_id, "amount": event.amount}]
        return list(event.returned or [])
    if isinstance(event, Account.Debited | Account.DebitReserved):
        records = event.allocations or []
    elif isinstance(event, Account.DebitHoldSettled):
        records = event.consumed or []
    else:
        return []
    if all(record["grant_id"] is None for record in records):
        return []
    return [{"grant_id": r["grant_id"], "amount": -r["amount"]} for r in records]
