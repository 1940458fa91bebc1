"""What the application hands out: plain, frozen values, never live aggregates.

One shape per concept: ``AccountView`` and ``TransferView`` are what write answers
carry and what the read model returns alike (the read model fills ``position``; the
write side fills ``version``). ``StatementLine``, ``HistoryPoint`` and ``UnitTotals``
are the read model's other answers.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from app.domain.account import Account
from app.domain.lots import Allocation, LotStatus
from app.domain.postings import DerivedBalances
from app.domain.statement import StatementAction
from app.domain.transfer import Transfer, TransferStatus, initial_fate


@dataclass(frozen=True)
class AccountView(DerivedBalances):
    id: str
    unit: str
    status: str
    allow_negative: bool
    overdraft_limit: int
    metadata: dict[str, str]
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    # What the account is in the operator's books (asset, liability, income, expense,
    # equity): stated at opening, else the default for its floor.
    account_type: str
    # The stream version (write side) or None (read model, which has no streams).
    version: int | None = None
    # The log position this state reflects, when known.
    position: int | None = None
    # With credit lots, what is spendable now (effective, unexpired lots minus holds);
    # None when the account has no grant lots and ``available`` is the counters' figure.
    lots_available: int | None = None
    updated_at: datetime | None = None

    @property
    def account_id(self) -> str:
        """The domain's name for ``id`` (the API and lists say ``id``)."""
        return self.id

    @property
    def available(self) -> int:
        if self.lots_available is not None:
            return self.lots_available
        return self.balance - self.debits_pending

    @classmethod
    def of(
        cls, account: Account, position: int | None = None, now: datetime | None = None
    ) -> "AccountView":
        lots_available = None
        if now is not None and account.lots.live_grants:
            lots_available = account.available_at(now)
        return cls(
            id=account.account_id,
            unit=account.unit,
            status=account.status,
            allow_negative=account.allow_negative,
            overdraft_limit=account.overdraft_limit,
            metadata=dict(account.metadata),
            debits_posted=account.debits_posted,
            credits_posted=account.credits_posted,
            debits_pending=account.debits_pending,
            credits_pending=account.credits_pending,
            account_type=account.account_type,
            version=account.version,
            position=position,
            lots_available=lots_available,
        )


@dataclass(frozen=True)
class TransferView:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    pending: bool
    timeout_seconds: int | None
    metadata: dict[str, str]
    status: TransferStatus
    amount_posted: int
    recorded_at: datetime
    expires_at: datetime | None
    reversal_of: str | None
    reversed_by: str | None
    grant: dict[str, Any] | None = None
    allocations: tuple[Allocation, ...] = ()
    # Read model only: where the transfer was recorded and last changed in the log.
    position: int | None = None
    updated_position: int | None = None

    @classmethod
    def of(cls, transfer: Transfer) -> "TransferView":
        # Every field set at once, as the frozen dataclass's constructor would set them
        # one by one (the writer builds one per transfer: 1,000 per batch);
        # tests/unit/test_write_costs.py holds it equal to the constructor's.
        view = object.__new__(cls)
        object.__setattr__(
            view,
            "__dict__",
            {
                "id": transfer.transfer_id,
                "debit_account_id": transfer.debit_account_id,
                "credit_account_id": transfer.credit_account_id,
                "amount": transfer.amount,
                "unit": transfer.unit,
                "pending": transfer.pending,
                "timeout_seconds": transfer.timeout_seconds,
                "metadata": dict(transfer.metadata),
                "status": transfer.status,
                "amount_posted": transfer.amount_posted,
                "recorded_at": transfer.recorded_at,
                "expires_at": transfer.expires_at,
                "reversal_of": transfer.reversal_of,
                "reversed_by": transfer.reversed_by,
                "grant": transfer.grant,
                "allocations": transfer.allocations or (),
                "position": None,
                "updated_position": None,
            },
        )
        return view

    @classmethod
    def recorded(cls, event: Transfer.TransferRecorded) -> "TransferView":
        """The transfer as its recording left it, straight from the event: what
        ``of(event.mutate(None))`` gives without building the aggregate (the feed makes
        one per transfer; tests/events/test_projector.py holds the two equal)."""
        pending = event.pending
        timeout_seconds = event.timeout_seconds
        expires_at = None
        if pending and timeout_seconds is not None:
            expires_at = event.timestamp + timedelta(seconds=timeout_seconds)
        records = event.allocations
        view = object.__new__(cls)
        object.__setattr__(
            view,
            "__dict__",
            {
                "id": event.transfer_id,
                "debit_account_id": event.debit_account_id,
                "credit_account_id": event.credit_account_id,
                "amount": event.amount,
                "unit": event.unit,
                "pending": pending,
                "timeout_seconds": timeout_seconds,
                "metadata": dict(event.metadata),
                "status": initial_fate(pending),
                "amount_posted": 0 if pending else event.amount,
                "recorded_at": event.timestamp,
                "expires_at": expires_at,
                "reversal_of": event.reversal_of,
                "reversed_by": None,
                "grant": event.grant,
                "allocations": tuple(Allocation(r["grant_id"], r["amount"]) for r in records)
                if records
                else (),
                "position": None,
                "updated_position": None,
            },
        )
        return view


@dataclass(frozen=True)
class TransferOutcome:
    """The answer to a transfer command.

    ``created`` is False for an idempotent replay (HTTP 200 instead of 201).
    ``position`` is the log position to wait for to read this write's effects:
    the command's own commit for a new write, the original record for a replay.
    """

    transfer: TransferView
    created: bool
    position: int


@dataclass(frozen=True)
class AccountOutcome:
    account: AccountView
    created: bool
    position: int


@dataclass(frozen=True)
class BatchOutcome:
    """Per item, in request order: a TransferOutcome or the error that refused it."""

    results: list["TransferOutcome | Exception"] = field(default_factory=list)


@dataclass(frozen=True)
class StatementLine(DerivedBalances):
    """One balance-changing event on one account, with the counters after it."""

    account_id: str
    position: int
    transfer_id: str
    kind: str  # the log's event type (e.g. ``Debited``), kept for API compatibility
    action: StatementAction
    amount: int
    balance_change: int
    available_change: int
    counterparty_id: str | None
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    recorded_at: datetime
    metadata: dict[str, str]
    allocations: tuple[Allocation, ...] = ()  # the lots this line moved, signed


@dataclass(frozen=True)
class HistoryPoint(DerivedBalances):
    """An account at the end of one interval (the last event at or before its end)."""

    start: datetime
    end: datetime
    position: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


@dataclass(frozen=True)
class UnitTotals:
    """One unit's books: the balances must sum to zero at every commit."""

    unit: str
    debits_posted: int
    credits_posted: int
    balance_sum: int
    account_count: int


# Credit lots, as the lots view (projections/lots.py) answers them.
LotStatusFilter = Literal["live", "expired", "consumed", "all"]


@dataclass(frozen=True)
class LotRow:
    account_id: str
    grant_id: str
    amount: int
    remaining: int
    reserved: int
    breakage: int
    expires_at: datetime | None
    effective_at: datetime
    priority: int
    category: str
    status: LotStatus
    granted_position: int
    granted_at: datetime
    position: int  # of the newest change the answer reflects


@dataclass(frozen=True)
class DueGrant:
    """A grant whose expiry has come with something still free, and the account its lot
    is in (so the expiry needs no read of the grant itself)."""

    grant_id: str
    account_id: str


@dataclass(frozen=True)
class LotPage:
    items: list[LotRow]
    next_after: int | None  # the cursor: the last granted position read
