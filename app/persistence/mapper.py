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

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from app.domain.chain import ENCODED_FIELDS
from app.domain.commits import COMMIT_ID, COMMIT_LAST

_EMPTY_OBJECT: Final = b"{}"
# Set on the events of a write after they were built (app.domain.commits).
_COMMIT_MARKS: Final = 2


class ChainedMapper(Mapper[UUID]):
    # Pieces of the envelope, each encoded once: per event class (its topic and class
    # version), per aggregate topic, per set of fields left out, for the last time stamp
    # and the last commit (read and replaced whole: the writer is one thread, but safe).
    _class_pieces: dict[type, tuple[str, bytes]]
    _topic_pieces: dict[str, bytes]
    _left_out_pieces: dict[tuple[str, ...], bytes]
    _last_time: tuple[datetime, bytes] | None = None
    _last_commit: tuple[str, bytes] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._class_pieces = {}
        self._topic_pieces = {}
        self._left_out_pieces = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        return self.to_stored_events([domain_event])[0]

    def to_stored_events(self, domain_events: Sequence[Any]) -> list[StoredEvent]:
        """``to_stored_event`` of each event, in one loop (a batch of 1,000 transfers
        writes 3,000 events: the pieces are looked up once per run of equal ones)."""
        stored_events: list[StoredEvent] = []
        append = stored_events.append
        class_pieces = self._class_pieces
        new_stored_event = object.__new__
        set_state = object.__setattr__
        for domain_event in domain_events:
            state: dict[str, Any] = vars(domain_event)
            kept = state.get(ENCODED_FIELDS)
            if kept is None:
                append(super().to_stored_event(domain_event))
                continue
            encoded, left_out, size = kept
            marks = len(state) - size
            if marks == 0:
                commit = b""
            elif marks == _COMMIT_MARKS and COMMIT_ID in state and COMMIT_LAST in state:
                commit = self._commit_piece(state[COMMIT_ID], state[COMMIT_LAST])
            else:  # something else was added to the event since it was built
                append(super().to_stored_event(without_kept_bytes(domain_event)))
                continue
            pieces = class_pieces.get(type(domain_event))
            if pieces is None:
                pieces = self._pieces_of(type(domain_event))
            last_time = self._last_time
            if last_time is None or last_time[0] is not state["timestamp"]:
                last_time = self._time_piece(state["timestamp"])
            aggregate_topic = state.get("originator_topic")
            stored = b"".join(
                (
                    last_time[1],
                    b',"chain":"',
                    state["chain"].encode(),
                    b'"',
                    b"" if aggregate_topic is None else self._topic_piece(aggregate_topic),
                    self._left_out_piece(left_out) if left_out else b"",
                    pieces[1],
                    commit,
                    b"}" if encoded == _EMPTY_OBJECT else b"," + encoded[1:],
                )
            )
            if self.compressor:
                stored = self.compressor.compress(stored)
            if self.cipher:
                stored = self.cipher.encrypt(stored)
            # As the library builds the events it reads: its frozen dataclass's
            # constructor would only set the same four attributes one by one.
            stored_event = new_stored_event(StoredEvent)
            set_state(
                stored_event,
                "__dict__",
                {
                    "originator_id": state["originator_id"],
                    "originator_version": state["originator_version"],
                    "topic": pieces[0],
                    "state": stored,
                },
            )
            append(stored_event)
        return stored_events

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

    def _commit_piece(self, commit_id: str, commit_last: bool) -> bytes:
        last = self._last_commit
        if last is None or last[0] is not commit_id:
            last = self._last_commit = (commit_id, b',"commit_id":' + orjson.dumps(commit_id))
        return last[1] + (b',"commit_last":true' if commit_last else b',"commit_last":false')

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
