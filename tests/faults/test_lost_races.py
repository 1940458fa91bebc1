"""A command whose refusal rests on state another process moved is run again on fresh
state; when it may not run again (its retry budget or its deadline ran out) it is
answered ``concurrency_conflict``, never the refusal it met on stale state: that
refusal may be false, and a client that believed it would never send again."""

from collections.abc import Iterator

import pytest

from app.application import ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import ConcurrencyConflictError, TransferNotFoundError
from tests.conftest import store_env

ISSUER = "issuer"


@pytest.fixture
def two_processes(shared_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one store, as two processes would be."""
    here, there = Ledger(store_env(shared_url)), Ledger(store_env(shared_url))
    try:
        yield here, there
    finally:
        here.close()
        there.close()


def stale_alice(here: Ledger, there: Ledger) -> None:
    """``here`` holds alice at a balance of 0 in its cache; ``there`` has funded her."""
    here.open_account(OpenAccount(ISSUER, "CREDITS", allow_negative=True))
    here.open_account(OpenAccount("alice", "CREDITS"))
    here.open_account(OpenAccount("bob", "CREDITS"))
    assert here.get_account("alice").balance == 0
    there.record_transfer(RecordTransfer("fund", ISSUER, "alice", 10))


def test_a_refusal_on_moved_state_is_checked_again_on_fresh_state(
    two_processes: tuple[Ledger, Ledger],
) -> None:
    here, there = two_processes
    stale_alice(here, there)
    spent = here.record_transfer(RecordTransfer("spend", "alice", "bob", 5))
    assert spent.created
    assert here.get_account("alice").balance == 5


def test_a_refusal_on_moved_state_with_no_retry_left_answers_a_conflict_not_the_refusal(
    two_processes: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = two_processes
    stale_alice(here, there)
    with monkeypatch.context() as patched:
        patched.setattr(ledger_module, "CONFLICT_RETRIES_MAX", 0)
        with pytest.raises(ConcurrencyConflictError) as raised:
            here.record_transfer(RecordTransfer("spend", "alice", "bob", 5))
    assert "nothing was written" in raised.value.detail
    assert "sending the same command again is safe" in raised.value.detail
    with pytest.raises(TransferNotFoundError):
        here.get_transfer("spend")
    assert here.get_account("alice").balance == 10
    # The resend it invites settles it, once.
    assert here.record_transfer(RecordTransfer("spend", "alice", "bob", 5)).created
    assert not here.record_transfer(RecordTransfer("spend", "alice", "bob", 5)).created
    assert here.get_account("alice").balance == 5
