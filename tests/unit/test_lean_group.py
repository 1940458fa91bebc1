"""A group's single transfers planned in one pass (``lean_transfers``) store the very rows
the ordinary path stores, answer each command as it would, and leave the aggregates in
the same state: two ledgers write the same random histories of groups (each group the
commands of one committer write: plain and odd transfers, resent ids, posts, voids and
reversals of earlier transfers, refusals in between), one planning the plain transfers
in one pass and the other running every command through the aggregates' commands, and
everything they store, answer and hold is compared. Each command's time stamp is a
tick of its own, so one pass must stamp each transfer as the ordinary path does."""

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Final
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app.application.ledger as ledger_module
from app.application.commands import (
    OpenAccount,
    PostPendingTransfer,
    RecordReversal,
    RecordTransfer,
    VoidPendingTransfer,
)
from app.application.lean_batch import lean_transfers
from app.application.ledger import Ledger
from app.domain import commits
from app.domain.errors import LedgerError
from app.persistence.stores import event_store_env, sqlite_url
from tests.unit.test_lean_batch import (
    LATER,
    USERS,
    Clock,
    Item,
    _command,
    _set_up,
    _state,
    odd_items,
    plain_items,
    users_set_up,
)

EXAMPLES: Final = 60
TICK: Final = timedelta(milliseconds=1)
SETTLING: Final = ("post", "void", "reverse")


class Ticks:
    """Command time stamps: each call a millisecond after the last."""

    def __init__(self) -> None:
        self.now = LATER

    def __call__(self) -> datetime:
        self.now += TICK
        return self.now


# A group's commands: transfers (mostly plain), and posts, voids and reversals of a
# transfer the history named before (by its index among every id named so far).
settling = st.tuples(st.sampled_from(SETTLING), st.integers(0, 60))
groups = st.lists(
    st.one_of(
        st.lists(plain_items, min_size=1, max_size=8),
        st.lists(st.one_of(plain_items, plain_items, odd_items, settling), min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=5,
)

_commit_numbers: Iterator[int] = iter(())


def run(
    lean: bool, set_up: Sequence[tuple[str, int | None, bool]], history: list[list[Any]]
) -> tuple[list[Any], list[Any], dict[UUID, dict[str, Any]], int]:
    """The answers, the stored rows and the writer's aggregates after ``history``, and how
    many commands were planned in one pass."""
    global _commit_numbers  # noqa: PLW0603  # restarted for each ledger
    _commit_numbers = itertools.count()
    clock = Clock()
    answers: list[Any] = []
    with TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_module, "utc_now", Ticks())
        patch.setattr(commits, "new_commit_id", lambda: f"{next(_commit_numbers):032x}")
        env = dict(event_store_env(sqlite_url(Path(tmp) / "ledger.sqlite")))
        with Ledger(env, clock=clock) as ledger:
            ledger.lean_groups = lean
            _set_up(ledger, set_up)
            clock.now = LATER
            planned = _counting_planned(patch)
            named = [f"hold:{user}" for user in USERS]
            for number, group in enumerate(history):
                made = [_write(ledger, number, i, op, named) for i, op in enumerate(group)]
                writes = [write for write in made if not isinstance(write, LedgerError)]
                groups_before = ledger.committer.groups_taken
                # Queued together: the idle writer takes them as one group.
                results = iter(ledger.committer.submit_all([(w, w.units) for w in writes]))
                assert ledger.committer.groups_taken == groups_before + (1 if writes else 0)
                answers.extend(
                    _answered(write if isinstance(write, LedgerError) else next(results))
                    for write in made
                )
            rows = [
                (n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in ledger.recorder.select_notifications(start=1, limit=100_000)
            ]
            cache = ledger._written
            held = {
                aggregate.id: _state(aggregate)
                for aggregate in [*cache._accounts.values(), *cache._others.values()]
            }
            return answers, rows, held, planned[0]


def _write(ledger: Ledger, number: int, index: int, op: Any, named: list[str]) -> Any:
    """The committer's command for one op of a group (ids it names are added to
    ``named``), or the error that refuses it before it is queued."""
    if isinstance(op, Item):
        command = _command(number, index, op)
        named.append(command.id)
        try:
            return ledger._transfer_write(command.checked())
        except LedgerError as error:
            return error
    kind, which = op
    transfer_id = named[which % len(named)]
    if kind == "post":
        return ledger._post_pending_write(PostPendingTransfer(transfer_id))
    if kind == "void":
        return ledger._void_pending_write(VoidPendingTransfer(transfer_id))
    reversal_id = f"r{number}:{index}"
    named.append(reversal_id)
    return ledger._reverse_transfer_write(RecordReversal(transfer_id, reversal_id, {}))


def _answered(result: Any) -> Any:
    if isinstance(result, LedgerError):
        return (type(result), str(result))
    assert not isinstance(result, BaseException), result
    return result


def _counting_planned(patch: pytest.MonkeyPatch) -> list[int]:
    """How many commands ``lean_transfers`` planned (a list of one count, kept up to date)."""
    counted = [0]
    original = lean_transfers

    def counting(*args: Any) -> Any:
        planned = original(*args)
        counted[0] += len(planned)
        return planned

    patch.setattr(ledger_module, "lean_transfers", counting)
    return counted


@pytest.mark.slow  # some 13 s quiet, 25 s at load 9: two ledgers per example
@settings(max_examples=EXAMPLES, deadline=None)
@given(set_up=users_set_up, history=groups)
def test_single_transfers_planned_in_one_pass_store_answer_and_hold_what_the_ordinary_path_does(
    set_up: list[tuple[str, int | None, bool]], history: list[list[Any]]
) -> None:
    lean_answers, lean_rows, lean_held, _ = run(True, set_up, history)

    answers, rows, held, ordinary_planned = run(False, set_up, history)
    assert ordinary_planned == 0
    assert lean_answers == answers
    assert lean_rows == rows
    assert lean_held == held


def test_a_refused_transfer_and_a_post_in_a_group_leave_their_neighbours_in_the_one_pass() -> None:
    set_up = [("floor", None, False)] * len(USERS)
    group = [
        Item("u0", "u1", 5),
        Item("u1", "issuer", 3, pending=True),
        Item("u3", "u1", 1_000),  # refused: more than u3 holds
        Item("u0", "u1", 5),
        ("post", 5),  # the hold two commands back (named after the four set-up holds)
        Item("u1", "issuer", 3, pending=True, id_from=1),  # b0:1 again: a replay
        Item("u2", "u0", 7),
    ]
    answers, rows, _, planned = run(True, set_up, [group])
    assert planned == 4  # the first two, the fourth, the last
    assert [type(a).__name__ for a in answers] == [
        "TransferOutcome",
        "TransferOutcome",
        "tuple",
        "TransferOutcome",
        "TransferOutcome",
        "TransferOutcome",
        "TransferOutcome",
    ]
    assert answers[2][0].__name__ == "InsufficientFundsError"
    assert [a.created for a in answers if not isinstance(a, tuple)] == [
        True,
        True,
        True,
        False,
        False,
        True,
    ]
    assert answers[4].transfer.status == "posted"
    assert run(False, set_up, [group])[:2] == (answers, rows)


@pytest.mark.parametrize("lean", [True, False])
def test_a_post_resent_into_the_group_of_the_first_answers_both_and_spoils_no_neighbour(
    lean: bool,
) -> None:
    # Once, the second post's answer looked for the settling event before it was stored:
    # a StopIteration failed every command of the group.
    set_up = [("floor", None, False)] * len(USERS)
    hold = [Item("u0", "u1", 5, pending=True)]
    group = [("post", 4), Item("u1", "u2", 2), ("post", 4), ("void", 4)]
    answers = run(lean, set_up, [hold, group])[0]
    first, spend, second, void = answers[1:]
    assert first.transfer.status == second.transfer.status == "posted"
    # The first answers with its commit's end, the resent one with its event's position.
    assert second.position <= first.position
    assert spend.created
    assert void[0].__name__ == "TransferAlreadyPostedError"


def test_a_transfer_the_pass_cannot_plan_is_stamped_as_the_ordinary_path_stamps_it() -> None:
    # Its metadata is not ASCII: its events are not of the plain shape, found once the
    # pass had taken its time stamp, which the ordinary path then uses.
    set_up = [("floor", None, False)] * len(USERS)
    group = [Item("u0", "u1", 5), Item("u1", "u2", 3, note="caf\u00e9"), Item("u2", "u0", 1)]
    lean = run(True, set_up, [group])
    ordinary = run(False, set_up, [group])
    assert lean[3] == 2  # the first and the last
    assert lean[:3] == ordinary[:3]


def _against_another_writer(
    lean: bool,
) -> tuple[list[Any], list[tuple[Any, ...]], dict[str, int], int]:
    """A group written after another ledger on the same file moved one of its accounts
    and wrote an id the group sends again: each command's outcome, the rows stored
    (stream, version, type), the balances, and the conflicts met."""
    global _commit_numbers  # noqa: PLW0603  # restarted for each run
    _commit_numbers = itertools.count()
    with TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_module, "utc_now", Ticks())
        patch.setattr(commits, "new_commit_id", lambda: f"{next(_commit_numbers):032x}")
        env = dict(event_store_env(sqlite_url(Path(tmp) / "ledger.sqlite")))
        with Ledger(env) as ledger, Ledger(env) as other:
            ledger.lean_groups = lean
            ledger.open_account(OpenAccount("issuer", "CREDITS", allow_negative=True))
            for user in USERS:
                ledger.open_account(OpenAccount(user, "CREDITS"))
                ledger.record_transfer(RecordTransfer(f"f:{user}", "issuer", user, 10))
            other.record_transfer(RecordTransfer("moved", "u2", "issuer", 6))
            other.record_transfer(RecordTransfer("dup", "u3", "issuer", 1))
            commands = [
                RecordTransfer("t1", "u0", "u1", 3),
                RecordTransfer("t2", "u2", "u3", 5),  # refused once u2 is seen moved
                RecordTransfer("dup", "u3", "issuer", 1),  # a replay of the other's
                RecordTransfer("t3", "u1", "u2", 2),
                RecordTransfer("t4", "u3", "u0", 20),  # refused: more than u3 holds
                RecordTransfer("t5", "u0", "u3", 1),
            ]
            writes = [ledger._transfer_write(command.checked()) for command in commands]
            outcomes = [
                _outcome(result)
                for result in ledger.committer.submit_all([(w, w.units) for w in writes])
            ]
            rows = sorted(
                (n.originator_id, n.originator_version, n.topic)
                for n in ledger.recorder.select_notifications(start=1, limit=1_000)
            )
            balances = {a: ledger.get_account(a).balance for a in ("issuer", *USERS)}
            return outcomes, rows, balances, ledger.conflicts


def _outcome(result: Any) -> Any:
    answered = _answered(result)
    if isinstance(answered, tuple):
        return answered
    view = answered.transfer
    return (view.id, answered.created, view.status, view.amount_posted)


MOVES: Final = {
    "moved": ("u2", "issuer", 6),
    "dup": ("u3", "issuer", 1),
    "t1": ("u0", "u1", 3),
    "t2": ("u2", "u3", 5),
    "t3": ("u1", "u2", 2),
    "t4": ("u3", "u0", 20),
    "t5": ("u0", "u3", 1),
}


@pytest.mark.parametrize("lean", [True, False])
def test_a_group_that_meets_another_writers_streams_leaves_balances_its_answers_explain(
    lean: bool,
) -> None:
    # Which of t2 and t3 runs first once the other writer's moves are seen decides
    # whether t2 is refused; either order is a serial history. Whatever it was, the
    # balances are the funding, the other writer's two moves and exactly the transfers
    # answered as written (``dup`` is the other's, answered as a replay), none below 0.
    outcomes, rows, balances, _ = _against_another_writer(lean)
    written = {o[0] for o in outcomes if not isinstance(o[0], type) and o[1]}
    assert {"t1", "t3", "t5"} <= written
    assert "t4" not in written
    assert ("dup", False, "posted", 1) in outcomes
    expected = {"issuer": -10 * len(USERS), **dict.fromkeys(USERS, 10)}
    for transfer_id in ("moved", "dup", *sorted(written)):
        debit, credit, amount = MOVES[transfer_id]
        expected[debit] -= amount
        expected[credit] += amount
    assert balances == expected
    assert all(balances[user] >= 0 for user in USERS)
    assert len(rows) == len(set(rows))  # no stream version twice
