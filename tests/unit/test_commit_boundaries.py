"""Commit boundaries are in the log: every event of one store write names its commit
and the last one says it ends it; the views and the audit's replay read that one fact
(and fall back to their earlier rules for events written before it existed)."""

import os
import random
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import pytest
from eventsourcing.persistence import Tracking

import app.application.ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.log import Instant, read_log
from app.audit.replay import replay
from app.domain.chain import first_broken_link
from app.domain.commits import (
    COMMIT_ID,
    COMMIT_LAST,
    commit_of,
    ends_commit,
    mark_commit,
    new_commit_id,
)
from app.persistence.stores import event_store_env
from projections.backends import LedgerView
from projections.runner import open_view
from projections.schema import APPLICATION_NAME

UNIT: Final = "CREDITS"
ONE_MICROSECOND: Final = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger(event_store_env("memory://")) as built:
        built.open_account(OpenAccount("bank", UNIT, allow_negative=True))
        built.open_account(OpenAccount("a", UNIT))
        yield built


def fold(events: list[tuple[int, Any]], folder: Path) -> LedgerView:
    view = open_view(f"sqlite:///{folder / 'views.sqlite'}", 1)
    view.apply_events([(event, Tracking(APPLICATION_NAME, p)) for p, event in events])
    return view


def unmarked(events: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """The same events as a writer from before the marks would have stored them."""
    for _, event in events:
        event.__dict__.pop(COMMIT_ID, None)
        event.__dict__.pop(COMMIT_LAST, None)
    return events


def test_every_event_of_a_write_names_its_commit_and_only_the_last_ends_it(
    ledger: Ledger,
) -> None:
    first = ledger.record_transfer(RecordTransfer("t1", "bank", "a", 5))
    second = ledger.record_transfer(RecordTransfer("t2", "bank", "a", 7))
    log = list(read_log(ledger))
    assert len(log) >= 8
    commits: dict[str, list[tuple[int, bool]]] = {}
    for position, event in log:
        commit_id = commit_of(event)
        assert commit_id is not None, position
        commits.setdefault(commit_id, []).append((position, bool(ends_commit(event))))
    assert len(commits) == 4  # two openings, two transfers: four writes
    ends = []
    for members in commits.values():
        positions = [position for position, _ in members]
        assert positions == list(range(positions[0], positions[-1] + 1)), "contiguous"
        assert [last for _, last in members] == [False] * (len(members) - 1) + [True]
        ends.append(positions[-1])
    assert ends[-2:] == [first.position, second.position]
    for stream in {event.originator_id for _, event in log}:
        assert first_broken_link(ledger.events.get(stream)) is None, "marks are not hashed"


def test_two_commands_stamped_in_the_same_microsecond_stay_two_commits(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "utc_now", lambda: ONE_MICROSECOND)
    before = ledger.recorder.max_notification_id() or 0
    first = ledger.record_transfer(RecordTransfer("t1", "bank", "a", 5))
    second = ledger.record_transfer(RecordTransfer("t2", "bank", "a", 7))
    log = list(read_log(ledger))
    stamped = [event.timestamp for position, event in log if position > before]
    assert set(stamped) == {ONE_MICROSECOND}, "both commands carry the very same time"
    inside_first = before + 1
    assert inside_first < first.position < second.position

    with tempfile.TemporaryDirectory() as folder:
        view = fold(log, Path(folder))
        assert view.commit_end(inside_first) == first.position
        at_first = view.balance_at_position("a", view.commit_end(inside_first))
        assert at_first is not None
        assert at_first.credits_posted == 5
    replayed = {account.id: account for account in replay(ledger, Instant(position=inside_first))}
    assert replayed["a"].credits_posted == 5

    # Without the marks (events stored before them), one time was read as one commit:
    # the fallback merges the two commands, which is why the writer now says where.
    with tempfile.TemporaryDirectory() as folder:
        legacy = fold(unmarked(log), Path(folder))
        assert legacy.commit_end(inside_first) == second.position


def test_events_stored_before_the_marks_still_split_into_commits_by_time(
    ledger: Ledger,
) -> None:
    ledger.record_transfer(RecordTransfer("t1", "bank", "a", 5))
    ledger.record_transfer(RecordTransfer("t2", "bank", "a", 7))
    log = list(read_log(ledger))
    with tempfile.TemporaryDirectory() as marked_folder, tempfile.TemporaryDirectory() as old:
        marked = fold(log, Path(marked_folder))
        expected = [marked.commit_end(position) for position, _ in log]
        legacy = fold(unmarked(log), Path(old))
        assert [legacy.commit_end(position) for position, _ in log] == expected
    assert all(ends_commit(event) is None for _, event in log)


def test_a_commit_is_named_without_the_operating_systems_entropy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each write's commit id comes from the process's generator: reading the system's
    entropy lets go of the interpreter lock, which the writer then waits to take back
    from the event loop (128 random bits all the same: ids of distinct commits differ)."""

    def no_entropy(size: int) -> bytes:
        raise AssertionError(f"the system's entropy read ({size} bytes)")

    monkeypatch.setattr(os, "urandom", no_entropy)
    names = {mark_commit([SimpleNamespace()]) for _ in range(1_000)}
    assert len(names) == 1_000
    assert all(len(name) == 32 and int(name, 16) >= 0 for name in names)


def test_commit_ids_do_not_follow_the_shared_generator() -> None:
    """Reseeding the ``random`` module's shared generator (as a test framework does per
    example) does not make two commits share an id."""
    random.seed(42)
    first = new_commit_id()
    random.seed(42)
    assert new_commit_id() != first


def test_a_forked_child_draws_commit_ids_of_its_own() -> None:
    """A child forked from a process draws other ids than its parent goes on drawing
    (a generator copied by the fork would repeat the parent's sequence)."""
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.close(reading)
        os.write(writing, new_commit_id().encode())
        os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        childs = pipe.read().decode()
    os.waitpid(child, 0)
    assert len(childs) == 32
    assert childs != new_commit_id()
