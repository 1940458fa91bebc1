"""What the explorer reads, in one place: the query service (the read policy shared with
the API) and, for a transfer's status history, the transfer's own stream.

A page reads one state of the views: ``ExplorerReads.caught_up`` waits (bounded) until
they have applied the log's head, so its figures equal the API's current answer and its
statement, lots and holds agree with them. Every method is bounded (a page size, a scan
limit), so no page can make the server walk the whole ledger.
"""

from datetime import datetime, timedelta
from typing import Any, Final

from eventsourcing.application import AggregateNotFoundError

from app.api.services import Services
from app.application.read_model import AccountFilter, Lag, ReadModel, TransferFilter
from app.application.views import (
    AccountView,
    HistoryPoint,
    LotRow,
    StatementLine,
    TransferView,
    UnitTotals,
)
from app.domain.errors import AccountNotFoundError, TransferNotFoundError
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

SEARCH_PAGE_SIZE: Final = 50
STATEMENT_PAGE_SIZE: Final = 50
RECENT_TRANSFERS_SHOWN: Final = 20
# How many statement lines of an account are looked through for its open holds.
HOLDS_SCAN_LINES_MAX: Final = 999
TRANSFER_EVENTS_MAX: Final = 100
LOTS_PAGE_SIZE: Final = 100
# How many pages of an account's lots are read (consumed ones included) for one page.
LOTS_PAGES_MAX: Final = 10


class ExplorerReads:
    def __init__(self, services: Services, view: ReadModel) -> None:
        self.services = services
        self.queries = services.queries
        self.view = view

    @classmethod
    def caught_up(cls, services: Services) -> "ExplorerReads":
        """Reads of the views once they have applied the log's head (bounded wait)."""
        return cls(services, services.queries.reach(services.queries.head()))

    def account(self, account_id: str, as_of: datetime | None) -> AccountView | None:
        try:
            if as_of is not None:
                return self.queries.account(account_id, as_of=as_of)
        except AccountNotFoundError:
            return None
        return self.view.balance(account_id)

    def opened_at(self, account_id: str) -> datetime | None:
        """When the account was opened: the time of the first event of its stream."""
        stream = self.services.ledger.events.get(account_uuid(account_id), limit=1)
        first: Any = next(iter(stream), None)
        return None if first is None else first.timestamp

    def search(self, query: AccountFilter) -> list[AccountView]:
        return self.queries.accounts(query).value

    def history(self, account_id: str, window: HistoryWindow) -> list[HistoryPoint]:
        """The account at the end of each whole interval of ``window``."""
        if window.history_until <= window.since:
            return []
        return self.queries.history(
            account_id, interval=window.interval, since=window.since, until=window.history_until
        ).value

    def statement(
        self, account_id: str, *, before_position: int | None, until: datetime | None
    ) -> list[StatementLine]:
        return self.view.entries(
            account_id, before_position=before_position, until=until, limit=STATEMENT_PAGE_SIZE
        )

    def open_holds(self, account: AccountView, as_of: datetime | None) -> HoldsAsOf:
        """The account's holds open at ``as_of`` (now when None), from its statement."""
        until = None if as_of is None else as_of + timedelta(microseconds=1)
        lines = self.view.entries(account.id, until=until, limit=HOLDS_SCAN_LINES_MAX + 1)
        return open_holds(
            lines,
            reached_start=len(lines) <= HOLDS_SCAN_LINES_MAX,
            debits_pending=account.debits_pending,
            credits_pending=account.credits_pending,
        )

    def lots(self, account: AccountView, as_of: datetime | None) -> LotsAsOf:
        """The account's lots still holding credit at ``as_of`` (now when None)."""
        at = as_of or self.services.now()
        held: list[LotRow] = []
        after: int | None = None
        for _ in range(LOTS_PAGES_MAX):
            page = self.view.lots(
                account.id,
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

    def transfer(self, transfer_id: str) -> TransferView | None:
        return self.view.transfer(transfer_id)

    def transfer_facts(self, transfer_id: str) -> TransferView | None:
        """The transfer from its own stream: its grant terms and allocations included."""
        try:
            return self.services.ledger.get_transfer(transfer_id)
        except TransferNotFoundError:
            return None

    def side_after(self, account_id: str, position: int | None) -> AccountView | None:
        """An account as it stood once the commit at ``position`` was applied."""
        if position is None:
            return None
        try:
            return self.queries.account(account_id, at_position=position)
        except AccountNotFoundError:
            return None

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

    def recent_transfers(self) -> list[TransferView]:
        return self.view.transfers(TransferFilter(limit=RECENT_TRANSFERS_SHOWN))

    def totals(self) -> list[UnitTotals]:
        return self.queries.totals().value

    def lag(self) -> Lag:
        return self.services.lag()

    def last_audit(self) -> LastAudit | None:
        return LastAuditFile(self.services.settings.last_audit_path).load()
