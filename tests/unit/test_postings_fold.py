"""The one postings fold (app.domain.postings) agrees with the aggregate and every reader.

Random sequences of money movements on one account are checked against a model kept by
hand in the test (plain integers, not the domain's code); random ledger histories are
checked account by account: the fold of each stream, the aggregate, replay and explain
all give the same counters, and explain names the other side of each line's transfer.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from hypothesis import given, settings
from hypothesis import strategies as st

from app.application.ledger import Ledger
from app.audit.explain import explain
from app.audit.log import Instant
from app.audit.replay import replay
from app.domain.account import Account, fold_postings
from app.domain.postings import Counters
from app.domain.transfer import Transfer, TransferStatus, fate_after, initial_fate
from app.domain.values import account_uuid, transfer_uuid
from app.persistence.stores import event_store_env
from tests.unit.test_replay_properties import ACCOUNTS, operations, run_operations

MOVEMENT_EXAMPLES: Final = 200
HISTORY_EXAMPLES: Final = 30
AMOUNT_MAX: Final = 1_000

movements = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["debit", "credit", "hold_debit", "hold_credit"]),
            st.integers(1, AMOUNT_MAX),
        ),
        st.tuples(
            st.sampled_from(["settle_debit", "settle_credit"]),
            st.integers(0, 9),
            st.integers(0, 100),
        ),
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class Model:
    """The four counters kept by hand, and the holds still open on each side."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0
    holds: dict[str, list[tuple[str, int]]] = field(
        default_factory=lambda: {"debit": [], "credit": []}
    )

    def counters(self) -> tuple[int, int, int, int]:
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


def move(account: Account, model: Model, step: tuple[Any, ...], number: int) -> bool:
    """Apply one movement to the aggregate and to the model; False when it had nothing
    to act on (a settle with no open hold on that side)."""
    now = datetime.now(UTC)
    kind, transfer_id = step[0], f"t{number}"
    if kind in ("debit", "hold_debit"):
        pending = kind == "hold_debit"
        account.debit(transfer_id, step[1], pending=pending, now=now)
        if pending:
            model.debits_pending += step[1]
            model.holds["debit"].append((transfer_id, step[1]))
        else:
            model.debits_posted += step[1]
    elif kind in ("credit", "hold_credit"):
        pending = kind == "hold_credit"
        account.credit(transfer_id, step[1], pending=pending)
        if pending:
            model.credits_pending += step[1]
            model.holds["credit"].append((transfer_id, step[1]))
        else:
            model.credits_posted += step[1]
    else:
        side = "debit" if kind == "settle_debit" else "credit"
        holds = model.holds[side]
        if not holds:
            return False
        hold_id, reserved = holds.pop(step[1] % len(holds))
        posted = reserved * step[2] // 100
        if side == "debit":
            account.settle_debit_hold(hold_id, reserved, posted)
            model.debits_pending -= reserved
            model.debits_posted += posted
        else:
            account.settle_credit_hold(hold_id, reserved, posted)
            model.credits_pending -= reserved
            model.credits_posted += posted
    return True


def aggregate_counters(account: Account) -> tuple[int, int, int, int]:
    return (
        account.debits_posted,
        account.credits_posted,
        account.debits_pending,
        account.credits_pending,
    )


@settings(max_examples=MOVEMENT_EXAMPLES, deadline=None)
@given(steps=movements)
def test_the_fold_of_an_accounts_events_equals_its_counters_after_every_event(
    steps: list[tuple[Any, ...]],
) -> None:
    account = Account.open("fold:probe", "CREDITS", True, 0, {})
    model = Model()
    expected_after: list[tuple[int, int, int, int]] = []  # after each money event
    for number, step in enumerate(steps):
        if move(account, model, step, number):
            expected_after.append(model.counters())
            assert aggregate_counters(account) == model.counters()
    events = account.collect_events()
    money_events = [e for e in events if isinstance(e, Account.BalanceChanged)]
    assert len(money_events) == len(expected_after)
    assert fold_postings(events).as_tuple() == model.counters()
    folded = Counters()
    for event, expected in zip(money_events, expected_after, strict=True):
        fold_postings([event], folded)  # continuing from where the fold stood
        assert folded.as_tuple() == expected
        assert folded.balance == expected[1] - expected[0]
        assert folded.available == expected[1] - expected[0] - expected[2]


@settings(max_examples=HISTORY_EXAMPLES, deadline=None)
@given(steps=operations)
def test_on_random_histories_the_fold_the_aggregate_replay_and_explain_agree(
    steps: list[Any],
) -> None:
    with Ledger(event_store_env("memory://")) as ledger:
        outcome = run_operations(ledger, steps)
        assert outcome.applied + outcome.skipped + sum(outcome.refused.values()) == len(steps)
        replayed = {account.id: account for account in replay(ledger, Instant())}
        assert set(replayed) == set(ACCOUNTS)
        for account_id in ACCOUNTS:
            written = ledger.get_account(account_id)
            stream = list(ledger.events.get(account_uuid(account_id)))
            expected = (
                written.debits_posted,
                written.credits_posted,
                written.debits_pending,
                written.credits_pending,
            )
            assert fold_postings(stream).as_tuple() == expected, account_id
            account = replayed[account_id]
            assert (
                account.debits_posted,
                account.credits_posted,
                account.debits_pending,
                account.credits_pending,
            ) == expected
            lines = list(explain(ledger, account_id, None))
            assert len(lines) == sum(isinstance(e, Account.BalanceChanged) for e in stream)
            assert (lines[-1].balance, lines[-1].available) == (written.balance, written.available)
            for line in lines:
                assert_counterparty(ledger, account_id, line.transfer_id, line.counterparty_id)


def assert_counterparty(
    ledger: Ledger, account_id: str, transfer_id: str, counterparty_id: str | None
) -> None:
    recorded = next(iter(ledger.events.get(transfer_uuid(transfer_id))))
    assert isinstance(recorded, Transfer.TransferRecorded)
    sides = {recorded.debit_account_id, recorded.credit_account_id}
    assert account_id in sides
    assert sides == {account_id, counterparty_id}


def test_a_transfers_fate_follows_its_events_and_a_reversal_keeps_it() -> None:
    assert initial_fate(pending=True) == "pending"
    assert initial_fate(pending=False) == "posted"
    with Ledger(event_store_env("memory://")) as ledger:
        outcome = run_operations(
            ledger,
            [
                ("hold", "a", "b", 5),
                ("hold", "b", "c", 5),
                ("hold", "c", "a", 5),
                ("post", 0, 0),
                ("void", 1, 0),
                ("expire", 2, 0),
                ("reverse", 0, 0),
            ],
            strict=True,
        )
        assert outcome.applied == 7
        for transfer_id, fates in (
            ("t0", ["pending", "posted", "posted"]),  # posted, then reversed
            ("t1", ["pending", "voided"]),
            ("t2", ["pending", "expired"]),
        ):
            status: TransferStatus = "posted"
            seen = []
            for event in ledger.events.get(transfer_uuid(transfer_id)):
                status = fate_after(status, event)
                seen.append(status)
            assert seen == fates, transfer_id
            assert ledger.get_transfer(transfer_id).status == fates[-1]
