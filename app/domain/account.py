"""The Account aggregate: one stream per account, O(1) state whatever its history.

Commands validate and then trigger events; the events' ``apply`` only mutates, so that
replaying the stream never re-runs a check (the checks held when the event was written).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
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
from app.domain.values import account_uuid

AccountStatus = Literal["open", "closed"]


class DerivedBalances:
    """The two figures SPEC.md derives from the counters, defined once for every
    shape that carries the counters (aggregate, deltas, views, replays)."""

    if TYPE_CHECKING:
        debits_posted: int
        credits_posted: int
        debits_pending: int

    @property
    def balance(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        return self.balance - self.debits_pending


@dataclass(frozen=True)
class BalanceDelta(DerivedBalances):
    """How one event moves the four counters. Projections fold these, never re-derive them."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


class Account(DerivedBalances, ChainedAggregate):
    INITIAL_VERSION = 0

    class Opened(ChainedCreated):
        account_id: str
        unit: str
        allow_negative: bool
        overdraft_limit: int
        metadata: dict[str, str]

    class Closed(ChainedEvent):
        def apply(self, aggregate: Any) -> None:
            aggregate.status = "closed"

    class BalanceChanged(ChainedEvent):
        """Base of every event that moves money on this account: it names its transfer."""

        transfer_id: str

        def delta(self) -> BalanceDelta:
            raise NotImplementedError

        def apply(self, aggregate: Any) -> None:
            delta = self.delta()
            aggregate.debits_posted += delta.debits_posted
            aggregate.credits_posted += delta.credits_posted
            aggregate.debits_pending += delta.debits_pending
            aggregate.credits_pending += delta.credits_pending

    class Debited(BalanceChanged):
        amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(debits_posted=self.amount)

    class Credited(BalanceChanged):
        amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(credits_posted=self.amount)

    class DebitReserved(BalanceChanged):
        amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(debits_pending=self.amount)

    class CreditReserved(BalanceChanged):
        amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(credits_pending=self.amount)

    class DebitHoldSettled(BalanceChanged):
        """A hold ends: ``reserved_amount`` leaves pending, ``posted_amount`` (maybe 0) posts."""

        reserved_amount: int
        posted_amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(
                debits_pending=-self.reserved_amount, debits_posted=self.posted_amount
            )

    class CreditHoldSettled(BalanceChanged):
        reserved_amount: int
        posted_amount: int

        def delta(self) -> BalanceDelta:
            return BalanceDelta(
                credits_pending=-self.reserved_amount, credits_posted=self.posted_amount
            )

    @staticmethod
    def create_id(account_id: str) -> UUID:
        return account_uuid(account_id)

    def __init__(
        self,
        account_id: str,
        unit: str,
        allow_negative: bool,
        overdraft_limit: int,
        metadata: dict[str, str],
    ) -> None:
        self.account_id = account_id
        self.unit = unit
        self.allow_negative = allow_negative
        self.overdraft_limit = overdraft_limit
        self.metadata = dict(metadata)
        self.status: AccountStatus = "open"
        self.debits_posted = 0
        self.credits_posted = 0
        self.debits_pending = 0
        self.credits_pending = 0

    @classmethod
    def open(
        cls,
        account_id: str,
        unit: str,
        allow_negative: bool,
        overdraft_limit: int,
        metadata: dict[str, str],
    ) -> "Account":
        return cls._create_chained(
            cls.Opened,
            id=account_uuid(account_id),
            account_id=account_id,
            unit=unit,
            allow_negative=allow_negative,
            overdraft_limit=overdraft_limit,
            metadata=metadata,
        )

    # Derived figures -------------------------------------------------------------------

    @property
    def floor(self) -> int | None:
        """The lowest ``available`` may go, or None when the account has no floor."""
        return None if self.allow_negative else -self.overdraft_limit

    def same_opening(
        self, unit: str, allow_negative: bool, overdraft_limit: int, metadata: dict[str, str]
    ) -> bool:
        return (self.unit, self.allow_negative, self.overdraft_limit, self.metadata) == (
            unit,
            allow_negative,
            overdraft_limit,
            metadata,
        )

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

    def check_debit(self, amount: int) -> None:
        """Every reason a debit (posted or pending) of ``amount`` would be refused."""
        self._check_open()
        self._check_debit_headroom(amount)
        self._check_floor(amount)

    def check_credit(self, amount: int) -> None:
        self._check_open()
        self._check_credit_headroom(amount)

    def debit(self, transfer_id: str, amount: int, *, pending: bool) -> None:
        self.check_debit(amount)
        event_class = self.DebitReserved if pending else self.Debited
        self.trigger_event(event_class, transfer_id=transfer_id, amount=amount)

    def credit(self, transfer_id: str, amount: int, *, pending: bool) -> None:
        self.check_credit(amount)
        event_class = self.CreditReserved if pending else self.Credited
        self.trigger_event(event_class, transfer_id=transfer_id, amount=amount)

    def settle_debit_hold(self, transfer_id: str, reserved_amount: int, posted_amount: int) -> None:
        # Holds settle on closed accounts too: close() refuses while anything is pending,
        # so this only ever finishes what was reserved while the account was open.
        assert 0 <= posted_amount <= reserved_amount <= self.debits_pending
        self.trigger_event(
            self.DebitHoldSettled,
            transfer_id=transfer_id,
            reserved_amount=reserved_amount,
            posted_amount=posted_amount,
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

    def _check_floor(self, amount: int) -> None:
        floor = self.floor
        if floor is None or self.available - amount >= floor:
            return
        if self.overdraft_limit:
            raise OverdraftLimitExceededError(
                f"account {self.account_id} would go past its overdraft limit of "
                f"{self.overdraft_limit} (available {self.available}, amount {amount})",
                account_id=self.account_id,
                available=self.available,
            )
        raise InsufficientFundsError(
            f"account {self.account_id} has {self.available} available, {amount} needed",
            account_id=self.account_id,
            available=self.available,
        )
