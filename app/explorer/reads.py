"""What the explorer reads, in one place: the views (through the API's services) and,
for a transfer's status history, the transfer's own stream.

Every method is bounded (a page size, a scan limit), so no page can make the server
walk the whole ledger.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from eventsourcing.application import AggregateNotFoundError

from app.api.services import Services
from app.application.read_model import TransferFilter
from app.application.views import LotRow, TransferView
from app.domain.errors import TransferNotFoundError
from app.domain.transfer import Transfer
from app.domain.values import account_uuid, transfer_uuid
from app.explorer.pages import (
    HistoryWindow,
    HoldsAsOf,
    LotsAsOf,
    StatusStep,
    lots_as_of,
    open_holds,
    status_history,
)
from app.persistence.last_audit import LastAudit, LastAuditFile
from projections.runner import Lag
from projections.views import BalanceRow, EntryRow, TransferRow

SEARCH_PAGE_SIZE: Final = 50
STATEMENT_PAGE_SIZE: Final = 50
RECENT_TRANSFERS_SHOWN: Final = 20
# A search looks through at most this many accounts.
SEARCH_SCAN_MAX: Final = 100_000
# How many statement lines of an account are looked through for its open holds.
HOLDS_SCAN_LINES_MAX: Final = 999
TRANSFER_EVENTS_MAX: Final = 100
LOTS_PAGE_SIZE: Final = 100
# How many pages of an account's lots are read (consumed ones included) for one page.
LOTS_PAGES_MAX: Final = 10


@dataclass(frozen=True)
class AccountSearch:
    prefix: str = ""
    unit: str | None = None
    status: str | None = None
    metadata: Mapping[str, str] | None = None
    after_id: str | None = None
    limit: int = SEARCH_PAGE_SIZE


@dataclass(frozen=True)
class HistoryPoint:
    end: datetime
    balance: int
    available: int


@dataclass(frozen=True)
class UnitTotal:
    unit: str
    debits_posted: int
    credits_posted: int
    balance_sum: int
    account_count: int

    @property
    def balanced(self) -> bool:
        return self.balance_sum == 0


class ExplorerReads:
    def __init__(self, services: Services) -> None:
        self.services = services

    def account(self, account_id: str, as_of: datetime | None) -> BalanceRow | None:
        view = self.services.view()
        if as_of is None:
            return view.balance(account_id)
        return view.balance_as_of(account_id, as_of)

    def opened_at(self, account_id: str) -> datetime | None:
        """When the account was opened: the time of the first event of its stream."""
        stream = self.services.ledger.events.get(account_uuid(account_id), limit=1)
        first: Any = next(iter(stream), None)
        return None if first is None else first.timestamp

    def search(self, query: AccountSearch) -> list[BalanceRow]:
        found: list[BalanceRow] = []
        for row in self._accounts_from(query.after_id or query.prefix):
            if query.after_id is not None and row.account_id <= query.after_id:
                continue
            if not row.account_id.startswith(query.prefix):
                if row.account_id > query.prefix:
                    break
                continue
            if _matches(row, query):
                found.append(row)
                if len(found) >= query.limit:
                    break
        return found

    def _accounts_from(self, start: str) -> Iterator[BalanceRow]:
        for scanned, row in enumerate(self.services.view().all_balances()):
            if scanned >= SEARCH_SCAN_MAX:
                return
            if row.account_id >= start:
                yield row

    def history(self, account_id: str, window: HistoryWindow) -> list[HistoryPoint]:
        """The balance just before the end of each whole interval of ``window``."""
        view = self.services.view()
        points = []
        for end in window.bucket_ends():
            row = view.balance_as_of(account_id, end - timedelta(microseconds=1))
            balance, available = (0, 0) if row is None else (row.balance, row.available)
            points.append(HistoryPoint(end=end, balance=balance, available=available))
        return points

    def statement(
        self, account_id: str, *, before_position: int | None, until: datetime | None
    ) -> list[EntryRow]:
        return self.services.view().entries(
            account_id, before_position=before_position, until=until, limit=STATEMENT_PAGE_SIZE
        )

    def open_holds(self, account: BalanceRow, as_of: datetime | None) -> HoldsAsOf:
        """The account's holds open at ``as_of`` (now when None), from its statement."""
        until = None if as_of is None else as_of + timedelta(microseconds=1)
        lines = self.services.view().entries(
            account.account_id, until=until, limit=HOLDS_SCAN_LINES_MAX + 1
        )
        return open_holds(
            lines,
            reached_start=len(lines) <= HOLDS_SCAN_LINES_MAX,
            debits_pending=account.debits_pending,
            credits_pending=account.credits_pending,
        )

    def lots(self, account: BalanceRow, as_of: datetime | None) -> LotsAsOf:
        """The account's lots still holding credit at ``as_of`` (now when None)."""
        view = self.services.view()
        at = as_of or self.services.now()
        held: list[LotRow] = []
        after: int | None = None
        for _ in range(LOTS_PAGES_MAX):
            page = view.lots(
                account.account_id,
                status="all",
                at=at,
                moment=as_of,
                after_position=after,
                limit=LOTS_PAGE_SIZE,
            )
            held.extend(lot for lot in page.items if lot.remaining or lot.reserved)
            after = page.next_after
            if after is None:
                break
        return lots_as_of(held, account.balance, complete=after is None)

    def transfer(self, transfer_id: str) -> TransferRow | None:
        return self.services.view().transfer(transfer_id)

    def transfer_facts(self, transfer_id: str) -> TransferView | None:
        """The transfer from its own stream: its grant terms and allocations included."""
        try:
            return self.services.ledger.get_transfer(transfer_id)
        except TransferNotFoundError:
            return None

    def side_after(self, account_id: str, position: int | None) -> BalanceRow | None:
        """An account as it stood once the commit at ``position`` was applied."""
        if position is None:
            return None
        view = self.services.view()
        return view.balance_at_position(account_id, view.commit_end(position))

    def transfer_history(self, transfer_id: str) -> list[StatusStep]:
        try:
            events: list[Any] = list(
                self.services.ledger.events.get(
                    transfer_uuid(transfer_id), limit=TRANSFER_EVENTS_MAX
                )
            )
        except AggregateNotFoundError:
            return []
        return status_history(event for event in events if isinstance(event, Transfer.Event))

    def recent_transfers(self) -> list[TransferRow]:
        return self.services.view().transfers(TransferFilter(limit=RECENT_TRANSFERS_SHOWN))

    def totals(self) -> list[UnitTotal]:
        sums: dict[str, list[int]] = {}
        for row in self.services.view().all_balances():
            figures = sums.setdefault(row.unit, [0, 0, 0, 0])
            figures[0] += row.debits_posted
            figures[1] += row.credits_posted
            figures[2] += row.balance
            figures[3] += 1
        return [UnitTotal(unit, *figures) for unit, figures in sorted(sums.items())]

    def lag(self) -> Lag:
        return self.services.lag()

    def last_audit(self) -> LastAudit | None:
        return LastAuditFile(self.services.settings.last_audit_path).load()


def _matches(row: BalanceRow, query: AccountSearch) -> bool:
    if query.unit and row.unit != query.unit:
        return False
    if query.status and row.status != query.status:
        return False
    return all(row.metadata.get(key) == value for key, value in (query.metadata or {}).items())
