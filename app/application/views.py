"""What the application hands out: plain, frozen values, never live aggregates."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain.account import Account, DerivedBalances
from app.domain.lots import Allocation
from app.domain.transfer import Transfer, TransferStatus


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
    version: int
    position: int | None = None
    # With credit lots, what is spendable now (effective, unexpired lots minus holds);
    # None when the account has no grant lots and ``available`` is the counters' figure.
    lots_available: int | None = None

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

    @classmethod
    def of(cls, transfer: Transfer) -> "TransferView":
        return cls(
            id=transfer.transfer_id,
            debit_account_id=transfer.debit_account_id,
            credit_account_id=transfer.credit_account_id,
            amount=transfer.amount,
            unit=transfer.unit,
            pending=transfer.pending,
            timeout_seconds=transfer.timeout_seconds,
            metadata=dict(transfer.metadata),
            status=transfer.status,
            amount_posted=transfer.amount_posted,
            recorded_at=transfer.recorded_at,
            expires_at=transfer.expires_at,
            reversal_of=transfer.reversal_of,
            reversed_by=transfer.reversed_by,
            grant=transfer.grant,
            allocations=transfer.allocations or (),
        )


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
