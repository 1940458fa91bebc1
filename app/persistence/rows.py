"""A write's stored events as the rows of the library's SQLite events table, made by the
mapper in the loop that encodes them (``ChainedMapper.to_stored_rows``).

The SQLite recorder binds each event as a row (its stream id as hex, its version, its
topic, its state as a ``bytearray``: ``ExecutemanySQLiteRecorder._rows``). Made from
``StoredEvent`` objects, that was a second pass over a batch's 3,000 events and 3,000
objects built only to be read once and freed: together some 2.5 µs of CPU per batch
transfer. ``StoredRows`` holds the rows themselves; it is still a sequence of
``StoredEvent`` (each built on access, equal to the one the mapper would have made), so
any other recorder or reader takes it as the library's.
"""

from collections.abc import Sequence
from typing import Final, overload
from uuid import UUID

from eventsourcing.persistence import StoredEvent

# One row of the events table as the SQLite recorder binds it: the stream id as hex (or
# the id itself when it is not a UUID), the version, the topic, the state. A ``bytearray``
# state: ``sqlite3`` binds a ``bytes`` parameter only after asking its adapter protocol,
# which raises and formats an ``AttributeError`` for every row.
Row = tuple[str, int, str, bytearray]
_UUID: Final = UUID


class StoredRows(Sequence[StoredEvent]):
    """Stored events kept as the rows the SQLite recorder binds (module docstring)."""

    __slots__ = ("originator_ids", "rows")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        # Each row's stream id as the event had it (a row holds its text).
        self.originator_ids: list[UUID | str] = []

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> StoredEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StoredEvent]: ...

    def __getitem__(self, index: int | slice) -> StoredEvent | Sequence[StoredEvent]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.rows)))]
        _, version, topic, state = self.rows[index]
        return StoredEvent(self.originator_ids[index], version, topic, bytes(state))


def row_of(stored: StoredEvent) -> Row:
    """The row the SQLite recorder binds for a stored event."""
    originator_id = stored.originator_id
    return (
        # What ``UUID.hex`` answers, without its Python-level property call.
        f"{originator_id.int:032x}" if isinstance(originator_id, _UUID) else originator_id,
        stored.originator_version,
        stored.topic,
        bytearray(stored.state),
    )
