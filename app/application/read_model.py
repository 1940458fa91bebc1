"""The read-model port: what the API, the audit and the CLI may ask of the views.

``projections/`` implements it (one implementation per backend: SQLite, PostgreSQL);
nothing outside ``projections/`` and the composition root knows which one it has.
The query service (``app.application.queries``) holds the read policy on top of it.
Imports go one way: api/audit/cli → application → domain; projections implement this.
"""

import calendar
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from app.application.views import (
    AccountView,
    DueGrant,
    HistoryPoint,
    LotPage,
    LotStatusFilter,
    StatementLine,
    TransferView,
    UnitTotals,
)
from app.domain.transfer import TransferStatus

PAGE_SIZE_MAX: Final = 1000
HISTORY_POINTS_MAX: Final = 1000

AccountStatus = Literal["open", "closed"]
Interval = Literal["hour", "day", "month"]
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class AccountFilter:
    """Which accounts a list asks for; always ordered by id, ``after_id`` is the cursor."""

    prefix: str | None = None
    unit: str | None = None
    status: AccountStatus | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    after_id: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class TransferFilter:
    """Which transfers a list asks for, in log order (``order``); ``cursor`` is the
    position of the last transfer of the previous page."""

    account_id: str | None = None
    status: TransferStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    order: Order = "desc"
    cursor: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class Lag:
    generation: int
    checkpoint: int
    head: int
    positions: int
    seconds: float


class ReadModel(Protocol):
    """One generation of the views. Every answer reflects the views' checkpoint at the
    time of the call; waiting for a position is the query service's business."""

    def checkpoint(self) -> int: ...

    def wait_for(self, position: int, timeout_seconds: float) -> bool:
        """Block until the views have applied ``position`` (True) or time ran out."""
        ...

    def commit_end(self, position: int) -> int:
        """The last position of the commit ``position`` falls in."""
        ...

    def cut(self, moment: datetime) -> int:
        """Where ``moment`` cuts the log (decision 0036): the position every read as of
        it reflects; 0 before the first commit."""
        ...

    # Accounts
    def balance(self, account_id: str) -> AccountView | None: ...

    def balance_at_position(self, account_id: str, position: int) -> AccountView | None: ...

    def balance_as_of(self, account_id: str, moment: datetime) -> AccountView | None: ...

    def accounts(self, query: AccountFilter) -> list[AccountView]: ...

    def all_balances(self) -> Iterator[AccountView]: ...

    def history(
        self, account_id: str, interval: Interval, since: datetime, until: datetime
    ) -> list[HistoryPoint]: ...

    def totals(
        self, *, position: int | None = None, moment: datetime | None = None
    ) -> list[UnitTotals]: ...

    # Statements
    def entries(
        self,
        account_id: str,
        *,
        before_position: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[StatementLine]: ...

    def entry_counts(self) -> dict[str, int]: ...

    # Transfers
    def transfer(self, transfer_id: str) -> TransferView | None: ...

    def transfers(self, query: TransferFilter) -> list[TransferView]: ...

    def transfer_page(self, after_id: str, limit: int) -> list[TransferView]: ...

    def due_expiries(self, now: datetime, limit: int) -> list[str]: ...

    def due_grant_expiries(
        self, now: datetime, limit: int, after: str | None = None
    ) -> list[DueGrant]: ...

    # Credit lots
    def lots(
        self,
        account_id: str,
        *,
        status: LotStatusFilter,
        at: datetime,
        position: int | None = None,
        moment: datetime | None = None,
        after_position: int | None = None,
        limit: int = 100,
    ) -> LotPage: ...

    def time_at_position(self, position: int) -> datetime | None:
        """When the commit holding ``position`` was recorded (None before the first)."""
        ...


class ReadModelSource(Protocol):
    """Where the live generation of the views is found (workers in this process, or
    the generation pointer of a process that only reads)."""

    def read_model(self) -> ReadModel: ...

    def lag(self) -> Lag: ...


def interval_bounds(
    interval: Interval, since: datetime, until: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Calendar intervals (UTC) from the one holding ``since`` to the one holding
    ``until``: hours, days, or months of their true length."""
    start = _truncate(since, interval)
    while start < until:
        end = _next(start, interval)
        yield start, end
        start = end


def _truncate(moment: datetime, interval: Interval) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    if interval == "hour":
        return moment
    moment = moment.replace(hour=0)
    return moment if interval == "day" else moment.replace(day=1)


def _next(start: datetime, interval: Interval) -> datetime:
    if interval == "hour":
        return start + timedelta(hours=1)
    if interval == "day":
        return start + timedelta(days=1)
    return start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
