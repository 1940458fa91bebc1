"""``ledger explain --as-of T`` answers at the audit's cut of the log (decision 0036),
as the views' ``balance_as_of`` and the audit's replay do, and not at the first event of
the account's own stream recorded after T.

Two logs whose times do not rise with positions: the clock stepped back between two
transfers; and a monotone clock with group commits (each command stamped when taken,
its events written in a commit ordered by aggregate, so a commit holds several times).
"""

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast
from unittest import mock

from eventsourcing.persistence import Tracking

from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.explain import explain
from app.audit.log import Instant
from app.audit.replay import replay
from app.domain.commits import commit_of
from app.domain.errors import AccountNotFoundError
from app.persistence.stores import event_store_env
from projections.runner import open_view
from projections.views import APPLICATION_NAME, LedgerViewMixin
from tests.unit.test_time_travel_clock import Logged, read_events

BASE: Final = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
MICROSECOND: Final = timedelta(microseconds=1)
CALLERS: Final = 4
TRANSFERS_PER_CALLER: Final = 6


class ListedClock:
    """The writer's clock: each time stamp taken is the next of ``steps`` (from BASE)."""

    def __init__(self, steps: Iterator[timedelta]) -> None:
        self.moment = BASE
        self._steps = steps

    def now(self) -> datetime:
        return self.moment

    def stamp(self) -> datetime:
        self.moment = BASE + next(self._steps)
        return self.moment


@contextmanager
def ledger_on(clock: ListedClock) -> Iterator[tuple[Ledger, Path]]:
    with (
        tempfile.TemporaryDirectory(prefix="explain-") as directory,
        mock.patch.object(ledger_module, "utc_now", clock.stamp),
        Ledger(event_store_env(f"sqlite:///{Path(directory) / 'events.sqlite'}")) as ledger,
    ):
        ledger.clock = clock.now
        yield ledger, Path(directory)


def projected(folder: Path, events: list[Logged]) -> LedgerViewMixin:
    view = open_view(f"sqlite:///{folder / 'views.sqlite'}", 1)
    view.apply_at_positions(
        [logged.event for logged in events],
        [logged.position for logged in events],
        Tracking(APPLICATION_NAME, events[-1].position),
    )
    return view


def explained_balance(ledger: Ledger, account_id: str, moment: datetime) -> int | None:
    try:
        lines = list(explain(ledger, account_id, moment))
    except AccountNotFoundError:
        return None
    return lines[-1].balance if lines else 0


def assert_explain_agrees(
    ledger: Ledger, view: LedgerViewMixin, account_ids: list[str], moment: datetime
) -> None:
    replayed = {account.id: account.balance for account in replay(ledger, Instant(moment=moment))}
    for account_id in account_ids:
        row = view.balance_as_of(account_id, moment)
        expected = None if row is None else row.balance
        where = (account_id, moment.isoformat())
        assert replayed.get(account_id) == expected, where
        assert explained_balance(ledger, account_id, moment) == expected, where


def test_explain_as_of_a_time_stops_at_the_cut_when_the_clock_stepped_back() -> None:
    # seconds from BASE, one per command: "t-bob" is stamped 10 s, then the clock steps
    # back to 2 s for "t-alice", recorded after it.
    seconds = iter([0, 0, 0, 1, 10, 2])
    clock = ListedClock(timedelta(seconds=second) for second in seconds)
    with ledger_on(clock) as (ledger, folder):
        for name, allow_negative in (("bank", True), ("alice", False), ("bob", False)):
            ledger.open_account(OpenAccount(name, "CREDITS", allow_negative=allow_negative))
        ledger.record_transfer(RecordTransfer("fund", "bank", "alice", 100))
        ledger.record_transfer(RecordTransfer("t-bob", "bank", "bob", 7))
        ledger.record_transfer(RecordTransfer("t-alice", "alice", "bob", 30))
        view = projected(folder, read_events(ledger))
        try:
            # As of 5 s the cut ends before "t-bob" (10 s): "t-alice" (2 s) is after it.
            lines = list(explain(ledger, "alice", BASE + timedelta(seconds=5)))
            assert [line.transfer_id for line in lines] == ["fund"]
            assert lines[-1].balance == 100
            for second in range(12):
                for moment in (
                    BASE + timedelta(seconds=second),
                    BASE + timedelta(seconds=second) - MICROSECOND,
                ):
                    assert_explain_agrees(ledger, view, ["bank", "alice", "bob"], moment)
        finally:
            cast(Any, view).datastore.close()


def test_explain_as_of_a_time_inside_a_group_commit_agrees_with_the_views() -> None:
    # A monotone clock, a millisecond a stamp: every command has its own time.
    clock = ListedClock(timedelta(milliseconds=step) for step in range(1, 10_000))
    users = [f"u{number}" for number in range(CALLERS)]
    with ledger_on(clock) as (ledger, folder):
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        for user in users:
            ledger.open_account(OpenAccount(user, "CREDITS"))

        async def caller(number: int) -> None:
            for count in range(TRANSFERS_PER_CALLER):
                transfer = RecordTransfer(f"t{number}-{count}", "bank", users[number], count + 1)
                await ledger.record_transfer_async(transfer)

        async def callers() -> None:
            await asyncio.gather(*(caller(number) for number in range(CALLERS)))

        asyncio.run(callers())
        events = read_events(ledger)
        view = projected(folder, events)
        try:
            times: dict[str | None, set[datetime]] = {}
            for logged in events:
                times.setdefault(commit_of(logged.event), set()).add(logged.event.timestamp)
            inside = sorted(
                moment for moments in times.values() if len(moments) > 1 for moment in moments
            )
            assert inside, "no commit held several commands' times"
            for moment in inside:
                for instant in (moment, moment - MICROSECOND):
                    assert_explain_agrees(ledger, view, ["bank", *users], instant)
        finally:
            cast(Any, view).datastore.close()
