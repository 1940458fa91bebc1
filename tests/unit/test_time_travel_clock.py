"""As-of-time reads when the writer's clock is not monotone (hypothesis).

The time stamps of a log need not rise with its positions: the wall clock can step back,
and two writer processes interleave their commits (thousands of events out of time
order in a few seconds: decision 0033, twelfth-session addendum). Here the ledger's
clock is a list of drawn steps, forward and back, taken one per time stamp.

"As of T" is a cut of the log (decision 0036): everything up to the end of the last
whole commit such that no event up to it was recorded after T. So, on both view
backends, for random instants T (the events' own times, a microsecond either side,
and between):

- ``totals(moment=T)`` equals ``totals(position=cut)``, and every unit balances to 0;
- ``balance_as_of(a, T)`` equals ``balance_at_position(a, cut)`` (but for ``available``,
  judged at T), and no event of the account up to the position it reflects was
  recorded after T;
- ``history`` ends each interval at the cut of its end (before it);
- ``entries(since=, until=)`` are the lines between the cuts of ``since`` and ``until``;
- the audit's replay as of T (``app.audit.replay``, its own fold of the log) equals the
  views' answers;
- an account's credit lots as of T (grants with and without expiry, spent in burn-down
  order by debits and holds, expired to breakage) are its lots at the cut, equal to the
  lots of the account folded from the log up to the cut, and with its general lot they
  sum to ``balance_as_of``: the lots and the balance are read at one cut; its
  ``available`` as of T is the folded account's at T.

The cut is computed here from the notification log alone. The views are projected in
batches of a drawn size (which cut commits in two), and up to a drawn position, which
may fall inside a commit: the half-projected commit is in no cut.
"""

import itertools
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast
from unittest import mock

import pytest
from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.application import ledger as ledger_module
from app.application.commands import GrantTerms, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import AccountView
from app.audit.log import Instant
from app.domain.account import Account
from app.domain.commits import ends_commit
from app.domain.values import account_uuid, breakage_account_id
from app.persistence.decoding import domain_event_reader
from app.persistence.stores import event_store_env
from projections.runner import open_view
from projections.views import APPLICATION_NAME, LedgerViewMixin
from tests.support.pgserver import PostgresServer
from tests.unit.test_replay_properties import assert_replay_equals_view
from tests.unit.test_time_travel import (
    ACCOUNTS,
    MICROSECOND,
    UNIT,
    History,
    steps,
    write_history,
)

BACKENDS: Final = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# Two seconds before an hour: the clock's steps cross it, so history's intervals matter.
BASE: Final = datetime(2026, 12, 1, 11, 59, 58, tzinfo=UTC)
STEP_MS_MAX: Final = 3_000
HOUR: Final = timedelta(hours=1)
# The audit's replay (which reads the whole log) is compared at every this many instants.
REPLAY_EVERY: Final = 4
# A grant expires this long after it is given, at the most (the clock's steps cross it).
GRANT_EXPIRY_MS_MAX: Final = 6_000
LOTS_LIMIT: Final = 1_000


@dataclass(frozen=True)
class Give:
    """A grant from the bank to a user: a lot that expires ``expires_ms`` after the
    clock's now (None: never), spent before the general lot when its ``priority`` is
    lower."""

    credit: int
    amount: int
    expires_ms: int | None
    priority: int


@dataclass(frozen=True)
class ExpireGrant:
    """Expire one of the grants given so far (refused while it has not expired)."""

    pick: int


class GrantingHistory(History):
    """The shared histories' steps, and grants and their expiry."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(ledger)
        self.grants: list[str] = []

    def _run(self, step: object) -> None:
        if isinstance(step, Give):
            self.number += 1
            expires_at = (
                None
                if step.expires_ms is None
                else self.ledger.clock() + timedelta(milliseconds=step.expires_ms)
            )
            terms = GrantTerms(expires_at=expires_at, priority=step.priority)
            command = RecordTransfer(
                f"g{self.number}",
                ACCOUNTS[0][0],
                ACCOUNTS[step.credit][0],
                step.amount,
                grant=terms,
            )
            self.ledger.record_transfer(command)
            self.grants.append(command.id)
            self.posted.append(command.id)
        elif isinstance(step, ExpireGrant) and self.grants:
            self.ledger.expire_grant(self.grants[step.pick % len(self.grants)])
        else:
            super()._run(step)


grant_steps: st.SearchStrategy[object] = st.one_of(
    steps,
    st.builds(
        Give,
        st.integers(1, len(ACCOUNTS) - 1),
        st.integers(1, 150),
        st.none() | st.integers(0, GRANT_EXPIRY_MS_MAX),
        st.sampled_from([10, 50, 90]),
    ),
    st.builds(ExpireGrant, st.integers(0, 100)),
)


class SteppingClock:
    """The writer's clock: each time stamp taken (``stamp``) moves it by the next step
    of a drawn cycle, forward or back; ``now`` reads it without moving it."""

    def __init__(self, steps_ms: list[int]) -> None:
        self.moment = BASE
        self._steps = itertools.cycle(steps_ms)

    def now(self) -> datetime:
        return self.moment

    def stamp(self) -> datetime:
        self.moment += timedelta(milliseconds=next(self._steps))
        return self.moment


@dataclass(frozen=True)
class Logged:
    position: int
    event: Any


def read_events(ledger: Ledger) -> list[Logged]:
    decode = domain_event_reader(ledger.mapper)
    notifications = ledger.recorder.select_notifications(start=None, limit=100_000)
    return [Logged(n.id, decode(n)) for n in notifications]


class Cuts:
    """Where "as of T" cuts the log: the end of the last whole commit whose events, and
    every earlier event's, were recorded at or before T (before T: ``strict``)."""

    def __init__(self, events: list[Logged], projected: int) -> None:
        # (latest time up to the commit's end, the commit's end) of each whole commit
        self.commits: list[tuple[datetime, int]] = []
        latest: datetime | None = None
        for logged in events:
            moment = logged.event.timestamp
            latest = moment if latest is None else max(latest, moment)
            whole = ends_commit(logged.event)
            assert whole is not None, "the writer marks every commit"
            if whole and logged.position <= projected:
                self.commits.append((latest, logged.position))

    def cut(self, moment: datetime, *, strict: bool = False) -> int:
        position = 0
        for latest, end in self.commits:
            if latest > moment or (strict and latest == moment):
                break
            position = end
        return position


def counters(row: AccountView | None) -> tuple[Any, ...] | None:
    """The figures a position fixes. Not ``available``: it is judged at an instant (a
    lot expired by then is not spendable, its expiry written or not), so as of T it is
    T's and at a position its commit's time's; ``check_lots`` checks it at T."""
    if row is None:
        return None
    return (
        row.debits_posted,
        row.credits_posted,
        row.debits_pending,
        row.credits_pending,
        row.status,
        row.balance,
        row.metadata,
    )


def instants(events: list[Logged]) -> list[datetime]:
    ordered = sorted({logged.event.timestamp for logged in events})
    moments = [ordered[0] - timedelta(seconds=1), ordered[-1] + timedelta(seconds=1)]
    for earlier, later in itertools.pairwise(ordered):
        moments += [earlier - MICROSECOND, earlier, earlier + MICROSECOND]
        moments.append(earlier + (later - earlier) / 2)
    return moments


def check_account(
    view: LedgerViewMixin, events: list[Logged], cuts: Cuts, name: str, moment: datetime
) -> None:
    where = f"{name} as of {moment.isoformat()}"
    cut = cuts.cut(moment)
    row = view.balance_as_of(name, moment)
    assert counters(row) == counters(view.balance_at_position(name, cut)), where
    if row is not None:
        assert row.position is not None, where
        assert row.position <= cut, where
        shown = [
            logged.event.timestamp
            for logged in events
            if logged.position <= row.position
            and isinstance(logged.event, Account.Event)
            and logged.event.originator_id == account_uuid(name)
        ]
        assert all(moment_shown <= moment for moment_shown in shown), where


def check_totals(view: LedgerViewMixin, cuts: Cuts, moment: datetime) -> None:
    where = f"totals as of {moment.isoformat()}"
    totals = view.totals(moment=moment)
    assert all(unit.balance_sum == 0 for unit in totals), where
    assert totals == view.totals(position=cuts.cut(moment)), where


def check_history(view: LedgerViewMixin, cuts: Cuts, name: str, until: datetime) -> None:
    for point in view.history(name, "hour", BASE - HOUR, until):
        cut = cuts.cut(point.end, strict=True)
        expected = view.balance_at_position(name, cut)
        where = f"{name} history at {point.end.isoformat()}"
        if expected is None:
            assert (point.debits_posted, point.credits_posted) == (0, 0), where
            continue
        assert (
            point.debits_posted,
            point.credits_posted,
            point.debits_pending,
            point.credits_pending,
        ) == (
            expected.debits_posted,
            expected.credits_posted,
            expected.debits_pending,
            expected.credits_pending,
        ), where


def check_entries(
    view: LedgerViewMixin, cuts: Cuts, name: str, since: datetime, until: datetime
) -> None:
    every = view.entries(name, limit=1_000)
    low, high = cuts.cut(since, strict=True), cuts.cut(until, strict=True)
    expected = [line.position for line in every if low < line.position <= high]
    lines = view.entries(name, since=since, until=until, limit=1_000)
    where = f"{name} lines from {since.isoformat()} until {until.isoformat()}"
    assert [line.position for line in lines] == expected, where
    only_until = view.entries(name, until=until, limit=1_000)
    assert [line.position for line in only_until] == [
        line.position for line in every if line.position <= high
    ], where


# The test --------------------------------------------------------------------------------


class Views:
    """A fresh view per example: a SQLite file, or a PostgreSQL schema of a new
    generation in one database."""

    def __init__(self, backend: str, folder: Path, postgres: PostgresServer | None) -> None:
        self.backend = backend
        self.folder = folder
        self.url = postgres.create_database("time_travel_clock") if postgres is not None else ""
        self.generations = itertools.count(1)

    def fresh(self) -> LedgerViewMixin:
        generation = next(self.generations)
        if self.backend == "postgres":
            return open_view(self.url, generation)
        return open_view(f"sqlite:///{self.folder / 'views.sqlite'}", generation)


@pytest.fixture(scope="module", params=BACKENDS)
def views(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Views:
    backend = str(request.param)
    postgres = request.getfixturevalue("postgres_server") if backend == "postgres" else None
    return Views(backend, tmp_path_factory.mktemp(f"clock-{backend}"), postgres)


def project(view: LedgerViewMixin, events: list[Logged], batch_size: int, projected: int) -> None:
    wanted = [logged for logged in events if logged.position <= projected]
    for start in range(0, len(wanted), batch_size):
        batch = wanted[start : start + batch_size]
        view.apply_at_positions(
            [logged.event for logged in batch],
            [logged.position for logged in batch],
            Tracking(APPLICATION_NAME, batch[-1].position),
        )


@contextmanager
def history_on_sqlite(
    funding: list[int], history: Sequence[object], steps_ms: list[int]
) -> Iterator[Ledger]:
    """A ledger on a SQLite file holding ``history``, its clock stepped by ``steps_ms``."""
    clock = SteppingClock(steps_ms)
    with (
        tempfile.TemporaryDirectory(prefix="clock-") as directory,
        mock.patch.object(ledger_module, "utc_now", clock.stamp),
        Ledger(event_store_env(f"sqlite:///{Path(directory) / 'events.sqlite'}")) as ledger,
    ):
        ledger.clock = clock.now
        write_history(ledger, funding, history, GrantingHistory)
        yield ledger


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(grant_steps, min_size=1, max_size=24),
    funding=st.lists(st.integers(0, 300), min_size=3, max_size=3),
    steps_ms=st.lists(st.integers(-STEP_MS_MAX, STEP_MS_MAX), min_size=1, max_size=12),
    batch_size=st.integers(1, 40),
    unprojected=st.integers(0, 6),
)
def test_as_of_reads_are_a_cut_of_the_log_whatever_the_clock(
    views: Views,
    history: list[object],
    funding: list[int],
    steps_ms: list[int],
    batch_size: int,
    unprojected: int,
) -> None:
    with history_on_sqlite(funding, history, steps_ms) as ledger:
        events = read_events(ledger)
        projected = events[max(0, len(events) - 1 - unprojected)].position
        view = views.fresh()
        try:
            project(view, events, batch_size, projected)
            check_every_read(view, events, Cuts(events, projected))
            if projected == events[-1].position:  # the audit's replay reads the whole log
                for moment in instants(events)[::REPLAY_EVERY]:
                    # and the unit's breakage account, which an expired grant opens
                    names = [name for name, _, _ in ACCOUNTS] + [breakage_account_id(UNIT)]
                    assert_replay_equals_view(ledger, view, names, Instant(moment=moment))
        finally:
            cast(Any, view).datastore.close()


def check_every_read(view: LedgerViewMixin, events: list[Logged], cuts: Cuts) -> None:
    moments = instants(events)
    for moment in moments:
        check_totals(view, cuts, moment)
        for name, _, _ in ACCOUNTS:
            check_account(view, events, cuts, name, moment)
            check_lots(view, events, cuts, name, moment)
    for name, _, _ in ACCOUNTS:
        check_history(view, cuts, name, max(moments))
        for since, until in itertools.pairwise(moments[::3]):
            check_entries(view, cuts, name, min(since, until), max(since, until))


def check_lots(
    view: LedgerViewMixin, events: list[Logged], cuts: Cuts, name: str, moment: datetime
) -> None:
    """The account's lots as of ``moment`` are its lots at the cut, and those of the
    account folded from the log up to the cut; with the general lot they make the
    balance as of ``moment``."""
    where = f"{name} lots as of {moment.isoformat()}"
    cut = cuts.cut(moment)
    shown = view.lots(name, status="all", at=moment, moment=moment, limit=LOTS_LIMIT).items
    at_cut = view.lots(name, status="all", at=moment, position=cut, limit=LOTS_LIMIT).items
    assert shown == at_cut, where
    folded = fold_account(events, name, cut)
    row = view.balance_as_of(name, moment)
    if folded is None:
        assert (shown, row) == ([], None), where
        return
    held = {lot.grant_id: (lot.remaining, lot.reserved) for lot in shown if lot.remaining}
    assert held == {
        lot.grant_id: (lot.remaining, lot.reserved)
        for lot in folded.lots
        if lot.grant_id is not None and lot.remaining
    }, where
    assert row is not None, where
    assert row.balance == folded.lots.general.remaining + sum(r for r, _ in held.values()), where
    assert row.available == AccountView.of(folded, now=moment).available, where


def fold_account(events: list[Logged], name: str, position: int) -> Account | None:
    """The account as its events up to ``position`` make it (None before its opening)."""
    account: Account | None = None
    for logged in events:
        event = logged.event
        if logged.position > position:
            break
        if isinstance(event, Account.Event) and event.originator_id == account_uuid(name):
            account = cast(Account | None, event.mutate(account))
    return account
