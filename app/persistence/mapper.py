"""The ledger's mapper: the library's ``Mapper``, writing each new event's fields as the
very bytes its hash-chain link covered (each event serialised and hashed once).

A chained event built by the write path (``app.domain.chain.chained_event``) keeps the
canonical JSON of the fields its link hashed (``ENCODED_FIELDS``). The stored state is
then one JSON object: the envelope the library's mapper would store besides (the time
stamp as the transcoder tags it, the link, the aggregate's topic for a first event, a
later version's fields left out of the link because they are None, the class version,
the commit marks), followed by those bytes' members. Keys are unique across the two
parts (the link covers no envelope field), so the document reads back to the state the
library's own mapper would have stored; ``tests/unit/test_mapper.py`` checks this for
every kind of event the commands write, and that the stored bytes hold the hashed ones.

The envelope is written here piece by piece (each piece encoded once and remembered: a
time stamp is shared by a whole command, a topic by a class), because it is the same few
keys for every event. An event with any attribute the write path did not put there
(``ENCODED_FIELDS`` counts them) is mapped by the library's own ``to_stored_event``, as
are snapshots and events with a time inside a field (a grant's terms).
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from app.domain.chain import ENCODED_FIELDS
from app.domain.commits import COMMIT_ID, COMMIT_LAST
from app.persistence.rows import StoredRows, row_of

_EMPTY_OBJECT: Final = b"{}"
# A stored state's pieces joined: as ``bytes`` for a stored event, as a ``bytearray`` for
# a row (what the SQLite recorder binds: one copy fewer).
_JOIN_BYTES: Final[Callable[[Iterable[bytes]], bytes | bytearray]] = b"".join
_JOIN_BYTEARRAY: Final[Callable[[Iterable[bytes]], bytes | bytearray]] = bytearray().join
# Set on the events of a write after they were built (app.domain.commits).
_COMMIT_MARKS: Final = 2


class ChainedMapper(Mapper[UUID]):
    # Pieces of the envelope, each encoded once: per event class (its topic and class
    # version), per aggregate topic, per set of fields left out, per shape (the three
    # together), for the last time stamp (read and replaced whole: the writer is one
    # thread, but safe); a commit's marks once per call of ``to_stored_events``.
    _class_pieces: dict[type, tuple[str, bytes]]
    _topic_pieces: dict[str, bytes]
    _left_out_pieces: dict[tuple[str, ...], bytes]
    _shape_pieces: dict[tuple[type, tuple[str, ...], str | None], tuple[str, bytes]]
    _last_time: tuple[datetime, bytes] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._class_pieces = {}
        self._topic_pieces = {}
        self._left_out_pieces = {}
        self._shape_pieces = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        return self.to_stored_events([domain_event])[0]

    def to_stored_events(self, domain_events: Sequence[Any]) -> list[StoredEvent]:
        """``to_stored_event`` of each event, in one loop (a batch of 1,000 transfers
        writes 3,000 events of a few shapes: each shape's pieces and the commit's are
        looked up once per run of equal ones, each time stamp formatted once)."""
        stored_events: list[StoredEvent] = []
        append = stored_events.append
        for mapped in self._mapped(domain_events, _JOIN_BYTES):
            if isinstance(mapped, StoredEvent):
                append(mapped)
                continue
            originator_id, version, topic, state = mapped
            # As the library builds the events it reads: its frozen dataclass's
            # constructor would only set the same four attributes one by one.
            stored_event = object.__new__(StoredEvent)
            object.__setattr__(
                stored_event,
                "__dict__",
                {
                    "originator_id": originator_id,
                    "originator_version": version,
                    "topic": topic,
                    "state": state,
                },
            )
            append(stored_event)
        return stored_events

    def to_stored_rows(self, domain_events: Sequence[Any]) -> StoredRows:
        """``to_stored_events``, kept as the rows the SQLite recorder binds, made in the
        same loop (app/persistence/rows.py): each row equals the one the recorder
        would make of the stored event ``to_stored_events`` answers."""
        stored_rows = StoredRows()
        append_row, append_id = stored_rows.rows.append, stored_rows.originator_ids.append
        for mapped in self._mapped(domain_events, _JOIN_BYTEARRAY):
            if isinstance(mapped, StoredEvent):
                append_row(row_of(mapped))
                append_id(mapped.originator_id)
                continue
            originator_id, version, topic, state = mapped
            append_row(
                (
                    # What ``UUID.hex`` answers, without its Python-level property call.
                    f"{originator_id.int:032x}"
                    if isinstance(originator_id, UUID)
                    else originator_id,
                    version,
                    topic,
                    state if type(state) is bytearray else bytearray(state),
                )
            )
            append_id(originator_id)
        return stored_rows

    def _mapped(
        self, domain_events: Sequence[Any], join: Callable[[Iterable[bytes]], bytes | bytearray]
    ) -> Iterator[StoredEvent | tuple[Any, int, str, bytes | bytearray]]:
        """Each event mapped: its stream id, version, topic and stored state (its pieces
        put together by ``join``), or the library's own ``StoredEvent`` of it when it
        was not built by the write path as it is now."""
        shapes = self._shape_pieces
        last_time = self._last_time
        times: dict[int, tuple[datetime, bytes]] = {}
        commit_id: str | None = None
        commit_pieces = (b"", b"")
        transform = self.compressor is not None or self.cipher is not None
        for domain_event in domain_events:
            state: dict[str, Any] = vars(domain_event)
            kept = state.get(ENCODED_FIELDS)
            if kept is None:
                yield super().to_stored_event(domain_event)
                continue
            encoded, left_out, size = kept
            marks = len(state) - size
            if marks == 0:
                commit = b""
            elif marks == _COMMIT_MARKS and COMMIT_ID in state and COMMIT_LAST in state:
                if state[COMMIT_ID] is not commit_id:
                    commit_id = state[COMMIT_ID]
                    commit_pieces = self._commit_pieces(commit_id)
                commit = commit_pieces[1] if state[COMMIT_LAST] else commit_pieces[0]
            else:  # something else was added to the event since it was built
                yield super().to_stored_event(without_kept_bytes(domain_event))
                continue
            shape = (type(domain_event), left_out, state.get("originator_topic"))
            pieces = shapes.get(shape)
            if pieces is None:
                pieces = self._pieces_of_shape(shape)
            moment = state["timestamp"]
            if last_time is None or last_time[0] is not moment:
                # A group's events come aggregate by aggregate, each command at its own
                # moment: each moment formatted once per call (keyed by the object,
                # alive in its event for the whole call, as ``is`` compares).
                last_time = times.get(id(moment))
                if last_time is None:
                    last_time = times[id(moment)] = self._time_piece(moment)
            stored = join(
                (
                    last_time[1],
                    b',"chain":"',
                    state["chain"].encode(),
                    pieces[1],
                    commit,
                    b"}" if encoded == _EMPTY_OBJECT else b"," + encoded[1:],
                )
            )
            if transform:
                stored = self._transformed(bytes(stored))
            yield (state["originator_id"], state["originator_version"], pieces[0], stored)

    def _transformed(self, stored: bytes) -> bytes:
        if self.compressor:
            stored = self.compressor.compress(stored)
        if self.cipher:
            stored = self.cipher.encrypt(stored)
        return stored

    def _pieces_of_shape(
        self, shape: tuple[type, tuple[str, ...], str | None]
    ) -> tuple[str, bytes]:
        """The event class's topic, and what its stored state holds from the link's closing
        quote to the commit marks: the aggregate's topic (a first event), the fields
        left out of the link, the class version."""
        event_class, left_out, aggregate_topic = shape
        topic, version_piece = self._pieces_of(event_class)
        between = b"".join(
            (
                b'"',
                b"" if aggregate_topic is None else self._topic_piece(aggregate_topic),
                self._left_out_piece(left_out) if left_out else b"",
                version_piece,
            )
        )
        pieces = self._shape_pieces[shape] = (topic, between)
        return pieces

    def _pieces_of(self, event_class: type) -> tuple[str, bytes]:
        pieces = self._class_pieces.get(event_class)
        if pieces is None:
            class_version = getattr(event_class, "class_version", 1)
            version_piece = b',"class_version":%d' % class_version if class_version > 1 else b""
            pieces = self._class_pieces[event_class] = (get_topic(event_class), version_piece)
        return pieces

    def _time_piece(self, moment: datetime) -> tuple[datetime, bytes]:
        tagged = self.transcoder.encode({"timestamp": moment})  # {"timestamp":{…}}
        last = self._last_time = (moment, b"{" + tagged[1:-1])
        return last

    def _commit_pieces(self, commit_id: str) -> tuple[bytes, bytes]:
        """The commit marks of an event that does not end its commit, and of one that does."""
        commit = b',"commit_id":' + orjson.dumps(commit_id)
        return commit + b',"commit_last":false', commit + b',"commit_last":true'

    def _topic_piece(self, aggregate_topic: str) -> bytes:
        piece = self._topic_pieces.get(aggregate_topic)
        if piece is None:
            piece = b',"originator_topic":' + orjson.dumps(aggregate_topic)
            self._topic_pieces[aggregate_topic] = piece
        return piece

    def _left_out_piece(self, left_out: tuple[str, ...]) -> bytes:
        piece = self._left_out_pieces.get(left_out)
        if piece is None:
            piece = b"".join(b"," + orjson.dumps(name) + b":null" for name in left_out)
            self._left_out_pieces[left_out] = piece
        return piece


def without_kept_bytes(domain_event: Any) -> Any:
    """A copy of the event without the kept bytes (for the library's own mapping)."""
    copy = object.__new__(type(domain_event))
    state = {k: v for k, v in vars(domain_event).items() if k != ENCODED_FIELDS}
    object.__setattr__(copy, "__dict__", state)
    return copy
