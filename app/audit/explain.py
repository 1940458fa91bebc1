""" "Why is this balance 37?": an account's statement, line by line, from its own stream."""

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from eventsourcing.application import AggregateNotFoundError

from app.application.ledger import Ledger
from app.domain.account import Account, counterparty_id, line_allocations
from app.domain.errors import AccountNotFoundError
from app.domain.postings import Counters, post
from app.domain.transfer import Transfer, fate_after, initial_fate
from app.domain.values import account_uuid, check_id, transfer_uuid

TRANSFER_CACHE_SIZE: Final = 4096


@dataclass(frozen=True)
class StatementLine:
    version: int
    recorded_at: datetime
    transfer_id: str
    kind: str
    counterparty_id: str | None
    amount: int
    balance: int
    available: int
    debits_pending: int
    credits_pending: int
    hold_fate: str | None
    metadata: dict[str, str]
    # The credit lots this line moved ([{grant_id, amount}], signed like ``amount``).
    allocations: list[dict[str, Any]]

    def row(self) -> dict[str, Any]:
        values = asdict(self)
        values["recorded_at"] = self.recorded_at.isoformat()
        return values


@dataclass(frozen=True)
class TransferFacts:
    debit_account_id: str
    credit_account_id: str
    pending: bool
    status: str
    metadata: dict[str, str]


def explain(ledger: Ledger, account_id: str, moment: datetime | None) -> Iterator[StatementLine]:
    """Every line of the account's history up to ``moment`` (all of it when None)."""
    account_id = check_id(account_id, "account_id")
    history: Iterator[Any] = iter(ledger.events.get(account_uuid(account_id)))
    first = next(history, None)
    if not isinstance(first, Account.Opened) or (moment is not None and first.timestamp > moment):
        raise AccountNotFoundError(f"account {account_id} does not exist at that time")

    @lru_cache(maxsize=TRANSFER_CACHE_SIZE)
    def facts(transfer_id: str) -> TransferFacts:
        return _transfer_facts(ledger, transfer_id, moment)

    counters = Counters()
    for event in history:  # the rest of the stream, read once
        if moment is not None and event.timestamp > moment:
            return
        if not isinstance(event, Account.BalanceChanged):
            continue
        delta = event.delta()
        post(counters, delta)
        transfer = facts(event.transfer_id)
        yield StatementLine(
            version=event.originator_version,
            recorded_at=event.timestamp,
            transfer_id=event.transfer_id,
            kind=type(event).__name__,
            counterparty_id=counterparty_id(
                event, transfer.debit_account_id, transfer.credit_account_id
            ),
            amount=delta.balance or (delta.credits_pending - delta.debits_pending),
            balance=counters.balance,
            available=counters.available,
            debits_pending=counters.debits_pending,
            credits_pending=counters.credits_pending,
            hold_fate=transfer.status if transfer.pending else None,
            metadata=transfer.metadata,
            allocations=line_allocations(event),
        )


def _transfer_facts(ledger: Ledger, transfer_id: str, moment: datetime | None) -> TransferFacts:
    """The transfer as it stood at ``moment``: a hold's fate is what it was then."""
    try:
        events: list[Any] = list(ledger.events.get(transfer_uuid(transfer_id)))
    except AggregateNotFoundError:  # pragma: no cover - the stream exists if a leg names it
        events = []
    recorded = next((e for e in events if isinstance(e, Transfer.TransferRecorded)), None)
    if recorded is None:
        return TransferFacts("?", "?", pending=False, status="unknown", metadata={})
    status = initial_fate(recorded.pending)
    for event in events[1:]:
        if moment is not None and event.timestamp > moment:
            break
        status = fate_after(status, event)
    return TransferFacts(
        recorded.debit_account_id,
        recorded.credit_account_id,
        recorded.pending,
        status,
        dict(recorded.metadata),
    )
