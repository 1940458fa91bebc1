"""A new transfer's id is taken as absent without asking the store (no existence query
per group): when the id exists after all (a resent command the writer no longer holds in
its cache), the store's unique key refuses the write, and the command runs again and
answers exactly as a replay would, while the other commands of its group still commit."""

from collections.abc import Iterator
from uuid import UUID

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import IdempotencyConflictError
from app.domain.values import transfer_uuid
from tests.conftest import store_env


@pytest.fixture
def first(shared_url: str) -> Iterator[Ledger]:
    """A ledger that records the original transfers."""
    ledger = Ledger(store_env(shared_url))
    ledger.open_account(OpenAccount("alice", "CREDITS", allow_negative=False))
    ledger.open_account(OpenAccount("bob", "CREDITS", allow_negative=True))
    ledger.record_transfer(RecordTransfer("fund", "bob", "alice", 10))
    yield ledger
    ledger.close()


@pytest.fixture
def restarted(first: Ledger, shared_url: str) -> Iterator[Ledger]:
    """Another ledger on the same store: its writer's cache holds none of the transfers."""
    ledger = Ledger(store_env(shared_url))
    yield ledger
    ledger.close()


def asked_for(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """Every id the ledger asks the store about with an existence query, from now on."""
    asked: list[UUID] = []
    original = ledger.absent_streams

    def absent_streams(originator_ids: list[UUID]) -> set[UUID] | None:
        asked.extend(originator_ids)
        return original(originator_ids)

    monkeypatch.setattr(ledger, "absent_streams", absent_streams)
    return asked


def test_a_new_transfer_is_written_without_an_existence_query(
    first: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = asked_for(first, monkeypatch)
    outcome = first.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    assert outcome.created
    assert asked == []
    assert first.get_account("alice").balance == 7


def test_a_resent_transfer_the_writer_no_longer_holds_answers_as_the_replay(
    first: Ledger, restarted: Ledger
) -> None:
    original = first.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    again = restarted.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    assert not again.created
    assert again.position == original.position
    assert again.transfer == original.transfer
    assert restarted.get_account("alice").balance == 7  # moved once
    # A resent command is not another process's write: no lock, no catch-up mode.
    assert restarted.conflicts == 0
    assert restarted.most_races_lost == 0
    assert restarted.locked_writes == 0


def test_a_resent_transfer_with_another_body_is_refused_as_before(
    first: Ledger, restarted: Ledger
) -> None:
    first.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    with pytest.raises(IdempotencyConflictError):
        restarted.record_transfer(RecordTransfer("t1", "alice", "bob", 4))
    assert restarted.get_account("alice").balance == 7


def test_a_resent_transfer_that_would_now_be_refused_still_answers_as_the_replay(
    first: Ledger, restarted: Ledger
) -> None:
    """Alice's funds are gone since: the resend must not answer insufficient funds."""
    original = first.record_transfer(RecordTransfer("t1", "alice", "bob", 6))
    first.record_transfer(RecordTransfer("t2", "alice", "bob", 4))
    again = restarted.record_transfer(RecordTransfer("t1", "alice", "bob", 6))
    assert not again.created
    assert again.position == original.position
    assert restarted.get_account("alice").balance == 0


def test_new_transfers_sharing_a_write_with_a_resent_one_still_commit_once(
    first: Ledger, restarted: Ledger
) -> None:
    original = first.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    commands = [
        RecordTransfer("t2", "alice", "bob", 1),
        RecordTransfer("t1", "alice", "bob", 3),
        RecordTransfer("t3", "alice", "bob", 2),
    ]
    outcome = restarted.record_batch(commands, atomic=False)
    created = [getattr(result, "created", result) for result in outcome.results]
    assert created == [True, False, True]
    assert outcome.results[1].position == original.position  # type: ignore[union-attr]
    assert restarted.get_account("alice").balance == 4
    # Resent on its own again: still the same replay, and nothing moved twice.
    assert not restarted.record_batch(commands, atomic=False).results[0].created  # type: ignore[union-attr]
    assert restarted.get_account("alice").balance == 4


def test_an_atomic_batch_holding_a_resent_transfer_answers_the_replay_inside_it(
    first: Ledger, restarted: Ledger
) -> None:
    first.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    commands = [RecordTransfer("t1", "alice", "bob", 3), RecordTransfer("t2", "alice", "bob", 2)]
    outcome = restarted.record_batch(commands, atomic=True)
    assert [result.created for result in outcome.results] == [False, True]  # type: ignore[union-attr]
    assert restarted.get_account("alice").balance == 5


def test_every_backend_refuses_a_presumed_absent_id_that_exists_and_answers_the_replay(
    ledger: Ledger,
) -> None:
    """The same story on each store's own recorder (the in-memory one and KurrentDB's
    refuse through other paths than SQL's unique key): the writer forgets the transfer,
    as a restarted one would, and the resends answer as replays."""
    ledger.open_account(OpenAccount("alice", "CREDITS", allow_negative=False))
    ledger.open_account(OpenAccount("bob", "CREDITS", allow_negative=True))
    ledger.record_transfer(RecordTransfer("fund", "bob", "alice", 10))
    original = ledger.record_transfer(RecordTransfer("t1", "alice", "bob", 6))
    ledger.record_transfer(RecordTransfer("t2", "alice", "bob", 4))
    ledger.evict(transfer_uuid("t1"))
    again = ledger.record_transfer(RecordTransfer("t1", "alice", "bob", 6))
    assert not again.created
    assert again.position == original.position
    ledger.evict(transfer_uuid("t1"))
    with pytest.raises(IdempotencyConflictError):
        ledger.record_transfer(RecordTransfer("t1", "alice", "bob", 5))
    ledger.evict(transfer_uuid("t1"))
    commands = [RecordTransfer("t1", "alice", "bob", 6), RecordTransfer("t3", "bob", "alice", 1)]
    outcome = ledger.record_batch(commands, atomic=True)
    assert [result.created for result in outcome.results] == [False, True]  # type: ignore[union-attr]
    assert ledger.get_account("alice").balance == 1
    assert ledger.conflicts == 0


def test_ids_found_to_exist_are_remembered_within_a_bound(
    first: Ledger, restarted: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resent command abandoned before it runs again (its deadline passed) leaves its
    id remembered; past the bound only the latest are kept, and a resend still answers
    as the replay (the store refuses a forgotten id again and it is found again)."""
    monkeypatch.setattr("app.application.ledger.FOUND_EXISTING_MAX", 2)
    abandoned = {transfer_uuid(f"abandoned-{n}") for n in range(3)}
    restarted.remember_existing(abandoned)
    assert len(restarted.presumed_absent([transfer_uuid("t9")])) == 1
    assert restarted.presumed_absent(sorted(abandoned)) == set()  # held: read, not presumed
    restarted.remember_existing(abandoned)
    latest = {transfer_uuid("latest")}
    restarted.remember_existing(latest)
    assert restarted.presumed_absent([*sorted(abandoned), *latest]) == abandoned
    original = first.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    again = restarted.record_transfer(RecordTransfer("t1", "alice", "bob", 3))
    assert not again.created
    assert again.position == original.position
