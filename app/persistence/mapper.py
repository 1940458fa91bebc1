"""The ledger's mapper: the library's ``Mapper``, writing each new event's fields as the
very bytes its hash-chain link covered (each event serialised and hashed once).

A chained event built by the write path (``app.domain.chain.chained_event``) keeps the
canonical JSON of the fields its link hashed, with those fields (``ENCODED_FIELDS``).
The stored state is then the JSON object of everything else the library's mapper would
store (the time stamp, the link, the aggregate's topic, the commit marks, the class
version, and a later version's fields left out of the link because they are None),
encoded by the transcoder, followed by those bytes' members. Keys are unique across the
two parts (the link covers no envelope field), so the document reads back to the state
the library's own mapper would have stored; ``tests/unit/test_mapper.py`` checks this
for every kind of event the commands write, and that the stored bytes hold the hashed
ones. Any other event (a snapshot, one with a time inside a field) is mapped by the
library's own ``to_stored_event``.
"""

from typing import Any, Final
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from app.domain.chain import ENCODED_FIELDS

# Not part of the stored state: the library stores the stream and version in columns.
_COLUMNS: Final = frozenset({"originator_id", "originator_version", ENCODED_FIELDS})
_EMPTY_OBJECT: Final = b"{}"


class ChainedMapper(Mapper[UUID]):
    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state: dict[str, Any] = vars(domain_event)
        kept = state.get(ENCODED_FIELDS)
        if kept is None:
            return super().to_stored_event(domain_event)
        encoded, hashed = kept
        envelope = {k: v for k, v in state.items() if k not in hashed and k not in _COLUMNS}
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            envelope["class_version"] = class_version
        head = self.transcoder.encode(envelope)  # never empty: it holds the time stamp
        stored = head if encoded == _EMPTY_OBJECT else head[:-1] + b"," + encoded[1:]
        if self.compressor:
            stored = self.compressor.compress(stored)
        if self.cipher:
            stored = self.cipher.encrypt(stored)
        return StoredEvent(
            originator_id=state["originator_id"],
            originator_version=state["originator_version"],
            topic=get_topic(type(domain_event)),
            state=stored,
        )
