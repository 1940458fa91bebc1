"""What the write path does to stay cheap per transfer, and that it changes nothing else:
the cyclic garbage collector waits while a group is written and runs after it; views,
positions and stream ids built the lean way equal those built the plain way."""

import dataclasses
import gc
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID, uuid5

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger, Write, collector_paused
from app.application.views import TransferView
from app.application.workspace import Workspace, WriterCache, Written
from app.domain.account import Account
from app.domain.chain import command_time, current_command_time
from app.domain.errors import InsufficientFundsError
from app.domain.transfer import Transfer
from app.domain.values import LEDGER_NAMESPACE, account_uuid, name_uuid, transfer_uuid
from tests.support.threads import run_in_threads


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


PAUSING_THREADS = 4
PAUSES_PER_THREAD = 2_000
# How long the threads of a test may take in all (a broken barrier or a missed event
# fails the test: each thread's exception is the test's, tests.support.threads).
THREADS_END_SECONDS = 60.0


def test_a_pause_ending_in_one_thread_leaves_the_collector_off_for_another() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen_by_second: list[bool] = []

    def first() -> None:
        with collector_paused():
            first_in.set()
            assert second_in.wait(timeout=THREADS_END_SECONDS)
        first_out.set()

    def second() -> None:
        assert first_in.wait(timeout=THREADS_END_SECONDS)
        with collector_paused():
            second_in.set()
            assert first_out.wait(timeout=THREADS_END_SECONDS)
            seen_by_second.append(gc.isenabled())  # the first's pause has ended

    run_in_threads([first, second], timeout=THREADS_END_SECONDS)
    assert first_out.is_set()
    assert seen_by_second == [False]
    assert gc.isenabled()


def test_pauses_from_many_threads_never_see_the_collector_on_and_it_ends_on() -> None:
    """The writer and the catch-up runner pause it at once, in real threads."""
    seen_on = 0
    lock = threading.Lock()
    start = threading.Barrier(PAUSING_THREADS)

    def pausing() -> None:
        nonlocal seen_on
        start.wait(timeout=THREADS_END_SECONDS)
        for _ in range(PAUSES_PER_THREAD):
            with collector_paused():
                time.sleep(0)  # let the others in (and out), mid-pause
                if gc.isenabled():
                    with lock:
                        seen_on += 1

    run_in_threads([pausing] * PAUSING_THREADS, timeout=THREADS_END_SECONDS)
    assert seen_on == 0
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


def test_a_transfers_view_built_at_once_equals_the_one_its_constructor_builds() -> None:
    transfer = Transfer.record("t1", "alice", "bob", 7, "CREDITS", True, 60, {"k": "v"})
    view = TransferView.of(transfer)
    built = TransferView(
        **{f.name: getattr(view, f.name) for f in dataclasses.fields(TransferView)}
    )
    assert vars(view) == vars(built)
    assert view == built
    assert (view.id, view.amount, view.status, view.expires_at) == (
        "t1",
        7,
        "pending",
        transfer.created_on + timedelta(seconds=60),
    )
    assert view.metadata == {"k": "v"}
    assert view.metadata is not transfer.metadata


@given(st.text(max_size=40))
def test_stream_ids_are_the_uuid5_of_their_names(name: str) -> None:
    assert account_uuid(name) == uuid5(LEDGER_NAMESPACE, "account:" + name)
    assert transfer_uuid(name) == uuid5(LEDGER_NAMESPACE, "transfer:" + name)
    made, expected = name_uuid(name), uuid5(LEDGER_NAMESPACE, name)
    assert (made.int, made.is_safe, made.version, hash(made)) == (
        expected.int,
        expected.is_safe,
        5,
        hash(expected),
    )


def test_a_write_tells_each_events_position_by_the_event_and_by_its_stream() -> None:
    transfers = [
        Transfer.record(f"t{n}", "alice", "bob", 1, "CREDITS", False, None, {}) for n in range(3)
    ]
    events = [event for transfer in transfers for event in transfer.collect_events()]
    written = Written(events, [11, 12, 13])
    assert [written.position_of_event(event) for event in events] == [11, 12, 13]
    assert [written.position_of(t.id, Transfer.INITIAL_VERSION) for t in transfers] == [11, 12, 13]
    assert written.position_of(transfers[1].id) == 12
    assert written.commit == 13
    copy = dataclasses.replace(events[0])
    with pytest.raises(KeyError):
        written.position_of_event(copy)


def test_a_commands_time_holds_inside_its_block_and_the_outer_one_comes_back() -> None:
    """``command_time`` (a class-based context manager) restores what was set before it,
    when its block ends and when it raises, nested or not."""
    outer, inner = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert current_command_time() is None
    with command_time(outer):
        assert current_command_time() == outer
        seen: list[datetime | None] = []

        def refused_at(moment: datetime) -> None:
            with command_time(moment):
                seen.append(current_command_time())
                raise InsufficientFundsError("refused inside", account_id="a", available=0)

        with pytest.raises(InsufficientFundsError):
            refused_at(inner)
        assert seen == [inner]
        assert current_command_time() == outer
    assert current_command_time() is None


def test_a_collector_pause_is_one_shared_context_manager_that_nests() -> None:
    assert gc.isenabled()
    with collector_paused(), collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()

    def refused_while_paused() -> None:
        with collector_paused():
            raise InsufficientFundsError("refused inside", account_id="a", available=0)

    with pytest.raises(InsufficientFundsError):
        refused_while_paused()
    assert gc.isenabled()


CACHE_OPERATIONS: Final = st.lists(
    st.tuples(st.sampled_from(["put", "get", "evict"]), st.integers(0, 5)), max_size=40
)


@given(CACHE_OPERATIONS)
@example([("put", 0), ("put", 1), ("get", 0), ("put", 2)])  # a read keeps a0, a1 goes
@example([("put", 3), ("put", 4), ("get", 3), ("put", 5)])  # the same for transfers
def test_the_writers_cache_keeps_the_least_recently_used_out_as_a_plain_lru_would(
    operations: list[tuple[str, int]],
) -> None:
    """Accounts (ids 0-2) and transfers (3-5) each in their own LRU of two; ``get`` makes
    an entry the most recent and raises KeyError for one not cached."""
    aggregates: list[Account | Transfer] = [ledger_account(f"a{n}") for n in range(3)]
    aggregates += [
        Transfer.record(f"t{n}", "a0", "a1", 1, "CREDITS", False, None, {}) for n in range(3)
    ]
    cache = WriterCache(maxsize=2)
    model: dict[bool, list[UUID]] = {True: [], False: []}  # oldest first, by kind
    for operation, index in operations:
        aggregate = aggregates[index]
        kind = model[isinstance(aggregate, Account)]
        if operation == "put":
            cache.put(aggregate)
            if aggregate.id in kind:
                kind.remove(aggregate.id)
            kind.append(aggregate.id)
            del kind[:-2]
        elif operation == "get":
            if aggregate.id in kind:
                assert cache.get(aggregate.id) is aggregate
                kind.remove(aggregate.id)
                kind.append(aggregate.id)
            else:
                with pytest.raises(KeyError):
                    cache.get(aggregate.id)
        else:
            cache.evict(aggregate.id)
            if aggregate.id in kind:
                kind.remove(aggregate.id)
        assert [a.id in cache for a in aggregates] == [
            a.id in model[isinstance(a, Account)] for a in aggregates
        ]
