"""The ledger's contract, run on every backend (in-memory, SQLite, real PostgreSQL):
every command, every rejection code, idempotency. Each rejection must change nothing."""

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import ACCOUNT_SNAPSHOT_INTERVAL, Ledger
from app.application.views import AccountView
from app.domain import errors, limits
from app.domain.account import Account
from app.domain.transfer import Transfer
from app.domain.values import account_uuid
from tests.conftest import store_env, store_url
from tests.support.threads import run_in_threads

ISSUANCE = "issuance"
ALICE = "user:alice"
BOB = "user:bob"


def open_accounts(ledger: Ledger) -> None:
    ledger.open_account(OpenAccount(ISSUANCE, "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(ALICE, "CREDITS"))
    ledger.open_account(OpenAccount(BOB, "CREDITS"))


def fund(ledger: Ledger, account_id: str, amount: int, transfer_id: str) -> None:
    ledger.record_transfer(RecordTransfer(transfer_id, ISSUANCE, account_id, amount))


def snapshot(ledger: Ledger, *account_ids: str) -> list[AccountView]:
    return [ledger.get_account(account_id) for account_id in account_ids]


def assert_rejected_without_effect(
    ledger: Ledger, code: str, command: Callable[[], object], *account_ids: str
) -> errors.LedgerError:
    before = snapshot(ledger, *account_ids)
    position_before = ledger.recorder.max_notification_id()
    with pytest.raises(errors.LedgerError) as raised:
        command()
    assert raised.value.code == code, raised.value
    assert snapshot(ledger, *account_ids) == before
    assert ledger.recorder.max_notification_id() == position_before
    return raised.value


# Accounts ------------------------------------------------------------------------------


def test_an_opened_account_starts_empty_and_open(ledger: Ledger) -> None:
    outcome = ledger.open_account(
        OpenAccount(ALICE, "CREDITS", overdraft_limit=5, metadata={"plan": "pro"})
    )
    assert outcome.created
    assert outcome.position >= 1
    account = ledger.get_account(ALICE)
    assert (account.balance, account.available, account.status) == (0, 0, "open")
    assert (account.overdraft_limit, account.metadata) == (5, {"plan": "pro"})


def test_opening_the_same_account_twice_with_the_same_body_is_idempotent(ledger: Ledger) -> None:
    first = ledger.open_account(OpenAccount(ALICE, "CREDITS"))
    again = ledger.open_account(OpenAccount(ALICE, "CREDITS"))
    assert not again.created
    assert again.position == first.position
    assert again.account == first.account


def test_opening_an_existing_id_with_a_different_body_is_an_idempotency_conflict(
    ledger: Ledger,
) -> None:
    ledger.open_account(OpenAccount(ALICE, "CREDITS"))
    assert_rejected_without_effect(
        ledger,
        "idempotency_conflict",
        lambda: ledger.open_account(OpenAccount(ALICE, "USD")),
        ALICE,
    )


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (OpenAccount("", "CREDITS"), "validation_error"),
        (OpenAccount("has space", "CREDITS"), "validation_error"),
        (OpenAccount("x" * 129, "CREDITS"), "validation_error"),
        (OpenAccount(ALICE, "credits"), "validation_error"),
        (OpenAccount(ALICE, "UNIT_TOO_LONG_123"), "validation_error"),
        (OpenAccount(ALICE, "CREDITS", overdraft_limit=-1), "validation_error"),
        (OpenAccount(ALICE, "CREDITS", metadata={"k": 1}), "validation_error"),  # type: ignore[dict-item]
        (OpenAccount(ALICE, "CREDITS", allow_negative="yes"), "validation_error"),  # type: ignore[arg-type]
    ],
)
def test_opening_with_bad_input_is_refused(ledger: Ledger, command: OpenAccount, code: str) -> None:
    with pytest.raises(errors.LedgerError) as raised:
        ledger.open_account(command)
    assert raised.value.code == code
    assert ledger.recorder.max_notification_id() in (None, 0)


def test_a_closed_account_refuses_transfers_on_both_sides(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.close_account(BOB)
    assert ledger.get_account(BOB).status == "closed"
    assert_rejected_without_effect(
        ledger,
        "account_closed",
        lambda: ledger.record_transfer(RecordTransfer("t2", ALICE, BOB, 1)),
        ALICE,
        BOB,
    )
    assert_rejected_without_effect(
        ledger,
        "account_closed",
        lambda: ledger.record_transfer(RecordTransfer("t3", BOB, ALICE, 1)),
        ALICE,
        BOB,
    )


def test_closing_twice_is_harmless(ledger: Ledger) -> None:
    open_accounts(ledger)
    first = ledger.close_account(BOB)
    again = ledger.close_account(BOB)
    assert again.account.status == "closed"
    assert again.position == first.position


def test_an_account_with_pending_holds_cannot_close(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 4, pending=True))
    assert_rejected_without_effect(
        ledger, "account_has_pending_transfers", lambda: ledger.close_account(ALICE), ALICE
    )


def test_an_unknown_account_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(errors.AccountNotFoundError):
        ledger.get_account("nobody")
    open_accounts(ledger)
    assert_rejected_without_effect(
        ledger,
        "account_not_found",
        lambda: ledger.record_transfer(RecordTransfer("t1", ALICE, "nobody", 1)),
        ALICE,
    )
    assert_rejected_without_effect(
        ledger, "account_not_found", lambda: ledger.close_account("nobody"), ALICE
    )


# Transfers -----------------------------------------------------------------------------


def test_a_transfer_moves_money_between_two_accounts_and_sums_to_zero(ledger: Ledger) -> None:
    open_accounts(ledger)
    outcome = ledger.record_transfer(
        RecordTransfer("t1", ISSUANCE, ALICE, 100, metadata={"reason": "signup"})
    )
    assert outcome.created
    assert outcome.transfer.status == "posted"
    assert outcome.transfer.amount_posted == 100
    assert outcome.transfer.metadata == {"reason": "signup"}
    issuance, alice, bob = snapshot(ledger, ISSUANCE, ALICE, BOB)
    assert (issuance.balance, alice.balance, bob.balance) == (-100, 100, 0)
    assert (alice.credits_posted, issuance.debits_posted) == (100, 100)
    assert issuance.balance + alice.balance + bob.balance == 0


def test_replaying_a_transfer_returns_the_original_and_moves_nothing(ledger: Ledger) -> None:
    open_accounts(ledger)
    first = ledger.record_transfer(RecordTransfer("t1", ISSUANCE, ALICE, 100))
    again = ledger.record_transfer(RecordTransfer("t1", ISSUANCE, ALICE, 100))
    assert not again.created
    assert again.transfer == first.transfer
    assert again.position == first.position
    assert ledger.get_account(ALICE).balance == 100


def test_reusing_a_transfer_id_with_a_different_body_is_an_idempotency_conflict(
    ledger: Ledger,
) -> None:
    open_accounts(ledger)
    ledger.record_transfer(RecordTransfer("t1", ISSUANCE, ALICE, 100))
    for changed in (
        RecordTransfer("t1", ISSUANCE, ALICE, 101),
        RecordTransfer("t1", ISSUANCE, BOB, 100),
        RecordTransfer("t1", ISSUANCE, ALICE, 100, metadata={"x": "y"}),
        RecordTransfer("t1", ISSUANCE, ALICE, 100, pending=True),
    ):
        assert_rejected_without_effect(
            ledger,
            "idempotency_conflict",
            lambda changed=changed: ledger.record_transfer(changed),  # type: ignore[misc]
            ISSUANCE,
            ALICE,
            BOB,
        )


def test_spending_more_than_available_is_insufficient_funds(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    error = assert_rejected_without_effect(
        ledger,
        "insufficient_funds",
        lambda: ledger.record_transfer(RecordTransfer("t2", ALICE, BOB, 11)),
        ALICE,
        BOB,
    )
    assert error.context["available"] == 10
    ledger.record_transfer(RecordTransfer("t3", ALICE, BOB, 10))
    assert ledger.get_account(ALICE).available == 0


def test_an_overdraft_limit_lets_the_balance_go_down_to_minus_the_limit(ledger: Ledger) -> None:
    ledger.open_account(OpenAccount("credit-line", "CREDITS", overdraft_limit=50))
    ledger.open_account(OpenAccount(BOB, "CREDITS"))
    ledger.record_transfer(RecordTransfer("t1", "credit-line", BOB, 50))
    assert ledger.get_account("credit-line").balance == -50
    assert_rejected_without_effect(
        ledger,
        "overdraft_limit_exceeded",
        lambda: ledger.record_transfer(RecordTransfer("t2", "credit-line", BOB, 1)),
        "credit-line",
        BOB,
    )


def test_units_must_match(ledger: Ledger) -> None:
    open_accounts(ledger)
    ledger.open_account(OpenAccount("usd", "USD", allow_negative=True))
    assert_rejected_without_effect(
        ledger,
        "unit_mismatch",
        lambda: ledger.record_transfer(RecordTransfer("t1", "usd", ALICE, 1)),
        "usd",
        ALICE,
    )


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (RecordTransfer("t1", ALICE, ALICE, 1), "same_account"),
        (RecordTransfer("t1", ISSUANCE, ALICE, 0), "amount_out_of_range"),
        (RecordTransfer("t1", ISSUANCE, ALICE, -5), "amount_out_of_range"),
        (RecordTransfer("t1", ISSUANCE, ALICE, 2**63), "amount_out_of_range"),
        (RecordTransfer("t1", ISSUANCE, ALICE, 1.5), "validation_error"),  # type: ignore[arg-type]
        (RecordTransfer("bad id", ISSUANCE, ALICE, 1), "validation_error"),
        (RecordTransfer("t1", ISSUANCE, ALICE, 1, timeout_seconds=10), "validation_error"),
        (
            RecordTransfer("t1", ISSUANCE, ALICE, 1, pending=True, timeout_seconds=0),
            "validation_error",
        ),
    ],
)
def test_malformed_transfers_are_refused(
    ledger: Ledger, command: RecordTransfer, code: str
) -> None:
    open_accounts(ledger)
    assert_rejected_without_effect(
        ledger, code, lambda: ledger.record_transfer(command), ISSUANCE, ALICE
    )


def test_balances_cannot_overflow_past_two_to_the_63(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, limits.AMOUNT_MAX, "t1")
    assert ledger.get_account(ALICE).credits_posted == limits.AMOUNT_MAX
    assert_rejected_without_effect(
        ledger,
        "balance_overflow",
        lambda: ledger.record_transfer(RecordTransfer("t2", ISSUANCE, ALICE, 1)),
        ISSUANCE,
        ALICE,
    )


# Pending transfers ---------------------------------------------------------------------


def test_a_hold_reserves_funds_and_posting_it_whole_moves_them(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    hold = ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    assert hold.transfer.status == "pending"
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, alice.available, alice.debits_pending) == (10, 3, 7)
    assert (bob.balance, bob.credits_pending) == (0, 7)
    assert_rejected_without_effect(
        ledger,
        "insufficient_funds",
        lambda: ledger.record_transfer(RecordTransfer("t2", ALICE, BOB, 4)),
        ALICE,
        BOB,
    )
    posted = ledger.post_pending("h1")
    assert (posted.transfer.status, posted.transfer.amount_posted) == ("posted", 7)
    assert posted.position > hold.position
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, alice.available, alice.debits_pending) == (3, 3, 0)
    assert (bob.balance, bob.credits_pending) == (7, 0)


def test_posting_less_than_the_hold_releases_the_rest(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    ledger.post_pending("h1", 5)
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, alice.available, alice.debits_pending) == (5, 5, 0)
    assert (bob.balance, bob.credits_pending) == (5, 0)
    assert ledger.get_transfer("h1").amount_posted == 5


def test_posting_more_than_the_hold_is_refused(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    assert_rejected_without_effect(
        ledger, "post_amount_exceeds_pending", lambda: ledger.post_pending("h1", 8), ALICE, BOB
    )


def test_voiding_a_hold_releases_it_entirely(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    voided = ledger.void_pending("h1")
    assert voided.transfer.status == "voided"
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, alice.available, alice.debits_pending) == (10, 10, 0)
    assert (bob.balance, bob.credits_pending) == (0, 0)


def test_a_posted_hold_answers_the_same_post_again_and_refuses_anything_else(
    ledger: Ledger,
) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    posted = ledger.post_pending("h1", 5)
    position = ledger.recorder.max_notification_id()
    for amount in (None, 5):
        again = ledger.post_pending("h1", amount)
        assert (again.transfer, again.position, again.created) == (
            posted.transfer,
            posted.position,
            False,
        )
    assert ledger.recorder.max_notification_id() == position
    assert_rejected_without_effect(
        ledger, "idempotency_conflict", lambda: ledger.post_pending("h1", 7), ALICE, BOB
    )
    assert_rejected_without_effect(
        ledger, "transfer_already_posted", lambda: ledger.void_pending("h1"), ALICE, BOB
    )


def test_a_voided_hold_answers_the_same_void_again_and_refuses_a_post(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    voided = ledger.void_pending("h1")
    position = ledger.recorder.max_notification_id()
    again = ledger.void_pending("h1")
    assert (again.transfer, again.position, again.created) == (
        voided.transfer,
        voided.position,
        False,
    )
    assert ledger.recorder.max_notification_id() == position
    assert_rejected_without_effect(
        ledger, "transfer_already_voided", lambda: ledger.post_pending("h1"), ALICE, BOB
    )


def test_a_posted_transfer_is_not_pending(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    assert_rejected_without_effect(
        ledger, "transfer_not_pending", lambda: ledger.post_pending("t1"), ALICE
    )
    assert_rejected_without_effect(
        ledger, "transfer_not_found", lambda: ledger.void_pending("nope"), ALICE
    )


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now().astimezone() + self.offset


def test_a_hold_expires_after_its_timeout_and_expiring_twice_is_harmless(
    event_store_url: str,
) -> None:
    clock = Clock()
    ledger = Ledger(store_env(event_store_url), clock=clock)
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True, timeout_seconds=60))
    assert_rejected_without_effect(
        ledger, "transfer_not_yet_expired", lambda: ledger.expire_pending("h1"), ALICE, BOB
    )
    clock.offset = timedelta(seconds=61)
    # Past its timeout a hold can no longer be posted, even before the expiry is written.
    assert_rejected_without_effect(
        ledger, "transfer_expired", lambda: ledger.post_pending("h1"), ALICE, BOB
    )
    expired = ledger.expire_pending("h1")
    assert expired.transfer.status == "expired"
    assert ledger.get_account(ALICE).available == 10
    position = ledger.recorder.max_notification_id()
    again = ledger.expire_pending("h1")
    assert again.transfer.status == "expired"
    assert again.position == expired.position
    assert ledger.recorder.max_notification_id() == position
    assert_rejected_without_effect(
        ledger, "transfer_expired", lambda: ledger.void_pending("h1"), ALICE, BOB
    )
    ledger.close()


def test_a_hold_without_timeout_never_expires(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    assert ledger.get_transfer("h1").expires_at is None
    assert_rejected_without_effect(
        ledger, "transfer_not_yet_expired", lambda: ledger.expire_pending("h1"), ALICE
    )


# Reversals -----------------------------------------------------------------------------


def test_reversing_a_transfer_swaps_the_accounts_and_links_both(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("buy-1", ALICE, BOB, 6))
    refund = ledger.reverse_transfer("buy-1", "refund-1", metadata={"why": "broken"})
    assert refund.created
    assert (refund.transfer.debit_account_id, refund.transfer.credit_account_id) == (BOB, ALICE)
    assert (refund.transfer.amount, refund.transfer.reversal_of) == (6, "buy-1")
    assert ledger.get_transfer("buy-1").reversed_by == "refund-1"
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, bob.balance) == (10, 0)
    again = ledger.reverse_transfer("buy-1", "refund-1", metadata={"why": "broken"})
    assert not again.created
    assert again.position == refund.position
    assert_rejected_without_effect(
        ledger,
        "transfer_already_reversed",
        lambda: ledger.reverse_transfer("buy-1", "refund-2"),
        ALICE,
        BOB,
    )


def test_reversing_a_partly_posted_hold_refunds_what_was_posted(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    ledger.post_pending("h1", 4)
    refund = ledger.reverse_transfer("h1", "refund-1")
    assert refund.transfer.amount == 4
    assert ledger.get_account(ALICE).balance == 10


def test_only_posted_transfers_can_be_reversed(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("h1", ALICE, BOB, 7, pending=True))
    assert_rejected_without_effect(
        ledger, "transfer_not_reversible", lambda: ledger.reverse_transfer("h1", "r1"), ALICE, BOB
    )


def test_a_reversal_the_receiver_cannot_afford_is_refused(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("buy-1", ALICE, BOB, 6))
    ledger.record_transfer(RecordTransfer("spend", BOB, ISSUANCE, 6))
    assert_rejected_without_effect(
        ledger,
        "insufficient_funds",
        lambda: ledger.reverse_transfer("buy-1", "refund-1"),
        ALICE,
        BOB,
    )
    assert ledger.get_transfer("buy-1").reversed_by is None


def test_a_reversal_id_already_used_for_another_transfer_is_a_conflict(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    ledger.record_transfer(RecordTransfer("buy-1", ALICE, BOB, 6))
    assert_rejected_without_effect(
        ledger, "idempotency_conflict", lambda: ledger.reverse_transfer("buy-1", "t1"), ALICE, BOB
    )


# Batches -------------------------------------------------------------------------------


def test_an_atomic_batch_applies_every_leg_in_one_write(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    position = ledger.recorder.max_notification_id()
    outcome = ledger.record_batch(
        [
            RecordTransfer("leg-1", ALICE, BOB, 8),
            RecordTransfer("leg-2", BOB, ISSUANCE, 3),  # spends what leg-1 just gave
        ],
        atomic=True,
    )
    positions = [result.position for result in outcome.results]  # type: ignore[union-attr]
    # One commit: each transfer answers the position of its own record, the last one
    # ends the commit, and nothing else was written in between.
    assert positions == sorted(positions)
    assert positions[0] > (position or 0)
    assert positions[-1] == ledger.recorder.max_notification_id()
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, bob.balance) == (2, 5)


def test_an_atomic_batch_with_one_bad_leg_changes_nothing(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    error = assert_rejected_without_effect(
        ledger,
        "insufficient_funds",
        lambda: ledger.record_batch(
            [RecordTransfer("leg-1", ALICE, BOB, 8), RecordTransfer("leg-2", ALICE, BOB, 8)],
            atomic=True,
        ),
        ALICE,
        BOB,
    )
    assert isinstance(error, errors.BatchRejectedError)
    assert error.index == 1
    with pytest.raises(errors.TransferNotFoundError):
        ledger.get_transfer("leg-1")


def test_a_non_atomic_batch_answers_each_item_in_order(ledger: Ledger) -> None:
    open_accounts(ledger)
    fund(ledger, ALICE, 10, "t1")
    outcome = ledger.record_batch(
        [
            RecordTransfer("a", ALICE, BOB, 8),
            RecordTransfer("b", ALICE, BOB, 8),  # insufficient after a
            RecordTransfer("c", ALICE, "nobody", 1),
            RecordTransfer("d", ALICE, BOB, 2),
            RecordTransfer("a", ALICE, BOB, 8),  # replay of a
            RecordTransfer("bad id", ALICE, BOB, 1),
        ],
        atomic=False,
    )
    codes = [getattr(result, "code", "ok") for result in outcome.results]
    assert codes == [
        "ok",
        "insufficient_funds",
        "account_not_found",
        "ok",
        "ok",
        "validation_error",
    ]
    assert getattr(outcome.results[4], "created", None) is False
    alice, bob = snapshot(ledger, ALICE, BOB)
    assert (alice.balance, bob.balance) == (0, 10)


def test_batches_are_bounded(ledger: Ledger) -> None:
    open_accounts(ledger)
    too_many = [
        RecordTransfer(f"t{i}", ISSUANCE, ALICE, 1) for i in range(limits.BATCH_SIZE_MAX + 1)
    ]
    for atomic in (True, False):
        assert_rejected_without_effect(
            ledger,
            "batch_too_large",
            lambda atomic=atomic: ledger.record_batch(too_many, atomic=atomic),  # type: ignore[misc]
            ALICE,
        )
    assert_rejected_without_effect(
        ledger, "validation_error", lambda: ledger.record_batch([], atomic=True), ALICE
    )


def test_a_full_batch_of_the_maximum_size_goes_through(ledger: Ledger) -> None:
    open_accounts(ledger)
    batch = [RecordTransfer(f"t{i}", ISSUANCE, ALICE, 1) for i in range(limits.BATCH_SIZE_MAX)]
    outcome = ledger.record_batch(batch, atomic=True)
    assert len(outcome.results) == limits.BATCH_SIZE_MAX
    assert ledger.get_account(ALICE).balance == limits.BATCH_SIZE_MAX


# History -------------------------------------------------------------------------------


def test_an_account_refolded_at_any_version_matches_its_history(ledger: Ledger) -> None:
    open_accounts(ledger)
    balances = []
    for i in range(1, 6):
        fund(ledger, ALICE, i, f"t{i}")
        balances.append(ledger.get_account(ALICE).balance)
    for version, balance in enumerate(balances, start=1):
        assert ledger.get_account_at_version(ALICE, version).balance == balance


def test_every_error_code_is_distinct_and_snake_case() -> None:
    codes = errors.all_error_codes()
    assert len(codes) >= 20
    assert all(code.replace("_", "").isalpha() and code.islower() for code in codes)


@pytest.mark.parametrize(
    "backend", ["sqlite", "postgres", "kurrentdb-fake", "kurrentdb-real"]
)  # memory dies with its Ledger
def test_a_hot_account_reloads_from_its_snapshot_after_a_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    event_store_url = store_url(backend, tmp_path, request)
    first = Ledger(store_env(event_store_url))
    open_accounts(first)
    count = ACCOUNT_SNAPSHOT_INTERVAL * 2 + 7
    for start in range(0, count, 500):
        first.record_batch(
            [
                RecordTransfer(f"t{i}", ISSUANCE, ALICE, 1)
                for i in range(start, min(count, start + 500))
            ],
            atomic=True,
        )
    first.close()
    restarted = Ledger(store_env(event_store_url))
    assert restarted.snapshots is not None
    newest = list(restarted.snapshots.get(account_uuid(ALICE), desc=True, limit=1))
    assert newest
    assert newest[0].originator_version >= ACCOUNT_SNAPSHOT_INTERVAL * 2
    account = restarted.get_account(ALICE)
    assert (account.balance, account.version) == (count, count)
    assert restarted.get_account_at_version(ALICE, count).balance == count
    restarted.close()


def test_an_accounts_lines_run_in_its_transfers_order_in_the_log(ledger: Ledger) -> None:
    """The promise an account's transfer listing rests on (decision 0033), on every
    event store: each account's opening lines of transfers (a debit, a credit or a
    reservation) come in the log in the order of those transfers' own recordings, within
    a commit (group commits of threads, atomic and non-atomic batches whose ids run
    against their order) as across commits."""
    for name in ("bank", "a", "b", "c"):
        ledger.open_account(OpenAccount(name, "CREDITS", allow_negative=True))
    pairs = [("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")]
    for batch in range(3):
        commands = [RecordTransfer(f"batch:{batch}:{9 - n}", *pairs[n % 4], 1) for n in range(8)]
        ledger.record_batch(commands, atomic=batch % 2 == 0)
    for number in range(3):
        hold = RecordTransfer(f"hold:{number}", "a", "b", 2, pending=True, timeout_seconds=600)
        ledger.record_transfer(hold)
    ledger.post_pending("hold:0")
    ledger.void_pending("hold:1")
    ledger.reverse_transfer("batch:0:9", "reversal")

    def single(number: int) -> Callable[[], object]:
        command = RecordTransfer(f"one:{number}", *pairs[number % 4], 1)
        return lambda: ledger.record_transfer(command)

    run_in_threads([single(number) for number in range(16)], timeout=60)
    recorded: dict[str, int] = {}
    lines: dict[UUID, list[str]] = {}
    opening = (Account.Debited, Account.Credited, Account.DebitReserved, Account.CreditReserved)
    for notification in ledger.recorder.select_notifications(start=None, limit=100_000):
        event: Any = ledger.mapper.to_domain_event(notification)
        if isinstance(event, Transfer.TransferRecorded):
            recorded[event.transfer_id] = notification.id
        elif isinstance(event, opening):
            lines.setdefault(event.originator_id, []).append(event.transfer_id)
    assert len(recorded) == 3 * 8 + 3 + 1 + 16
    for account, transfer_ids in lines.items():
        positions = [recorded[transfer_id] for transfer_id in transfer_ids]
        assert positions == sorted(positions), account
