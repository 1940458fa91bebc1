""" "Why is this balance 37?": an account's statement, line by line, from its own stream
(as of a time: the part of it, and of its transfers' streams, in that time's cut of the
log)."""

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from app.application.ledger import Ledger
from app.audit.log import Instant, read_admitted, read_stamps
from app.domain.account import Account, counterparty_id, line_allocations
from app.domain.commits import commit_of
from app.domain.errors import AccountNotFoundError
from app.domain.postings import Counters, post
from app.domain.transfer import Transfer, fate_after, initial_fate
from app.domain.values import account_uuid, check_id, transfer_uuid

TRANSFER_CACHE_SIZE: Final = 4096
# Below every stream's first version (INITIAL_VERSION = 0): "none of the stream".
NO_VERSION: Final = -1


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
    """Every line of the account's history as of ``moment`` (all of it when None).

    As of a time is the audit's cut of the log (decision 0036), found from the time
    stamps and commit marks of the log's events up to that time (``account_cut``): the
    views' ``balance_as_of`` and ``ledger replay --as-of`` answer at the same cut."""
    account_id = check_id(account_id, "account_id")
    if moment is None:
        cut = None
        history: Iterator[Any] = iter(ledger.events.get(account_uuid(account_id)))
    else:
        cut = account_cut(ledger, account_uuid(account_id), moment)
        history = iter(cut.account_events)
    first = next(history, None)
    if not isinstance(first, Account.Opened):
        raise AccountNotFoundError(f"account {account_id} does not exist at that time")

    @lru_cache(maxsize=TRANSFER_CACHE_SIZE)
    def facts(transfer_id: str) -> TransferFacts:
        return _transfer_facts(
            ledger, transfer_id, None if cut is None else cut.end_of(transfer_id)
        )

    counters = Counters()
    for event in history:  # the rest of the stream, read once
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


@dataclass(frozen=True)
class Cut:
    """What of one account a cut by time holds: its events, and the last version in
    the cut of each transfer it took part in."""

    account_events: list[Any]
    transfer_versions: dict[UUID, int]

    def end_of(self, transfer_id: str) -> int:
        # A leg and the transfer's record are one commit: a leg in the cut has its
        # transfer in it too. NO_VERSION (none of its stream) only for a log that broke it.
        return self.transfer_versions.get(transfer_uuid(transfer_id), NO_VERSION)


def account_cut(ledger: Ledger, account: UUID, moment: datetime) -> Cut:
    """The account's stream and its transfers' streams, each cut where the log's cut by
    time ends: an event is in it when its commit is (the marks say which commit each
    event is in). Which commits are in is found by the audit's window over the log's
    time stamps and commit marks alone (``read_stamps``: no event built), read only
    until every commit of these streams is in, or the window closes. The transfers'
    streams are read whole first, as explain without a time reads them (their commits
    and versions kept). Streams written before the marks are cut by the full read
    (``account_cut_by_replay``)."""
    own = list(ledger.events.get(account))
    transfers = {
        transfer_uuid(event.transfer_id)
        for event in own
        if isinstance(event, Account.BalanceChanged)
    }
    # Of each transfer's events, only the commit and the version are kept.
    commits = {
        transfer: [
            (commit_of(event), event.originator_version) for event in ledger.events.get(transfer)
        ]
        for transfer in sorted(transfers)
    }
    wanted = {commit_of(event) for event in own}
    wanted.update(commit for marks in commits.values() for commit, _ in marks)
    if None in wanted:
        return account_cut_by_replay(ledger, account, moment)
    admitted: set[str | None] = set()
    for commit in read_admitted(ledger, Instant(moment=moment), reader=read_stamps):
        admitted.add(commit_of(commit[-1][1]))  # one commit, its events' marks alike
        if wanted <= admitted:
            break
    # The cut is a prefix of the log, so of each stream: its first events.
    cut = Cut([event for event in own if commit_of(event) in admitted], {})
    assert cut.account_events == own[: len(cut.account_events)], "the cut is a prefix"
    for transfer, marks in commits.items():
        versions = [version for commit, version in marks if commit in admitted]
        assert versions == [version for _, version in marks[: len(versions)]], "a prefix"
        if versions:
            cut.transfer_versions[transfer] = versions[-1]
    return cut


def account_cut_by_replay(ledger: Ledger, account: UUID, moment: datetime) -> Cut:
    """The same cut, from one read of the log's prefix as domain events, a whole commit
    at a time (its events are ordered by aggregate, so a transfer's events may come
    before the account's legs in it): for logs written before the commit marks, where
    only the events themselves tell where a commit ends."""
    cut = Cut([], {})
    transfers: set[UUID] = set()
    for commit in read_admitted(ledger, Instant(moment=moment)):
        own = [event for _, event in commit if event.originator_id == account]
        cut.account_events.extend(own)
        transfers.update(
            transfer_uuid(event.transfer_id)
            for event in own
            if isinstance(event, Account.BalanceChanged)
        )
        for _, event in commit:
            if event.originator_id in transfers:
                cut.transfer_versions[event.originator_id] = event.originator_version
    return cut


def _transfer_facts(ledger: Ledger, transfer_id: str, last_version: int | None) -> TransferFacts:
    """The transfer as it stood at the cut (its events up to ``last_version``; all of
    them when None): a hold's fate is what it was then."""
    try:
        events: list[Any] = list(ledger.events.get(transfer_uuid(transfer_id), lte=last_version))
    except AggregateNotFoundError:  # pragma: no cover - the stream exists if a leg names it
        events = []
    recorded = next((e for e in events if isinstance(e, Transfer.TransferRecorded)), None)
    if recorded is None:
        return TransferFacts("?", "?", pending=False, status="unknown", metadata={})
    status = initial_fate(recorded.pending)
    for event in events[1:]:
        status = fate_after(status, event)
    return TransferFacts(
        recorded.debit_account_id,
        recorded.credit_account_id,
        recorded.pending,
        status,
        dict(recorded.metadata),
    )
