"""Each event is serialised and hashed once: the store writes the very bytes a chain link
hashed, and what it writes reads back as the library's own mapper would have stored it."""

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent

from app.application.commands import OpenAccount
from app.application.ledger import Ledger
from app.domain.account import Account
from app.domain.chain import ENCODED_FIELDS, GENESIS, first_broken_link
from app.domain.commits import mark_commit
from app.persistence.mapper import ChainedMapper, without_kept_bytes
from app.persistence.rows import StoredRows, row_of
from app.persistence.stores import event_store_env
from app.persistence.transcodings import register_domain_transcodings
from tests.unit.test_transcoder import write_history

Mapped = list[tuple[Any, StoredEvent]]


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Ledger, Mapped]]:
    """A ledger on a SQLite file that has written a varied history (grants with times
    inside their fields, holds, posts, a reversal, text past ASCII, a snapshot), with
    every event the mapper stored and what it stored."""
    seen: Mapped = []
    to_stored_events = ChainedMapper.to_stored_events
    to_stored_rows = ChainedMapper.to_stored_rows

    def recording(self: ChainedMapper, domain_events: Sequence[Any]) -> list[StoredEvent]:
        stored = to_stored_events(self, domain_events)
        seen.extend(zip(domain_events, stored, strict=True))
        return stored

    def recording_rows(self: ChainedMapper, domain_events: Sequence[Any]) -> StoredRows:
        stored = to_stored_rows(self, domain_events)
        seen.extend(zip(domain_events, stored, strict=True))  # each row as a StoredEvent
        return stored

    # Every event the ledger stores goes through one of these (to_stored_event included):
    # the rows on SQLite, the stored events elsewhere.
    monkeypatch.setattr(ChainedMapper, "to_stored_events", recording)
    monkeypatch.setattr(ChainedMapper, "to_stored_rows", recording_rows)
    with Ledger(event_store_env(f"sqlite:///{tmp_path / 'ledger.sqlite'}")) as ledger:
        write_history(ledger)
        ledger.update_account("bob", {"tier": "silver"})
        ledger.open_account(OpenAccount("idle", "CREDITS"))
        ledger.close_account("idle")  # an event with no fields of its own
        yield ledger, seen


def library_mapper() -> Mapper[Any]:
    transcoder = JSONTranscoder()
    Ledger.register_transcodings(Ledger.__new__(Ledger), transcoder)
    register_domain_transcodings(transcoder)
    return Mapper(transcoder=transcoder)


def test_what_is_stored_reads_back_as_the_librarys_own_mapper_would_store_it(
    mapped: tuple[Ledger, Mapped],
) -> None:
    _, seen = mapped
    library = library_mapper()
    assert len(seen) > 1_000
    for event, stored in seen:
        theirs = library.to_stored_event(without_kept_bytes(event))
        assert (stored.originator_id, stored.originator_version, stored.topic) == (
            theirs.originator_id,
            theirs.originator_version,
            theirs.topic,
        )
        assert orjson.loads(stored.state) == json.loads(theirs.state), stored.topic


def test_the_bytes_a_link_hashed_are_the_bytes_stored(mapped: tuple[Ledger, Mapped]) -> None:
    _, seen = mapped
    kept = [(event, stored) for event, stored in seen if ENCODED_FIELDS in vars(event)]
    # Everything but the snapshot and the events with a time inside a field (a grant's).
    assert len(kept) >= len(seen) - 5
    assert {type(event).__qualname__ for event, _ in kept} >= {
        "Account.Opened",
        "Account.Updated",
        "Account.Closed",
        "Account.Debited",
        "Account.Credited",
        "Account.DebitReserved",
        "Account.DebitHoldSettled",
        "Transfer.TransferRecorded",
        "Transfer.PendingPosted",
        "Transfer.Reversed",
    }
    links = {
        (e.originator_id, e.originator_version): e.chain for e, _ in seen if hasattr(e, "chain")
    }
    for event, stored in kept:
        encoded, _, _ = vars(event)[ENCODED_FIELDS]
        assert encoded[1:] in stored.state  # the fields' members, byte for byte
        version = event.originator_version
        head = orjson.dumps(
            [
                links[event.originator_id, version - 1] if version else GENESIS,
                type(event).__qualname__,
                event.originator_id.hex,
                event.originator_version,
                event.timestamp.isoformat(),
            ]
        )
        assert hashlib.sha256(head[:-1] + b"," + encoded + b"]").hexdigest() == event.chain


def test_every_stored_stream_verifies_and_reads_back(mapped: tuple[Ledger, Mapped]) -> None:
    ledger, seen = mapped
    streams = {event.originator_id for event, _ in seen}
    for stream in streams:
        events = list(ledger.events.get(stream))
        assert events, stream
        assert first_broken_link(events) is None
    assert ledger.get_account("alice").balance == ledger.account_lots("alice").balance


def test_an_event_given_another_attribute_after_it_was_built_is_stored_whole() -> None:
    account = Account.open("late", "CREDITS", False, 0, {"tier": "a"})
    (event,) = account.collect_events()
    mark_commit([event])
    vars(event)["note"] = "set after the link"  # neither hashed nor a commit mark
    with Ledger(event_store_env("memory://")) as ledger:
        stored = ledger.mapper.to_stored_event(event)
    state = orjson.loads(stored.state)
    assert state["note"] == "set after the link"
    assert state == json.loads(library_mapper().to_stored_event(without_kept_bytes(event)).state)


def with_a_late_field(seen: Mapped) -> list[Any]:
    """The events seen, with one among them that had a field set after its link (so the
    library maps it, among the others)."""
    events = [event for event, _ in seen]
    odd = Account.open("odd", "CREDITS", False, 0, {})
    (late,) = odd.collect_events()
    vars(late)["note"] = "set after the link"
    events.insert(len(events) // 2, late)
    return events


def test_events_mapped_together_are_stored_as_each_mapped_alone(
    mapped: tuple[Ledger, Mapped],
) -> None:
    ledger, seen = mapped
    assert isinstance(ledger.mapper, ChainedMapper)
    events = with_a_late_field(seen)
    together = ledger.mapper.to_stored_events(events)
    alone = [ledger.mapper.to_stored_event(event) for event in events]
    assert [vars(stored) for stored in together] == [vars(stored) for stored in alone]
    # ... and as they were stored when written
    assert [vars(stored) for stored in together[:10]] == [vars(first) for _, first in seen[:10]]


def test_rows_mapped_together_are_the_rows_the_recorder_makes_of_the_stored_events(
    mapped: tuple[Ledger, Mapped],
) -> None:
    """What the SQLite recorder binds is the same whether the mapper made the rows
    (``to_stored_rows``) or the recorder made them of stored events; and the rows read as
    those very stored events."""
    ledger, seen = mapped
    assert isinstance(ledger.mapper, ChainedMapper)
    events = with_a_late_field(seen)
    assert any(ENCODED_FIELDS not in vars(event) for event in events)  # a snapshot, too
    stored_events = ledger.mapper.to_stored_events(events)
    rows = ledger.mapper.to_stored_rows(events)
    assert rows.rows == [row_of(stored) for stored in stored_events]
    assert all(type(row[3]) is bytearray for row in rows.rows)
    assert len(rows) == len(stored_events)
    assert [vars(stored) for stored in rows] == [vars(stored) for stored in stored_events]
    assert [vars(stored) for stored in rows[2:5]] == [vars(s) for s in stored_events[2:5]]


def test_the_recorder_stores_the_mappers_rows_as_it_stores_the_stored_events(
    mapped: tuple[Ledger, Mapped], tmp_path: Path
) -> None:
    ledger, seen = mapped
    assert isinstance(ledger.mapper, ChainedMapper)
    # One of each stream's versions (a snapshot was mapped too, at an event's version).
    keyed = {(event.originator_id, event.originator_version): event for event, _ in seen}
    events = list(keyed.values())
    tables = []
    for name, stored in (
        ("rows", ledger.mapper.to_stored_rows(events)),
        ("events", ledger.mapper.to_stored_events(events)),
    ):
        with Ledger(event_store_env(f"sqlite:///{tmp_path / name}.sqlite")) as other:
            assert other.recorder.insert_events(stored) == list(range(1, len(events) + 1))
            tables.append(other.recorder.select_notifications(1, len(events) + 1))
    assert [vars(n) for n in tables[0]] == [vars(n) for n in tables[1]]
    assert len(tables[0]) == len(events)


def test_each_moment_is_formatted_once_per_call_however_its_events_are_interleaved(
    mapped: tuple[Ledger, Mapped], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, seen = mapped
    mapper = ledger.mapper
    assert isinstance(mapper, ChainedMapper)
    events = [event for event, _ in seen if ENCODED_FIELDS in vars(event)]
    # A group's order: one event of each write's moment in turn, again and again.
    by_moment: dict[int, list[Any]] = {}
    for event in events:
        by_moment.setdefault(id(event.timestamp), []).append(event)
    interleaved = [
        queue[turn]
        for turn in range(max(map(len, by_moment.values())))
        for queue in by_moment.values()
        if turn < len(queue)
    ]
    assert len(by_moment) > 2  # many moments,
    assert interleaved != events  # taken in turn
    alone = [vars(mapper.to_stored_event(event)) for event in interleaved]
    formatted: list[object] = []
    time_piece = ChainedMapper._time_piece

    def counted(self: ChainedMapper, moment: Any) -> tuple[Any, bytes]:
        formatted.append(moment)
        return time_piece(self, moment)

    monkeypatch.setattr(ChainedMapper, "_time_piece", counted)
    together = [vars(stored) for stored in mapper.to_stored_events(interleaved)]
    assert together == alone
    assert len(formatted) == len(by_moment)
