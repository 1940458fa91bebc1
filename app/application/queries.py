"""The query service: the read policy, in one place, for every entry point.

- *Current balances are always current*: an account read without ``as_of`` or
  ``at_position`` comes from the account's own stream (every acknowledged write is in
  it, no waiting), with the position of its last event.
- *Everything else comes from the views*, after they have reached the position the
  caller needs (read-your-writes: ``min_position``), within a bounded wait.
- *Time travel never shows half a command*: a position inside a commit answers as of
  that commit's end, and an ``as_of`` instant is read once the views have caught up
  with the log's head (every event recorded by then is at or before it).

Every answer says which log position it reflects.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Final, Generic, TypeVar

from app.application.ledger import Ledger
from app.application.read_model import (
    HISTORY_POINTS_MAX,
    AccountFilter,
    Interval,
    Lag,
    ReadModel,
    ReadModelSource,
    TransferFilter,
    interval_bounds,
)
from app.application.views import (
    AccountView,
    HistoryPoint,
    StatementLine,
    TransferView,
    UnitTotals,
)
from app.domain.errors import (
    AccountNotFoundError,
    AsOfInFutureError,
    ConflictingParametersError,
    PositionNotReachedError,
    PositionOutOfRangeError,
    TimeRangeError,
    TooManyIntervalsError,
    TransferNotFoundError,
)
from app.domain.values import account_uuid, check_id
from app.persistence.positions import recorded_position

T = TypeVar("T")

READ_WAIT_SECONDS_DEFAULT: Final = 5.0


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A query's answer and the log position it reflects."""

    value: T
    position: int


class Queries:
    """Typed read methods over the ledger's stream reads and the read model."""

    def __init__(
        self,
        ledger: Ledger,
        source: ReadModelSource,
        *,
        wait_seconds: float = READ_WAIT_SECONDS_DEFAULT,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.ledger = ledger
        self.source = source
        self.wait_seconds = wait_seconds
        self.clock = clock

    # Positions -------------------------------------------------------------------------

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def lag(self) -> Lag:
        return self.source.lag()

    def reach(self, position: int | None) -> ReadModel:
        """The read model, once it has applied ``position`` (read-your-writes), bounded."""
        view = self.source.read_model()
        if position is None:
            return view
        head = self.head()
        if position > head:
            raise PositionOutOfRangeError(
                f"position {position} is beyond the head of the log ({head})", position=position
            )
        if not view.wait_for(position, self.wait_seconds):
            raise PositionNotReachedError(
                f"the views have not reached position {position} within "
                f"{self.wait_seconds}s (at {view.checkpoint()}); retry shortly",
                position=position,
            )
        return view

    def _reached(self, min_position: int | None) -> tuple[ReadModel, int]:
        """The views at ``min_position`` or later, and the checkpoint they are at."""
        view = self.reach(min_position)
        return view, max(view.checkpoint(), min_position or 0)

    def _commit_end(self, at_position: int) -> tuple[ReadModel, int]:
        # The whole commit is in the log already, so the views are awaited up to the head.
        self.reach(at_position)  # refuses a position beyond the head
        view = self.reach(self.head())
        return view, view.commit_end(at_position)

    def _past(self, moment: datetime, min_position: int | None) -> ReadModel:
        if moment > self.clock():
            raise AsOfInFutureError("as_of must not be in the future", field="as_of")
        # Every event recorded up to ``moment`` is at or before today's head.
        return self.reach(max(self.head(), min_position or 0))

    # Accounts --------------------------------------------------------------------------

    def account(
        self,
        account_id: str,
        *,
        as_of: datetime | None = None,
        at_position: int | None = None,
        min_position: int | None = None,
    ) -> AccountView:
        """An account now (from its stream), as of a time or at a position (from the
        views). ``position`` on the answer is the position it reflects."""
        account_id = check_id(account_id, "account_id")
        if as_of is not None and at_position is not None:
            raise ConflictingParametersError("use as_of or at_position, not both")
        if at_position is not None:
            view, position = self._commit_end(at_position)
            row = view.balance_at_position(account_id, position)
            return replace(_found(row, account_id), position=position)
        if as_of is not None:
            row = self._past(as_of, min_position).balance_as_of(account_id, as_of)
            return _found(row, account_id)
        return self.current_account(account_id, min_position=min_position)

    def current_account(self, account_id: str, *, min_position: int | None = None) -> AccountView:
        """From the account's own stream: includes every acknowledged write."""
        # The head is read first: every write acknowledged before this read is at or
        # before it, and the stream read below sees all of them, so the state holds at
        # the head (or at the account's own newer event, when a write lands meanwhile).
        head = self.head()
        if min_position is not None and min_position > head:
            raise PositionOutOfRangeError(
                f"position {min_position} is beyond the head of the log ({head})",
                position=min_position,
            )
        account = self.ledger.get_account(account_id)
        assert account.version is not None, "a stream read knows its version"
        last = recorded_position(self.ledger.recorder, account_uuid(account_id), account.version)
        return replace(account, position=max(head, last))

    def accounts(
        self, query: AccountFilter, *, min_position: int | None = None
    ) -> Answer[list[AccountView]]:
        view, position = self._reached(min_position)
        return Answer(view.accounts(query), position)

    def statement(
        self,
        account_id: str,
        *,
        before_position: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        min_position: int | None = None,
    ) -> Answer[list[StatementLine]]:
        account_id = check_id(account_id, "account_id")
        view, position = self._reached(min_position)
        _found(view.balance(account_id), account_id)
        lines = view.entries(
            account_id, before_position=before_position, since=since, until=until, limit=limit
        )
        return Answer(lines, position)

    def history(
        self,
        account_id: str,
        *,
        interval: Interval,
        since: datetime,
        until: datetime,
        min_position: int | None = None,
    ) -> Answer[list[HistoryPoint]]:
        """The account at the end of each interval from ``since`` to ``until``."""
        account_id = check_id(account_id, "account_id")
        if until <= since:
            raise TimeRangeError("until must be after since", field="until")
        until = min(until, self.clock())  # the future has no balance yet
        intervals = islice(interval_bounds(interval, since, until), HISTORY_POINTS_MAX + 1)
        if sum(1 for _ in intervals) > HISTORY_POINTS_MAX:
            raise TooManyIntervalsError(
                f"more than {HISTORY_POINTS_MAX} intervals; narrow since/until or widen "
                "the interval",
                field="interval",
            )
        view, position = self._reached(max(min_position or 0, self.head()))
        _found(view.balance(account_id), account_id)
        return Answer(view.history(account_id, interval, since, until), position)

    def totals(
        self,
        *,
        as_of: datetime | None = None,
        at_position: int | None = None,
        min_position: int | None = None,
    ) -> Answer[list[UnitTotals]]:
        """Per unit: debits, credits, the balance sum (0 at every commit), accounts."""
        if as_of is not None and at_position is not None:
            raise ConflictingParametersError("use as_of or at_position, not both")
        if at_position is not None:
            view, position = self._commit_end(at_position)
            return Answer(view.totals(position=position), position)
        if as_of is not None:
            # Read at the cut, once: the answer says the position its figures are at.
            view = self._past(as_of, min_position)
            position = view.cut(as_of)
            return Answer(view.totals(position=position), position)
        # Now: the log's head is a commit's end; the views may stand inside a commit
        # (a long commit spans several projection batches), so they are read at the head.
        head = self.head()
        view = self.reach(max(head, min_position or 0))
        return Answer(view.totals(position=head), head)

    # Transfers -------------------------------------------------------------------------

    def transfer(self, transfer_id: str, *, min_position: int | None = None) -> TransferView:
        transfer_id = check_id(transfer_id, "transfer_id")
        row = self.reach(min_position).transfer(transfer_id)
        if row is None:
            raise TransferNotFoundError(
                f"transfer {transfer_id} does not exist", transfer_id=transfer_id
            )
        return row

    def transfers(
        self, query: TransferFilter, *, min_position: int | None = None
    ) -> Answer[list[TransferView]]:
        if query.account_id is not None:
            check_id(query.account_id, "account_id")
        view, position = self._reached(min_position)
        return Answer(view.transfers(query), position)


def _found(row: AccountView | None, account_id: str) -> AccountView:
    if row is None:
        raise AccountNotFoundError(
            f"account {account_id} does not exist (yet)", account_id=account_id
        )
    return row
