"""Time travel: the views' as-of answers equal a fold of the account's own events.

Hypothesis writes a random history (transfers, holds posted in full or in part, voided
or expired, reversals, atomic batches, closings; refused commands included) into a
SQLite event store, a projection worker projects it into a SQLite read model, and then,
for every account:

- at every position of the log, in and past it, ``balance_at_position`` equals the
  account loaded from the write side at the newest version recorded at or before that
  position (``Ledger.get_account_at_version``: the repository's own fold);
- at every recorded time, just before and after it, halfway between two of them and at
  random instants, ``balance_as_of`` equals the account at the newest version whose
  event was recorded at or before that instant.

Which version stood at which position or instant is read from the notification log,
never from the views.
"""

import bisect
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import AccountView
from app.domain.account import Account
from app.domain.errors import LedgerError
from app.domain.transfer import Transfer
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env
from projections.runner import open_view, start_runner
from projections.views import BalanceRow, LedgerViewMixin

UNIT: Final = "CREDITS"
# (id, allow_negative, overdraft_limit)
ACCOUNTS: Final = (("bank", True, 0), ("alice", False, 0), ("bob", False, 0), ("carol", False, 40))
HOLD_TIMEOUT_SECONDS: Final = 3600
PROJECTION_TIMEOUT_SECONDS: Final = 20.0
SHM: Final = Path("/dev/shm")
MICROSECOND: Final = timedelta(microseconds=1)
PROBE_SCALE: Final = 1_000_000


# Random histories ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pay:
    debit: int
    credit: int
    amount: int
    pending: bool = False


@dataclass(frozen=True)
class Settle:
    """Post (all, or ``part``% of it), void or expire one of the holds recorded so far."""

    pick: int
    how: str
    part: int


@dataclass(frozen=True)
class Reverse:
    pick: int


@dataclass(frozen=True)
class Batch:
    items: tuple[Pay, ...]


@dataclass(frozen=True)
class Close:
    account: int


Step = Pay | Settle | Reverse | Batch | Close

account_numbers = st.integers(0, len(ACCOUNTS) - 1)
pays = st.builds(
    Pay, account_numbers, account_numbers, st.integers(1, 120), st.sampled_from([False, True])
)
steps: st.SearchStrategy[Step] = st.one_of(
    pays,
    pays,
    st.builds(
        Settle,
        st.integers(0, 100),
        st.sampled_from(["post", "void", "expire"]),
        st.integers(1, 100),
    ),
    st.builds(Reverse, st.integers(0, 100)),
    st.builds(Batch, st.lists(pays, min_size=1, max_size=4).map(tuple)),
    st.builds(Close, st.integers(1, len(ACCOUNTS) - 1)),
)


class History:
    """Runs the steps on a Ledger whose clock can jump past every hold's timeout (for the
    expire command); refused commands are part of the history (they write nothing)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.number = 0
        self.holds: list[str] = []
        self.posted: list[str] = []

    def command(self, pay: Pay) -> RecordTransfer:
        self.number += 1
        return RecordTransfer(
            f"t{self.number}",
            ACCOUNTS[pay.debit][0],
            ACCOUNTS[pay.credit][0],
            pay.amount,
            pending=pay.pending,
            timeout_seconds=HOLD_TIMEOUT_SECONDS if pay.pending else None,
        )

    def run(self, step: object) -> None:
        with suppress(LedgerError):
            self._run(step)

    def _run(self, step: object) -> None:
        if isinstance(step, Pay):
            command = self.command(step)
            self.ledger.record_transfer(command)
            (self.holds if step.pending else self.posted).append(command.id)
        elif isinstance(step, Batch):
            commands = [self.command(pay) for pay in step.items]
            self.ledger.record_batch(commands, atomic=True)
            for command in commands:
                (self.holds if command.pending else self.posted).append(command.id)
        elif isinstance(step, Settle) and self.holds:
            hold = self.holds[step.pick % len(self.holds)]
            if step.how == "void":
                self.ledger.void_pending(hold)
            elif step.how == "expire":
                self.expire(hold)
            else:
                amount = self.ledger.get_transfer(hold).amount
                self.ledger.post_pending(hold, max(1, amount * step.part // 100))
                self.posted.append(hold)
        elif isinstance(step, Reverse) and self.posted:
            original = self.posted[step.pick % len(self.posted)]
            self.number += 1
            self.ledger.reverse_transfer(original, f"r{self.number}")
        elif isinstance(step, Close):
            self.ledger.close_account(ACCOUNTS[step.account][0])

    def expire(self, hold: str) -> None:
        real_clock = self.ledger.clock
        late = timedelta(seconds=HOLD_TIMEOUT_SECONDS + 1)
        self.ledger.clock = lambda: real_clock() + late
        try:
            self.ledger.expire_pending(hold)
        finally:
            self.ledger.clock = real_clock


def write_history(
    ledger: Ledger,
    funding: list[int],
    history: Sequence[object],
    runner_type: type[History] = History,
) -> None:
    """Open the accounts, fund the users from the bank, then run the steps (on a
    ``runner_type``, for a test whose histories take steps of its own too)."""
    for name, allow_negative, overdraft_limit in ACCOUNTS:
        ledger.open_account(
            OpenAccount(name, UNIT, allow_negative=allow_negative, overdraft_limit=overdraft_limit)
        )
    runner = runner_type(ledger)
    for number, amount in enumerate(funding, start=1):
        if amount:
            runner.run(Pay(0, number, amount))
    for step in history:
        runner.run(step)


# The oracle: which version of each account stood when ------------------------------------


@dataclass(frozen=True)
class Recorded:
    position: int
    version: int
    timestamp: datetime


def account_streams(ledger: Ledger) -> tuple[dict[str, list[Recorded]], list[int], list[datetime]]:
    """Per account, its events in order (from the notification log); and every position
    and every recorded time of the whole log."""
    names = {account_uuid(name): name for name, _, _ in ACCOUNTS}
    streams: dict[str, list[Recorded]] = {name: [] for name in names.values()}
    positions: list[int] = []
    times: list[datetime] = []
    for notification in ledger.recorder.select_notifications(start=None, limit=100_000):
        event = ledger.mapper.to_domain_event(notification)
        assert isinstance(event, Account.Event | Transfer.Event)
        positions.append(notification.id)
        times.append(event.timestamp)
        if isinstance(event, Account.Event):
            name = names[event.originator_id]
            streams[name].append(
                Recorded(notification.id, event.originator_version, event.timestamp)
            )
    for stream in streams.values():
        assert [r.version for r in stream] == list(range(len(stream)))
        assert [r.position for r in stream] == sorted(r.position for r in stream)
        assert [r.timestamp for r in stream] == sorted(r.timestamp for r in stream)
    return streams, positions, times


class Oracle:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.streams, self.positions, self.times = account_streams(ledger)
        self._versions: dict[tuple[str, int], AccountView] = {}

    def at_version(self, account_id: str, version: int) -> AccountView:
        key = (account_id, version)
        if key not in self._versions:
            self._versions[key] = self.ledger.get_account_at_version(account_id, version)
        return self._versions[key]

    def last_at_position(self, account_id: str, position: int) -> Recorded | None:
        stream = self.streams[account_id]
        index = bisect.bisect_right([r.position for r in stream], position)
        return stream[index - 1] if index else None

    def last_as_of(self, account_id: str, moment: datetime) -> Recorded | None:
        stream = self.streams[account_id]
        index = bisect.bisect_right([r.timestamp for r in stream], moment)
        return stream[index - 1] if index else None


def assert_same_account(row: BalanceRow | None, expected: AccountView | None, where: str) -> None:
    if expected is None:
        assert row is None, where
        return
    assert row is not None, where
    assert (
        row.debits_posted,
        row.credits_posted,
        row.debits_pending,
        row.credits_pending,
        row.status,
        row.balance,
        row.available,
    ) == (
        expected.debits_posted,
        expected.credits_posted,
        expected.debits_pending,
        expected.credits_pending,
        expected.status,
        expected.balance,
        expected.available,
    ), where


def check_at_position(
    view: LedgerViewMixin, oracle: Oracle, account_id: str, position: int
) -> None:
    last = oracle.last_at_position(account_id, position)
    row = view.balance_at_position(account_id, position)
    where = f"{account_id} at position {position}"
    assert_same_account(
        row, None if last is None else oracle.at_version(account_id, last.version), where
    )
    if row is not None and last is not None:
        assert row.position is not None, where
        assert last.position <= row.position <= position, where


def check_as_of(view: LedgerViewMixin, oracle: Oracle, account_id: str, moment: datetime) -> None:
    last = oracle.last_as_of(account_id, moment)
    row = view.balance_as_of(account_id, moment)
    where = f"{account_id} as of {moment.isoformat()}"
    assert_same_account(
        row, None if last is None else oracle.at_version(account_id, last.version), where
    )
    if row is not None and last is not None:
        assert row.position == last.position, where


def instants(times: list[datetime]) -> list[datetime]:
    """Every recorded time, a microsecond either side, and halfway to the next."""
    ordered = sorted(set(times))
    moments = [ordered[0] - timedelta(seconds=1), ordered[-1] + timedelta(seconds=1)]
    for earlier, later in zip(ordered, [*ordered[1:], None], strict=True):
        moments += [earlier - MICROSECOND, earlier, earlier + MICROSECOND]
        if later is not None:
            moments.append(earlier + (later - earlier) / 2)
    return moments


# The test --------------------------------------------------------------------------------


@contextmanager
def scratch_dir() -> Iterator[Path]:
    base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="time-travel-", dir=base) as path:
        yield Path(path)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    history=st.lists(steps, min_size=1, max_size=30),
    funding=st.lists(st.integers(0, 300), min_size=3, max_size=3),
    probes=st.lists(
        st.tuples(account_numbers, st.integers(0, PROBE_SCALE), st.integers(0, PROBE_SCALE)),
        min_size=20,
        max_size=20,
    ),
)
def test_as_of_answers_equal_a_fold_of_the_account_events_up_to_that_instant(
    history: list[Step], funding: list[int], probes: list[tuple[int, int, int]]
) -> None:
    with scratch_dir() as directory:
        event_store_url = f"sqlite:///{directory / 'events.sqlite'}"
        read_model_url = f"sqlite:///{directory / 'views.sqlite'}"
        with Ledger(event_store_env(event_store_url)) as ledger:
            write_history(ledger, funding, history)

            head = ledger.recorder.max_notification_id() or 0
            worker = start_runner(event_store_url, read_model_url, 1)
            try:
                assert worker.view.wait_for(head, PROJECTION_TIMEOUT_SECONDS)
            finally:
                worker.__exit__(None, None, None)
            view = open_view(read_model_url, 1)
            oracle = Oracle(ledger)

            for name, _, _ in ACCOUNTS:
                for position in range(0, head + 2):
                    check_at_position(view, oracle, name, position)
                for moment in instants(oracle.times):
                    check_as_of(view, oracle, name, moment)

            # And random accounts at random instants and positions around the history
            # (drawn as fractions, so that the draws do not depend on the clock).
            first, last = min(oracle.times), max(oracle.times)
            margin = timedelta(milliseconds=10)
            span = last - first + 2 * margin
            for account, time_fraction, position_fraction in probes:
                name = ACCOUNTS[account][0]
                check_as_of(view, oracle, name, first - margin + span * time_fraction / PROBE_SCALE)
                check_at_position(view, oracle, name, (head + 1) * position_fraction // PROBE_SCALE)
