"""Replay at any instant equals the time-travel read model (hypothesis).

Two sources of examples:
- the rich healthy history (tests/support/audit_ledger.py) on SQLite and on a real
  PostgreSQL server, projected by the real workers, queried at random positions and
  random times (event times themselves, a microsecond either side, and anything between);
- random histories on the in-memory store, each folded into a fresh SQLite view by the
  projection's own ``apply_event``, compared at every position and every event's time.

``replay`` reads only the log; the views answer from their balance history. They are two
independent folds of the same log and must agree exactly, account by account.
"""

import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast

import pytest
from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.log import Instant, read_log
from app.audit.replay import ReplayedAccount, replay
from app.domain.errors import LedgerError
from app.persistence.stores import event_store_env
from projections.runner import open_view
from projections.views import APPLICATION_NAME, BalanceRow, LedgerViewMixin
from tests.support.audit_ledger import History, Stores, build_history, make_stores, project_to_head
from tests.support.pgserver import PostgresServer

BACKENDS: Final = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
INSTANT_EXAMPLES: Final = 100
HISTORY_EXAMPLES: Final = 40
SLOW_EXAMPLES: Final = [HealthCheck.too_slow, HealthCheck.data_too_large]


@dataclass(frozen=True)
class Projected:
    ledger: Ledger
    view: LedgerViewMixin
    history: History
    times: list[datetime]


@pytest.fixture(scope="module", params=BACKENDS)
def projected(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Projected]:
    backend = str(request.param)
    postgres: PostgresServer | None = (
        request.getfixturevalue("postgres_server") if backend == "postgres" else None
    )
    stores: Stores = make_stores(
        backend, tmp_path_factory.mktemp(f"replay-{backend}"), postgres, "replay_properties"
    )
    with stores.open_ledger() as ledger:
        history = build_history(ledger)
        project_to_head(stores, ledger)
        times = [event.timestamp for _, event in read_log(ledger)]
        view = stores.open_view()
        try:
            yield Projected(ledger, view, history, times)
        finally:
            cast(Any, view).datastore.close()


def counters(row: ReplayedAccount | BalanceRow | None) -> tuple[Any, ...] | None:
    if row is None:
        return None
    return (
        row.unit,
        row.status,
        row.debits_posted,
        row.credits_posted,
        row.debits_pending,
        row.credits_pending,
    )


def assert_replay_equals_view(
    ledger: Ledger,
    view: LedgerViewMixin,
    account_ids: list[str],
    instant: Instant,
    view_position: int | None = None,
) -> list[ReplayedAccount]:
    """``view_position``: where the view is read for a position instant (the end of the
    commit the position falls in; by default the position itself)."""
    replayed = {account.id: account for account in replay(ledger, instant)}
    assert set(replayed) <= set(account_ids)
    for account_id in account_ids:
        if instant.position is not None:
            at = instant.position if view_position is None else view_position
            row = view.balance_at_position(account_id, at)
        else:
            assert instant.moment is not None
            row = view.balance_as_of(account_id, instant.moment)
        assert counters(row) == counters(replayed.get(account_id)), (
            account_id,
            instant.describe(),
        )
    return list(replayed.values())


def unit_sums(accounts: list[ReplayedAccount]) -> dict[str, tuple[int, int]]:
    sums: dict[str, tuple[int, int]] = {}
    for account in accounts:
        posted, pending = sums.get(account.unit, (0, 0))
        sums[account.unit] = (
            posted + account.balance,
            pending + account.credits_pending - account.debits_pending,
        )
    return sums


def moments_around(times: list[datetime]) -> st.SearchStrategy[datetime]:
    """Event times exactly, a microsecond either side, or anywhere from before the first
    event to after the last."""
    exact = st.builds(
        lambda moment, shift: moment + timedelta(microseconds=shift),
        st.sampled_from(times),
        st.integers(-1, 1),
    )
    first, last = min(times), max(times)
    anywhere = st.datetimes(
        min_value=(first - timedelta(seconds=1)).replace(tzinfo=None),
        max_value=(last + timedelta(seconds=1)).replace(tzinfo=None),
        timezones=st.just(UTC),
    )
    return st.one_of(exact, anywhere)


# The rich history, on SQLite and PostgreSQL ------------------------------------------------


@settings(max_examples=INSTANT_EXAMPLES, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(data=st.data())
def test_replay_at_a_random_position_equals_the_view(projected: Projected, data: Any) -> None:
    """At a commit's end replay and the per-position view agree; a position inside a
    commit replays to that commit's end (the books balance only between commits)."""
    position = data.draw(st.integers(0, projected.history.head + 2), label="position")
    ends = [0, *sorted(projected.history.commit_positions)]  # 0: before everything
    commit_end = next((end for end in ends if end >= position), position)
    assert_replay_equals_view(
        projected.ledger,
        projected.view,
        projected.history.account_ids,
        Instant(position=position),
        view_position=commit_end,
    )


@settings(max_examples=INSTANT_EXAMPLES, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(data=st.data())
def test_replay_as_of_a_random_time_equals_the_view(projected: Projected, data: Any) -> None:
    moment = data.draw(moments_around(projected.times), label="moment")
    assert_replay_equals_view(
        projected.ledger,
        projected.view,
        projected.history.account_ids,
        Instant(moment=moment),
    )


def test_every_unit_sums_to_zero_at_every_commit(projected: Projected) -> None:
    """Invariant 1, at each position where a command's commit ends."""
    assert len(projected.history.commit_positions) >= 2, "a history with commits to check"
    for position in projected.history.commit_positions:
        accounts = replay(projected.ledger, Instant(position=position))
        assert set(unit_sums(accounts).values()) == {(0, 0)}, position


# Random histories, in memory ------------------------------------------------------------


ACCOUNTS: Final = ("bank", "a", "b", "c")
UNIT: Final = "CREDITS"
STARTING_CREDITS: Final = 100

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("transfer"),
            st.sampled_from(ACCOUNTS),
            st.sampled_from(ACCOUNTS),
            st.integers(1, 60),
        ),
        st.tuples(
            st.just("hold"),
            st.sampled_from(ACCOUNTS),
            st.sampled_from(ACCOUNTS),
            st.integers(1, 60),
        ),
        st.tuples(st.just("post"), st.integers(0, 9), st.integers(0, 60)),
        st.tuples(st.just("void"), st.integers(0, 9)),
        st.tuples(st.just("expire"), st.integers(0, 9)),
        st.tuples(st.just("reverse"), st.integers(0, 9)),
        st.tuples(st.just("close"), st.sampled_from(ACCOUNTS[1:])),
        st.tuples(
            st.just("batch"),
            st.lists(
                st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 30)),
                min_size=1,
                max_size=3,
            ),
            st.booleans(),
        ),
    ),
    min_size=1,
    max_size=25,
)


# What a random step may be refused for: the ledger's business rules. Anything else
# (validation, idempotency, concurrency, a store fault) is a bug in the step or the ledger.
EXPECTED_REFUSALS: Final = frozenset(
    {
        "insufficient_funds",
        "overdraft_limit_exceeded",
        "same_account",
        "account_closed",
        "account_has_pending_transfers",
        "transfer_already_posted",
        "transfer_already_voided",
        "transfer_expired",
        "transfer_not_pending",
        "post_amount_exceeds_pending",
        "transfer_not_reversible",
        "transfer_already_reversed",
        # posting a hold again with another amount (the same post again answers 200)
        "idempotency_conflict",
    }
)


@dataclass
class Applied:
    """What ``run_operations`` did: the commits' positions, and how many random steps
    were applied and refused (by code)."""

    commits: list[int] = field(default_factory=list)
    applied: int = 0
    skipped: int = 0
    refused: Counter[str] = field(default_factory=Counter)


def run_operations(ledger: Ledger, steps: list[Any], *, strict: bool = False) -> Applied:
    """Apply the steps (refusals are part of the game, unless ``strict``): the positions
    of the commits and what was applied, skipped (nothing to act on) or refused."""
    outcome = Applied()
    commits = outcome.commits
    commits.append(ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True)).position)
    for account_id in ACCOUNTS[1:]:
        commits.append(
            ledger.open_account(OpenAccount(account_id, UNIT, overdraft_limit=5)).position
        )
        funding = RecordTransfer(f"fund:{account_id}", "bank", account_id, STARTING_CREDITS)
        commits.append(ledger.record_transfer(funding).position)
    made = Made()
    for number, step in enumerate(steps):
        head_before = ledger.recorder.max_notification_id()
        refusal: LedgerError | None = None
        try:
            ran = apply_step(ledger, step, f"t{number}", made)
        except LedgerError as error:
            if strict:
                raise
            refusal = error
        if refusal is not None:
            outcome.refused[refusal.code] += 1
        elif ran:
            outcome.applied += 1
        else:
            outcome.skipped += 1
        head = ledger.recorder.max_notification_id()
        if head != head_before and head is not None:
            commits.append(head)
    unexpected = set(outcome.refused) - EXPECTED_REFUSALS
    assert not unexpected, f"steps refused for no business reason: {unexpected}"
    return outcome


@dataclass
class Made:
    """The transfers and holds the steps have made so far (what later steps act on)."""

    transfers: list[str] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)


def apply_step(ledger: Ledger, step: Any, transfer_id: str, made: Made) -> bool:
    """Run one step's command; False when it had nothing to act on (no hold yet…)."""
    kind, holds, transfers = step[0], made.holds, made.transfers
    if kind in ("transfer", "hold"):
        pending = kind == "hold"
        ledger.record_transfer(
            RecordTransfer(
                transfer_id,
                step[1],
                step[2],
                step[3],
                pending=pending,
                timeout_seconds=60 if pending else None,
            )
        )
        (holds if pending else transfers).append(transfer_id)
    elif kind == "post" and holds:
        hold = holds[step[1] % len(holds)]
        ledger.post_pending(hold, step[2] or None)
        transfers.append(hold)
    elif kind == "void" and holds:
        ledger.void_pending(holds[step[1] % len(holds)])
    elif kind == "expire" and holds:
        real_clock = ledger.clock
        ledger.clock = lambda: real_clock() + timedelta(minutes=5)
        try:
            ledger.expire_pending(holds[step[1] % len(holds)])
        finally:
            ledger.clock = real_clock
    elif kind == "reverse" and transfers:
        ledger.reverse_transfer(transfers[step[1] % len(transfers)], transfer_id)
    elif kind == "close":
        ledger.close_account(step[1])
    elif kind == "batch":
        ledger.record_batch(
            [
                RecordTransfer(f"{transfer_id}.{leg}", debit, credit, amount)
                for leg, (debit, credit, amount) in enumerate(step[1])
            ],
            atomic=step[2],
        )
    else:
        return False
    return True


def fold_into_view(ledger: Ledger, folder: Path) -> LedgerViewMixin:
    """What the projection runner does, without its threads: every event, in order."""
    view = open_view(f"sqlite:///{folder / 'views.sqlite'}", 1)
    for position, event in read_log(ledger):
        view.apply_event(event, Tracking(APPLICATION_NAME, position))
    return view


@settings(max_examples=HISTORY_EXAMPLES, deadline=None, suppress_health_check=SLOW_EXAMPLES)
@given(steps=operations)
def test_on_random_histories_replay_equals_the_view_at_every_instant(steps: list[Any]) -> None:
    with (
        Ledger(event_store_env("memory://")) as ledger,
        tempfile.TemporaryDirectory(prefix="replay-view-") as folder,
    ):
        outcome = run_operations(ledger, steps)
        note_event(f"steps applied: {'some' if outcome.applied else 'none'}")
        assert outcome.applied + outcome.skipped + sum(outcome.refused.values()) == len(steps)
        view = fold_into_view(ledger, Path(folder))
        try:
            assert_agree_everywhere(ledger, view, outcome.commits)
        finally:
            cast(Any, view).datastore.close()


def assert_agree_everywhere(ledger: Ledger, view: LedgerViewMixin, commits: list[int]) -> None:
    head = ledger.recorder.max_notification_id() or 0
    assert view.checkpoint() == head
    # The set-up alone commits every account's opening and funding: never zero loops.
    assert len(commits) >= 2 * len(ACCOUNTS) - 1, commits
    assert head >= len(commits)
    ends = [0, *sorted(commits)]  # 0: before everything
    for position in range(head + 2):
        commit_end = next((end for end in ends if end >= position), position)
        assert_replay_equals_view(
            ledger, view, list(ACCOUNTS), Instant(position=position), view_position=commit_end
        )
    for _, event in read_log(ledger):
        assert_replay_equals_view(ledger, view, list(ACCOUNTS), Instant(moment=event.timestamp))
    for position in commits:
        accounts = replay(ledger, Instant(position=position))
        assert set(unit_sums(accounts).values()) == {(0, 0)}, position
    at_head = {account.id: account for account in replay(ledger, Instant())}
    for account_id in ACCOUNTS:
        written = ledger.get_account(account_id)
        assert counters(at_head[account_id]) == (
            written.unit,
            written.status,
            written.debits_posted,
            written.credits_posted,
            written.debits_pending,
            written.credits_pending,
        )


EVERY_KIND_OF_STEP: Final = [
    ("transfer", "a", "b", 10),
    ("hold", "a", "c", 5),
    ("hold", "b", "c", 5),
    ("hold", "c", "a", 5),
    ("post", 0, 3),
    ("void", 1, 0),
    ("expire", 2, 0),
    ("reverse", 0, 0),
    ("batch", [("a", "b", 1), ("b", "c", 2)], True),
    ("batch", [("c", "a", 1)], False),
    ("close", "c"),
]


def test_every_kind_of_random_step_can_be_applied_and_is_a_commit() -> None:
    """The random histories above are not vacuous: each kind of step they draw is
    applied (not refused) when its preconditions hold, and each is one commit."""
    with Ledger(event_store_env("memory://")) as ledger:
        ledger.open_account(OpenAccount("probe", UNIT))  # not in ACCOUNTS: c can close
        outcome = run_operations(ledger, list(EVERY_KIND_OF_STEP), strict=True)
        assert outcome.applied == len(EVERY_KIND_OF_STEP)
        assert not outcome.refused
        setup_commits = 1 + 2 * (len(ACCOUNTS) - 1)
        assert len(outcome.commits) == setup_commits + len(EVERY_KIND_OF_STEP)
        assert ledger.get_account("c").status == "closed"
