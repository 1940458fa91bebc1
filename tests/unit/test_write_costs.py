"""What the write path does to stay cheap per transfer, and that it changes nothing else:
the cyclic garbage collector waits while a group is written and runs after it."""

import gc
from collections.abc import Callable, Iterator

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger, Write, collector_paused
from app.application.workspace import Workspace, WriterCache, Written
from app.domain.account import Account
from app.domain.errors import InsufficientFundsError
from app.domain.transfer import Transfer


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield ledger
    ledger.close()


def test_the_collector_is_held_off_while_a_group_is_written_and_on_again_after(
    ledger: Ledger,
) -> None:
    seen: list[bool] = []

    def apply(work: Workspace) -> Callable[[Written], None]:
        seen.append(gc.isenabled())
        work.add(ledger_account("inside"))
        return lambda _: None

    assert gc.isenabled()
    ledger.committer.submit(Write(apply, account_ids=("inside",)))
    assert seen == [False]
    assert gc.isenabled()
    assert ledger.get_account("inside").status == "open"


def test_a_rejected_or_failed_group_turns_the_collector_back_on(ledger: Ledger) -> None:
    ledger.open_account(OpenAccount("alice", "CREDITS"))
    ledger.open_account(OpenAccount("bob", "CREDITS"))
    with pytest.raises(InsufficientFundsError):
        ledger.record_transfer(RecordTransfer("t1", "alice", "bob", 5))
    assert gc.isenabled()


def test_pausing_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def ledger_account(account_id: str) -> Account:
    return Account.open(account_id, "CREDITS", False, 0, {})


def test_new_transfers_never_push_the_accounts_out_of_the_writers_cache() -> None:
    cache = WriterCache(maxsize=2)
    alice = ledger_account("alice")
    cache.put(alice)
    transfers = [
        Transfer.record(f"t{n}", "alice", "bob", 1, "CREDITS", False, None, {}) for n in range(5)
    ]
    for transfer in transfers:
        cache.put(transfer)
    assert alice.id in cache
    assert cache.get(alice.id) is alice
    assert [t.id in cache for t in transfers] == [False, False, False, True, True]
    cache.evict(alice.id)
    assert alice.id not in cache
    with pytest.raises(KeyError):
        cache.get(alice.id)
