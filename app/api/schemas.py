"""Request and response shapes of API v1 (fields may be added, never renamed).

The request models are the HTTP edge of the commands (app/application/commands.py): their
constraints are each field's rule, from ``app.domain.limits`` like the domain's checks
(tests/unit/test_edge_rules.py proves they accept the same values), and ``command()``
runs the rules across fields once and hands the ledger a command it does not check again.
"""

from datetime import datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from app.api.event_schemas import EventsReadiness
from app.application.commands import (
    GrantTerms,
    OpenAccount,
    PostPendingTransfer,
    RecordReversal,
    RecordTransfer,
    UpdateAccountMetadata,
)
from app.application.views import (
    AccountView,
    HistoryPoint,
    LotRow,
    StatementLine,
    TransferView,
    UnitTotals,
)
from app.domain import limits
from app.domain.account import AccountType
from app.domain.lots import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN, Allocation, Category
from app.domain.times import TIME_PATTERN, TIME_TEXT_LENGTH_MAX, parse_time
from app.domain.values import RESERVED_METADATA_KEY, canonical_metadata

T = TypeVar("T")

Identifier = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=limits.ID_LENGTH_MAX,
        pattern=r"^[A-Za-z0-9._:-]+$",
        examples=["user:42:credits"],
    ),
]
Unit = Annotated[StrictStr, Field(pattern=r"^[A-Z0-9_]{1,16}$", examples=["CREDITS"])]
Amount = Annotated[StrictInt, Field(ge=limits.AMOUNT_MIN, le=limits.AMOUNT_MAX, examples=[100])]


def _not_reserved(key: str) -> str:
    """A metadata key other than the one marking tagged values in stored events
    (``app.domain.values.RESERVED_METADATA_KEY``), as ``check_metadata`` requires."""
    if key == RESERVED_METADATA_KEY:
        raise ValueError(f"metadata key {RESERVED_METADATA_KEY} is reserved")
    return key


MetadataKey = Annotated[
    StrictStr,
    Field(min_length=1, max_length=limits.METADATA_KEY_LENGTH_MAX),
    AfterValidator(_not_reserved),
]
Metadata = Annotated[
    dict[MetadataKey, Annotated[StrictStr, Field(max_length=limits.METADATA_VALUE_LENGTH_MAX)]],
    Field(max_length=limits.METADATA_ENTRIES_MAX, examples=[{"order": "o-981"}]),
]


# An instant in a body: the ledger's one time syntax (app.domain.times), parsed by
# app.domain.times.parse_time (pydantic's strict mode would refuse every JSON time string).
TimeText = Annotated[
    StrictStr,
    Field(pattern=TIME_PATTERN, max_length=TIME_TEXT_LENGTH_MAX, examples=["2026-04-01T00:00:00Z"]),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(Strict):
    id: Identifier
    unit: Unit
    allow_negative: StrictBool = False
    account_type: AccountType | None = Field(
        default=None,
        description="What the account is in the operator's books (accounting exports); "
        "default: equity when allow_negative (issuance), else liability (credits owed)",
    )
    overdraft_limit: Annotated[StrictInt, Field(ge=0, le=limits.OVERDRAFT_LIMIT_MAX)] = 0
    metadata: Metadata = Field(default_factory=dict)

    def command(self) -> OpenAccount:
        """The command this body asks for, already checked (its fields were, by this model)."""
        return OpenAccount(
            id=self.id,
            unit=self.unit,
            allow_negative=self.allow_negative,
            overdraft_limit=self.overdraft_limit,
            metadata=canonical_metadata(self.metadata),
            account_type=self.account_type,
        ).checked_across_fields()


class AccountRead(BaseModel):
    id: str
    unit: str
    status: Literal["open", "closed"]
    balance: int
    available: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    allow_negative: bool
    overdraft_limit: int
    account_type: AccountType = Field(
        description="What the account is in the operator's books: as stated at opening, "
        "else equity when allow_negative (issuance), else liability (credits owed)"
    )
    metadata: dict[str, str]
    position: int = Field(description="The log position this answer reflects")

    @classmethod
    def of(cls, row: AccountView, position: int) -> "AccountRead":
        """From the one account shape (write answers and reads alike)."""
        return cls(
            id=row.id,
            unit=row.unit,
            status=row.status,  # type: ignore[arg-type]
            balance=row.balance,
            available=row.available,
            debits_posted=row.debits_posted,
            credits_posted=row.credits_posted,
            debits_pending=row.debits_pending,
            credits_pending=row.credits_pending,
            allow_negative=row.allow_negative,
            overdraft_limit=row.overdraft_limit,
            account_type=row.account_type,  # type: ignore[arg-type]
            metadata=row.metadata,
            position=position,
        )


def account_document(row: AccountView, position: int) -> dict[str, Any]:
    """An account as ``AccountRead`` shows it, in plain JSON values, for the feed's
    thousands of account states per second (tests/api check both say the same)."""
    return {
        "id": row.id,
        "unit": row.unit,
        "status": row.status,
        "balance": row.balance,
        "available": row.available,
        "debits_posted": row.debits_posted,
        "credits_posted": row.credits_posted,
        "debits_pending": row.debits_pending,
        "credits_pending": row.credits_pending,
        "allow_negative": row.allow_negative,
        "overdraft_limit": row.overdraft_limit,
        "account_type": row.account_type,
        "metadata": dict(row.metadata),
        "position": position,
    }


class GrantCreate(Strict):
    """Makes the transfer a credit grant: a lot in the credit account with these terms."""

    expires_at: TimeText | None = Field(
        default=None, description="When what is left expires to breakage (null: never)"
    )
    effective_at: TimeText | None = Field(
        default=None, description="When the lot becomes spendable (null: at once)"
    )
    priority: Annotated[StrictInt, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = PRIORITY_DEFAULT
    category: Category = "paid"

    def terms(self) -> GrantTerms:
        """The grant's terms, times parsed (a ValidationError naming the field otherwise)."""
        return GrantTerms(
            expires_at=None
            if self.expires_at is None
            else parse_time(self.expires_at, "expires_at"),
            effective_at=None
            if self.effective_at is None
            else parse_time(self.effective_at, "effective_at"),
            priority=self.priority,
            category=self.category,
        )


class GrantRead(BaseModel):
    expires_at: datetime | None
    effective_at: datetime
    priority: int
    category: Literal["paid", "promotional"]


class AllocationRead(BaseModel):
    grant_id: str | None = Field(description="The lot's grant; null for the general lot")
    amount: int


GRANT_READ_FIELDS: Final = tuple(GrantRead.model_fields)


def allocations_read(allocations: tuple[Allocation, ...]) -> list[AllocationRead]:
    return [AllocationRead(grant_id=a.grant_id, amount=a.amount) for a in allocations]


class TransferCreate(Strict):
    id: Identifier
    debit_account_id: Identifier
    credit_account_id: Identifier
    amount: Amount
    pending: StrictBool = False
    timeout_seconds: (
        Annotated[StrictInt, Field(ge=limits.TIMEOUT_SECONDS_MIN, le=limits.TIMEOUT_SECONDS_MAX)]
        | None
    ) = None
    metadata: Metadata = Field(default_factory=dict)
    grant: GrantCreate | None = None

    def command(self) -> RecordTransfer:
        """The command this body asks for, checked once: each field by this model, the
        rules across fields by the domain's functions (which raise its errors)."""
        if (
            not self.pending
            and self.grant is None
            and self.timeout_seconds is None
            and not self.metadata
        ):
            return RecordTransfer.plain_checked(
                self.id, self.debit_account_id, self.credit_account_id, self.amount
            )
        return self.unchecked_command().checked_across_fields()

    def unchecked_command(self) -> RecordTransfer:
        """The same command as a Python caller builds it: ``checked()`` judges it."""
        return RecordTransfer(
            id=self.id,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=self.amount,
            pending=self.pending,
            timeout_seconds=self.timeout_seconds,
            metadata=canonical_metadata(self.metadata) if self.metadata else {},
            grant=None if self.grant is None else self.grant.terms(),
        )


class TransferRead(BaseModel):
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    pending: bool
    timeout_seconds: int | None
    metadata: dict[str, str]
    status: Literal["posted", "pending", "voided", "expired"]
    amount_posted: int
    recorded_at: datetime
    expires_at: datetime | None
    reversal_of: str | None
    reversed_by: str | None
    position: int
    grant: GrantRead | None = None
    allocations: list[AllocationRead] = Field(
        default_factory=list, description="The debit account's lots this transfer took from"
    )

    @classmethod
    def of(cls, transfer: TransferView, position: int) -> "TransferRead":
        return cls.model_validate(transfer_document(transfer, position))


def transfer_document(transfer: TransferView, position: int) -> dict[str, Any]:
    """A transfer as ``TransferRead`` shows it, in plain values: validated into the model
    for single answers, encoded as it is for batch answers (1,000 models built and
    dumped again cost a batch more than its write; tests/api check both say the same)."""
    grant = transfer.grant
    return {
        "id": transfer.id,
        "debit_account_id": transfer.debit_account_id,
        "credit_account_id": transfer.credit_account_id,
        "amount": transfer.amount,
        "unit": transfer.unit,
        "pending": transfer.pending,
        "timeout_seconds": transfer.timeout_seconds,
        "metadata": transfer.metadata,
        "status": transfer.status,
        "amount_posted": transfer.amount_posted,
        "recorded_at": transfer.recorded_at,
        "expires_at": transfer.expires_at,
        "reversal_of": transfer.reversal_of,
        "reversed_by": transfer.reversed_by,
        "position": position,
        "grant": None if grant is None else {key: grant[key] for key in GRANT_READ_FIELDS},
        "allocations": [
            {"grant_id": allocation.grant_id, "amount": allocation.amount}
            for allocation in transfer.allocations
        ]
        if transfer.allocations
        else [],
    }


class BatchCreate(Strict):
    atomic: StrictBool
    transfers: Annotated[list[TransferCreate], Field(min_length=1)]


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str
    index: int | None = None


class BatchItemResult(BaseModel):
    status: int
    transfer: TransferRead | None = None
    error: Problem | None = None


class BatchRead(BaseModel):
    results: list[BatchItemResult]


class PostPending(Strict):
    amount: Amount | None = None

    def command(self, transfer_id: str) -> PostPendingTransfer:
        """The command this body asks for on the path's transfer, checked once."""
        return PostPendingTransfer(transfer_id, self.amount).checked_beyond_body()


class VoidPending(Strict):
    pass


class ReverseTransfer(Strict):
    id: Identifier
    metadata: Metadata = Field(default_factory=dict)
    amount: Amount | None = Field(
        default=None, description="Reverse part of it (a grant: part of what is left)"
    )

    def command(self, transfer_id: str) -> RecordReversal:
        """The command this body asks for on the path's transfer, checked once."""
        metadata = canonical_metadata(self.metadata)
        return RecordReversal(transfer_id, self.id, metadata, self.amount).checked_beyond_body()


class LotRead(BaseModel):
    grant_id: str
    amount: int = Field(description="As granted")
    remaining: int = Field(description="Still in the lot, reserved part included")
    reserved: int
    breakage: int = Field(description="Moved to breakage on expiry")
    expires_at: datetime | None
    effective_at: datetime
    priority: int
    category: str
    status: Literal["live", "expired", "consumed"]
    granted_position: int
    granted_at: datetime

    @classmethod
    def of(cls, row: LotRow) -> "LotRead":
        return cls(
            grant_id=row.grant_id,
            amount=row.amount,
            remaining=row.remaining,
            reserved=row.reserved,
            breakage=row.breakage,
            expires_at=row.expires_at,
            effective_at=row.effective_at,
            priority=row.priority,
            category=row.category,
            status=row.status,
            granted_position=row.granted_position,
            granted_at=row.granted_at,
        )


class LotPageRead(BaseModel):
    items: list[LotRead]
    next_cursor: str | None
    position: int = Field(description="The log position this answer reflects")


class EntryRead(BaseModel):
    position: int
    transfer_id: str
    kind: str = Field(description="The log's event type, e.g. Debited")
    action: Literal[
        "debit", "credit", "hold_placed", "hold_captured", "hold_released", "hold_expired"
    ] = Field(description="What happened, in words a support person reads")
    amount: int
    balance_change: int = Field(description="How this line moved the balance")
    available_change: int = Field(description="How this line moved the available amount")
    counterparty_id: str | None
    balance: int
    available: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    recorded_at: datetime
    metadata: dict[str, str]
    allocations: list[AllocationRead] = Field(
        default_factory=list, description="The credit lots this line moved, signed like amount"
    )

    @classmethod
    def of(cls, row: StatementLine) -> "EntryRead":
        return cls(
            position=row.position,
            transfer_id=row.transfer_id,
            kind=row.kind,
            action=row.action,
            amount=row.amount,
            balance_change=row.balance_change,
            available_change=row.available_change,
            counterparty_id=row.counterparty_id,
            balance=row.balance,
            available=row.available,
            debits_posted=row.debits_posted,
            credits_posted=row.credits_posted,
            debits_pending=row.debits_pending,
            credits_pending=row.credits_pending,
            recorded_at=row.recorded_at,
            metadata=row.metadata,
            allocations=allocations_read(row.allocations),
        )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
    position: int | None = Field(default=None, description="The log position this page reflects")


class AccountUpdate(Strict):
    """JSON Merge Patch of the metadata: a key set to null is removed."""

    metadata: Annotated[
        dict[
            MetadataKey,
            Annotated[StrictStr, Field(max_length=limits.METADATA_VALUE_LENGTH_MAX)] | None,
        ],
        Field(max_length=limits.METADATA_ENTRIES_MAX, examples=[{"plan": "pro", "trial": None}]),
    ]

    def command(self, account_id: str) -> UpdateAccountMetadata:
        """The command this body asks for on the path's account, checked once."""
        return UpdateAccountMetadata(account_id, self.metadata).checked_beyond_body()


class HistoryPointRead(BaseModel):
    start: datetime
    end: datetime
    balance: int
    available: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    position: int = Field(description="The last event at or before the interval's end (0: none)")

    @classmethod
    def of(cls, point: HistoryPoint) -> "HistoryPointRead":
        return cls(
            start=point.start,
            end=point.end,
            balance=point.balance,
            available=point.available,
            debits_posted=point.debits_posted,
            credits_posted=point.credits_posted,
            debits_pending=point.debits_pending,
            credits_pending=point.credits_pending,
            position=point.position,
        )


class HistoryRead(BaseModel):
    account_id: str
    interval: Literal["hour", "day", "month"]
    items: list[HistoryPointRead]
    position: int


class UnitTotalsRead(BaseModel):
    unit: str
    debits_posted: int
    credits_posted: int
    balance_sum: int = Field(description="Sum of every account's balance: always 0")
    account_count: int

    @classmethod
    def of(cls, totals: UnitTotals) -> "UnitTotalsRead":
        return cls(
            unit=totals.unit,
            debits_posted=totals.debits_posted,
            credits_posted=totals.credits_posted,
            balance_sum=totals.balance_sum,
            account_count=totals.account_count,
        )


class TotalsRead(BaseModel):
    units: list[UnitTotalsRead]
    position: int


class Health(BaseModel):
    status: Literal["ok"]


class WorkerStatus(BaseModel):
    name: str
    up: bool
    since: datetime
    failures: int
    last_error: str | None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    store_reachable: bool
    generation: int
    checkpoint: int
    head: int
    lag_positions: int
    lag_seconds: float
    # Each supervised worker of this process (empty for an API-only process).
    workers: list[WorkerStatus] = []
    # Why not ready, in words (absent when ready).
    reason: str | None = None
    events: EventsReadiness | None = None
