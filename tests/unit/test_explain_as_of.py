"""``ledger explain --as-of T`` answers at the audit's cut of the log (decision 0036),
as the views' ``balance_as_of`` and the audit's replay do, and not at the first event of
the account's own stream recorded after T.

Two logs whose times do not rise with positions: the clock stepped back between two
transfers; and a monotone clock with group commits (each command stamped when taken,
its events written in a commit ordered by aggregate, so a commit holds several times).

The cut is found from the log's time stamps and commit marks alone (``account_cut``,
no event built); it must be the cut the audit's full replay of the log finds
(``account_cut_by_replay``): on every backend, whatever the clock did (hypothesis), and
across events stored before the commit marks.
"""

import asyncio
import itertools
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast
from unittest import mock

import pytest
from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit import log as log_module
from app.audit.explain import account_cut, account_cut_by_replay, explain
from app.audit.log import (
    LOG_PAGE_SIZE,
    Instant,
    LogReader,
    read_admitted,
    read_log,
    read_stamps,
)
from app.audit.replay import replay
from app.domain.commits import commit_of
from app.domain.errors import AccountNotFoundError, LedgerError
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env
from projections.runner import open_view
from projections.views import APPLICATION_NAME, LedgerViewMixin
from tests.conftest import store_env, store_url
from tests.unit.test_time_travel import ACCOUNTS, Batch, Pay, Reverse, Settle, Step, steps
from tests.unit.test_time_travel import write_history as write_history_steps
from tests.unit.test_time_travel_clock import (
    STEP_MS_MAX,
    Logged,
    SteppingClock,
    history_on_sqlite,
    instants,
    read_events,
)

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


# The cut from time stamps and marks alone, against the full replay's -----------------


def versions(events: Sequence[Any]) -> list[tuple[Any, int]]:
    return [(event.originator_id, event.originator_version) for event in events]


def assert_cut_as_the_replay_finds_it(ledger: Ledger, names: list[str], moment: datetime) -> int:
    """The account's events and its transfers' last versions in the cut, found from the
    stamps, equal the full replay's; answers how many account events the cuts held."""
    held = 0
    for name in names:
        fast = account_cut(ledger, account_uuid(name), moment)
        full = account_cut_by_replay(ledger, account_uuid(name), moment)
        where = (name, moment.isoformat())
        assert versions(fast.account_events) == versions(full.account_events), where
        assert fast.transfer_versions == full.transfer_versions, where
        held += len(full.account_events)
    return held


# A history with every kind of step: holds posted in part and voided, a batch (one
# commit of several commands), a reversal; the clock steps back at some of them.
FIXED_HISTORY: Final[list[Step]] = [
    Pay(1, 2, 30),
    Pay(2, 3, 20, pending=True),
    Batch((Pay(1, 3, 5), Pay(3, 1, 7, pending=True), Pay(2, 1, 9))),
    Settle(0, "post", 50),
    Pay(1, 2, 11, pending=True),
    Settle(1, "void", 100),
    Reverse(0),
    Pay(3, 2, 4),
]
FIXED_STEPS_MS: Final = [300, 500, 200, 400, 700, 300, -2_500, 400, 800, 300, -700, 600]
NAMES: Final = [name for name, _, _ in ACCOUNTS]


@pytest.mark.parametrize(
    "backend",
    ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "kurrentdb-fake"],
)
def test_the_cut_found_from_time_stamps_is_the_full_replays_on_every_backend(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = SteppingClock(FIXED_STEPS_MS)
    url = store_url(backend, tmp_path, request)
    with (
        mock.patch.object(ledger_module, "utc_now", clock.stamp),
        Ledger(store_env(url)) as ledger,
    ):
        ledger.clock = clock.now
        write_history_steps(ledger, [100, 50, 80], FIXED_HISTORY)
        moments = sorted(instants(read_events(ledger)))
        held = [assert_cut_as_the_replay_finds_it(ledger, NAMES, moment) for moment in moments]
        # The instants run from before the first event to after the last.
        assert held[0] == 0
        assert held[-1] == sum(len(list(ledger.events.get(account_uuid(n)))) for n in NAMES)
        assert 0 < held[len(held) // 2] < held[-1]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(steps, min_size=1, max_size=12),
    funding=st.lists(st.integers(0, 300), min_size=3, max_size=3),
    steps_ms=st.lists(st.integers(-STEP_MS_MAX, STEP_MS_MAX), min_size=1, max_size=12),
    together=st.lists(st.integers(1, len(ACCOUNTS) - 1), max_size=6),
)
def test_the_cut_found_from_time_stamps_is_the_full_replays_whatever_the_clock(
    history: list[Step], funding: list[int], steps_ms: list[int], together: list[int]
) -> None:
    # After the drawn history, transfers from the bank to the drawn users sent at once:
    # group commits, each command stamped when taken, so a commit holds several times.
    with history_on_sqlite(funding, history, steps_ms) as ledger:

        async def at_once() -> None:
            answers = await asyncio.gather(
                *(
                    ledger.record_transfer_async(
                        RecordTransfer(f"g{number}", "bank", ACCOUNTS[user][0], number + 1)
                    )
                    for number, user in enumerate(together)
                ),
                return_exceptions=True,
            )
            # A closed account refuses its transfer (the history may close one).
            assert all(not isinstance(a, Exception) or isinstance(a, LedgerError) for a in answers)

        asyncio.run(at_once())
        for moment in instants(read_events(ledger)):
            assert_cut_as_the_replay_finds_it(ledger, NAMES, moment)


def cut_end(ledger: Ledger, moment: datetime, reader: LogReader) -> int:
    """Where the audit's window by time ends the log, reading it with ``reader``."""
    commits = read_admitted(ledger, Instant(moment=moment), reader=reader)
    ends = [commit[-1][0] for commit in commits]
    return ends[-1] if ends else 0


# The scan's own page size, and pages of one and two events (ends inside commits).
PAGE_SIZES: Final = [LOG_PAGE_SIZE, 1, 2]


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_the_cut_found_from_time_stamps_takes_events_stored_before_the_marks_whole(
    page_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first commands are written as by a ledger from before the commit marks (no
    # marks: the window applies its legs rule to those events, read whole), among them
    # a group commit of two callers (its events ordered by aggregate, so its times
    # interleave); the later ones with marks. Old and new accounts trade, so the scan
    # for a new account's cut crosses the unmarked commits.
    monkeypatch.setattr(log_module, "LOG_PAGE_SIZE", page_size)
    clock = ListedClock(timedelta(seconds=second) for second in itertools.count())
    with ledger_on(clock) as (ledger, _):
        for name in ("bank", "old", "older", "new"):
            ledger.open_account(OpenAccount(name, "CREDITS", allow_negative=name == "bank"))

        async def callers() -> None:
            await asyncio.gather(
                *(
                    ledger.record_transfer_async(RecordTransfer(f"g-{name}", "bank", name, 9))
                    for name in ("old", "older", "old", "older")
                )
            )

        with mock.patch.object(ledger_module, "mark_commit", return_value=""):
            ledger.record_transfer(RecordTransfer("t1", "bank", "old", 50))
            asyncio.run(callers())
        ledger.record_transfer(RecordTransfer("t4", "old", "new", 20))
        ledger.record_transfer(RecordTransfer("t5", "bank", "new", 3))
        events = read_events(ledger)
        assert commit_of(events[-1].event) is not None
        assert all(commit_of(logged.event) is None for logged in events[4:-6]), "marked"
        for moment in instants(events):
            assert cut_end(ledger, moment, read_stamps) == cut_end(ledger, moment, read_log)
            assert_cut_as_the_replay_finds_it(ledger, ["new", "old"], moment)
        t4 = next(e.event.timestamp for e in events if getattr(e.event, "transfer_id", "") == "t4")
        assert [line.transfer_id for line in explain(ledger, "new", t4)] == ["t4"]
        assert [line.transfer_id for line in explain(ledger, "new", t4 - MICROSECOND)] == []


@pytest.mark.parametrize("page_size", [1, 2, 3, 5])
def test_the_cut_found_from_time_stamps_is_the_full_replays_across_pages_of_the_scan(
    page_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan reads the log a page at a time (``LOG_PAGE_SIZE``), and a run of one
    commit's stamps ends with its page: pages of a few events put their ends inside
    commits, at a commit's last event and between commits, and the cut stays the full
    replay's (which a log shorter than one page never shows)."""
    monkeypatch.setattr(log_module, "LOG_PAGE_SIZE", page_size)
    with history_on_sqlite([100, 50, 80], FIXED_HISTORY, FIXED_STEPS_MS) as ledger:
        events = read_events(ledger)
        assert len(events) > 2 * page_size
        for moment in instants(events):
            assert cut_end(ledger, moment, read_stamps) == cut_end(ledger, moment, read_log)
            assert_cut_as_the_replay_finds_it(ledger, NAMES, moment)
