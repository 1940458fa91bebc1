"""The Transfer aggregate: one stream per transfer; its client id is its idempotency key."""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal
from uuid import UUID

from app.domain.chain import ChainedAggregate, ChainedCreated, ChainedEvent
from app.domain.errors import (
    PostAmountExceedsPendingError,
    TransferAlreadyPostedError,
    TransferAlreadyReversedError,
    TransferAlreadyVoidedError,
    TransferExpiredError,
    TransferNotPendingError,
    TransferNotReversibleError,
    TransferNotYetExpiredError,
)
from app.domain.lots import Allocation, Lot, LotTerms
from app.domain.values import transfer_uuid

TransferStatus = Literal["posted", "pending", "voided", "expired"]
# What a client's grant body says (the rest of a transfer's grant record is derived).
GRANT_REQUEST_FIELDS: Final = ("expires_at", "requested_effective_at", "priority", "category")


class Transfer(ChainedAggregate):
    INITIAL_VERSION = 0

    class TransferRecorded(ChainedCreated):
        # Version 2: ``grant`` (the lot's terms when this transfer is a credit grant) and
        # ``allocations`` (the debit side's lots). None on version 1 events: no grant,
        # and everything came from the general lot.
        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("grant", "allocations")
        transfer_id: str
        debit_account_id: str
        credit_account_id: str
        amount: int
        unit: str
        pending: bool
        timeout_seconds: int | None
        metadata: dict[str, str]
        reversal_of: str | None
        grant: dict[str, Any] | None = None
        allocations: list[dict[str, Any]] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["grant"] = state["allocations"] = None

    class PendingPosted(ChainedEvent):
        class_version: ClassVar[int] = 2
        added_fields: ClassVar[tuple[str, ...]] = ("allocations",)
        amount: int
        allocations: list[dict[str, Any]] | None  # what the post consumed

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["allocations"] = None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = fate_after(aggregate.status, self)
            aggregate.amount_posted = self.amount
            if self.allocations is not None:
                aggregate.allocations = _allocations(self.allocations)
            elif aggregate.allocations is not None:
                aggregate.allocations = ()

    class PendingVoided(ChainedEvent):
        def apply(self, aggregate: Any) -> None:
            aggregate.status = fate_after(aggregate.status, self)

    class PendingExpired(ChainedEvent):
        def apply(self, aggregate: Any) -> None:
            aggregate.status = fate_after(aggregate.status, self)

    class Reversed(ChainedEvent):
        reversal_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.reversed_by = self.reversal_id

    @staticmethod
    def create_id(transfer_id: str) -> UUID:
        return transfer_uuid(transfer_id)

    def __init__(
        self,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount: int,
        unit: str,
        pending: bool,
        timeout_seconds: int | None,
        metadata: Mapping[str, str],
        reversal_of: str | None,
        grant: dict[str, Any] | None = None,
        allocations: list[dict[str, Any]] | None = None,
    ) -> None:
        self.transfer_id = transfer_id
        self.debit_account_id = debit_account_id
        self.credit_account_id = credit_account_id
        self.amount = amount
        self.unit = unit
        self.pending = pending
        self.timeout_seconds = timeout_seconds
        self.metadata = dict(metadata)
        self.reversal_of = reversal_of
        self.status: TransferStatus = initial_fate(pending)
        self.amount_posted = 0 if pending else amount
        self.reversed_by: str | None = None
        # The lot's terms and the debit side's lots (None: a transfer from before lots).
        self.grant = grant
        self.allocations: tuple[Allocation, ...] | None = (
            None if allocations is None else _allocations(allocations)
        )

    @classmethod
    def record(
        cls,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount: int,
        unit: str,
        pending: bool,
        timeout_seconds: int | None,
        metadata: Mapping[str, str],
        reversal_of: str | None = None,
        grant: dict[str, Any] | None = None,
        allocations: tuple[Allocation, ...] = (),
    ) -> "Transfer":
        return cls._create_chained(
            cls.TransferRecorded,
            id=transfer_uuid(transfer_id),
            transfer_id=transfer_id,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount=amount,
            unit=unit,
            pending=pending,
            timeout_seconds=timeout_seconds,
            metadata=dict(metadata),  # the event's own (the command's is read-only)
            reversal_of=reversal_of,
            grant=grant,
            allocations=[{"grant_id": a.grant_id, "amount": a.amount} for a in allocations],
        )

    @property
    def recorded_at(self) -> datetime:
        return self.created_on

    @property
    def expires_at(self) -> datetime | None:
        if not self.pending or self.timeout_seconds is None:
            return None
        return self.created_on + timedelta(seconds=self.timeout_seconds)

    def is_due_to_expire(self, now: datetime) -> bool:
        expires_at = self.expires_at
        return self.status == "pending" and expires_at is not None and now >= expires_at

    def same_body(
        self,
        debit_account_id: str,
        credit_account_id: str,
        amount: int,
        pending: bool,
        timeout_seconds: int | None,
        metadata: Mapping[str, str],
        reversal_of: str | None,
        grant_terms: dict[str, Any] | None = None,
    ) -> bool:
        """Whether a resent command is this transfer's (a grant's requested terms
        included: a grant is part of the idempotent body)."""
        if grant_terms != self.requested_grant_terms():
            return False
        mine = (
            self.debit_account_id,
            self.credit_account_id,
            self.amount,
            self.pending,
            self.timeout_seconds,
            self.metadata,
            self.reversal_of,
        )
        theirs = (
            debit_account_id,
            credit_account_id,
            amount,
            pending,
            timeout_seconds,
            metadata,
            reversal_of,
        )
        return mine == theirs

    def requested_grant_terms(self) -> dict[str, Any] | None:
        if self.grant is None:
            return None
        return {key: self.grant[key] for key in GRANT_REQUEST_FIELDS}

    def lot_terms(self) -> LotTerms | None:
        if self.grant is None:
            return None
        return LotTerms(
            expires_at=self.grant["expires_at"],
            effective_at=self.grant["effective_at"],
            priority=self.grant["priority"],
            category=self.grant["category"],
            sequence=self.grant["sequence"],
        )

    def departed_lot(self) -> Lot:
        """This grant's lot as it was granted, with nothing left: how a reversal revives
        a lot that has left its account."""
        terms = self.lot_terms()
        assert terms is not None
        return Lot(self.transfer_id, terms, self.amount, 0)

    # Commands --------------------------------------------------------------------------

    def check_postable(self, amount: int, now: datetime) -> None:
        self._check_still_pending(now)
        if amount > self.amount:
            raise PostAmountExceedsPendingError(
                f"cannot post {amount}: transfer {self.transfer_id} holds {self.amount}",
                transfer_id=self.transfer_id,
            )

    def post(
        self, amount: int, now: datetime, consumed: tuple[Allocation, ...] | None = None
    ) -> None:
        self.check_postable(amount, now)
        self.trigger_event(
            self.PendingPosted,
            amount=amount,
            allocations=None
            if consumed is None
            else [{"grant_id": a.grant_id, "amount": a.amount} for a in consumed],
        )

    def void(self, now: datetime) -> None:
        self._check_still_pending(now)
        self.trigger_event(self.PendingVoided)

    def expire(self, now: datetime) -> None:
        self._check_pending()
        if not self.is_due_to_expire(now):
            raise TransferNotYetExpiredError(
                f"transfer {self.transfer_id} expires at {self.expires_at}",
                transfer_id=self.transfer_id,
            )
        self.trigger_event(self.PendingExpired)

    def mark_reversed(self, reversal_id: str) -> None:
        self.check_reversible()
        self.trigger_event(self.Reversed, reversal_id=reversal_id)

    def check_reversible(self) -> None:
        if self.status != "posted":
            raise TransferNotReversibleError(
                f"transfer {self.transfer_id} is {self.status}; only posted transfers reverse",
                transfer_id=self.transfer_id,
            )
        if self.reversed_by is not None:
            raise TransferAlreadyReversedError(
                f"transfer {self.transfer_id} was reversed by {self.reversed_by}",
                transfer_id=self.transfer_id,
                reversed_by=self.reversed_by,
            )

    def _check_pending(self) -> None:
        if self.status == "pending":
            return
        if not self.pending:
            raise TransferNotPendingError(
                f"transfer {self.transfer_id} is not a pending transfer",
                transfer_id=self.transfer_id,
            )
        error_class = {
            "posted": TransferAlreadyPostedError,
            "voided": TransferAlreadyVoidedError,
            "expired": TransferExpiredError,
        }[self.status]
        raise error_class(
            f"pending transfer {self.transfer_id} is already {self.status}",
            transfer_id=self.transfer_id,
        )

    def _check_still_pending(self, now: datetime) -> None:
        self._check_pending()
        if self.is_due_to_expire(now):
            # Past its timeout a hold can no longer be posted or voided, even before the
            # expiry worker has written the expiry: the reservation is already lost.
            raise TransferExpiredError(
                f"pending transfer {self.transfer_id} expired at {self.expires_at}",
                transfer_id=self.transfer_id,
            )


# A transfer's fate: the one rule every reader follows (the aggregate, the views, explain).


def initial_fate(pending: bool) -> TransferStatus:
    """A transfer's status when recorded: a hold waits, anything else is posted at once."""
    return "pending" if pending else "posted"


def fate_after(status: TransferStatus, event: object) -> TransferStatus:
    """The transfer's status after one of its own events, from ``status`` before it."""
    if isinstance(event, Transfer.TransferRecorded):
        return initial_fate(event.pending)
    if isinstance(event, Transfer.PendingPosted):
        return "posted"
    if isinstance(event, Transfer.PendingVoided):
        return "voided"
    if isinstance(event, Transfer.PendingExpired):
        return "expired"
    return status  # a reversal links the transfers; it leaves the status as it was


def _allocations(records: list[dict[str, Any]]) -> tuple[Allocation, ...]:
    return tuple(Allocation(r["grant_id"], r["amount"]) for r in records)
