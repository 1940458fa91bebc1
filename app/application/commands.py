"""Commands: imperative, validated at construction time by ``checked()``.

They arrive from the API (already shaped by pydantic) or from Python callers with any
values at all, so every field is checked here again before the domain sees it.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain.account import ACCOUNT_TYPES
from app.domain.errors import SameAccountError, TimeRangeError, ValidationError
from app.domain.lots import CATEGORY_DEFAULT, PRIORITY_DEFAULT, Category, check_grant_terms
from app.domain.values import (
    LEDGER_TRANSFER_PREFIXES,
    check_amount,
    check_id,
    check_metadata,
    check_overdraft_limit,
    check_timeout_seconds,
    check_unit,
    is_breakage_transfer_id,
)


@dataclass(frozen=True)
class OpenAccount:
    id: str
    unit: str
    allow_negative: bool = False
    overdraft_limit: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    account_type: str | None = None  # None: default_account_type(allow_negative)

    def checked(self) -> "OpenAccount":
        if not isinstance(self.allow_negative, bool):
            raise ValidationError("allow_negative must be a boolean", field="allow_negative")
        if self.account_type is not None and self.account_type not in ACCOUNT_TYPES:
            raise ValidationError(
                f"account_type must be one of {', '.join(ACCOUNT_TYPES)}", field="account_type"
            )
        return OpenAccount(
            id=check_id(self.id, "id"),
            unit=check_unit(self.unit),
            allow_negative=self.allow_negative,
            overdraft_limit=check_overdraft_limit(self.overdraft_limit),
            metadata=check_metadata(self.metadata),
            account_type=self.account_type,
        )


@dataclass(frozen=True)
class GrantTerms:
    """A grant's body: the lot a transfer opens in its credit account."""

    expires_at: datetime | None = None
    effective_at: datetime | None = None
    priority: int = PRIORITY_DEFAULT
    category: Category = CATEGORY_DEFAULT

    def checked(self) -> "GrantTerms":
        priority, category = check_grant_terms(self.priority, self.category)
        for name, moment in (("expires_at", self.expires_at), ("effective_at", self.effective_at)):
            if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None):
                raise ValidationError(
                    f"grant.{name} must be a time with its UTC offset", field=f"grant.{name}"
                )
        if (
            self.expires_at is not None
            and self.effective_at is not None
            and self.expires_at <= self.effective_at
        ):
            raise TimeRangeError(
                "grant.expires_at must be after grant.effective_at", field="grant.expires_at"
            )
        return GrantTerms(self.expires_at, self.effective_at, priority, category)

    def requested(self) -> dict[str, Any]:
        """As a transfer records what was asked (the idempotent part of the body)."""
        return {
            "expires_at": self.expires_at,
            "requested_effective_at": self.effective_at,
            "priority": self.priority,
            "category": self.category,
        }


@dataclass(frozen=True)
class RecordTransfer:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    pending: bool = False
    timeout_seconds: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    grant: GrantTerms | None = None

    def checked(self) -> "RecordTransfer":
        grant = None
        if self.grant is not None:
            if not isinstance(self.grant, GrantTerms):
                raise ValidationError("grant must be an object", field="grant")
            if self.pending:
                raise ValidationError(
                    "a grant cannot be pending: its lot opens when it is recorded", field="grant"
                )
            grant = self.grant.checked()
        if not isinstance(self.pending, bool):
            raise ValidationError("pending must be a boolean", field="pending")
        timeout_seconds = self.timeout_seconds
        if timeout_seconds is not None:
            if not self.pending:
                raise ValidationError(
                    "timeout_seconds applies only to pending transfers", field="timeout_seconds"
                )
            timeout_seconds = check_timeout_seconds(timeout_seconds)
        command = RecordTransfer(
            id=check_id(self.id, "id"),
            debit_account_id=check_id(self.debit_account_id, "debit_account_id"),
            credit_account_id=check_id(self.credit_account_id, "credit_account_id"),
            amount=check_amount(self.amount),
            pending=self.pending,
            timeout_seconds=timeout_seconds,
            metadata=check_metadata(self.metadata),
            grant=grant,
        )
        if is_breakage_transfer_id(command.id):
            raise ValidationError(
                f"ids starting with {' or '.join(LEDGER_TRANSFER_PREFIXES)} are the ledger's own",
                field="id",
            )
        if command.debit_account_id == command.credit_account_id:
            raise SameAccountError(
                "debit_account_id and credit_account_id must differ",
                account_id=command.debit_account_id,
            )
        return command
