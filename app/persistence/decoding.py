"""Stored events read back as domain events, for the readers of the whole log (the
projections' catch-up runner, the public feed's projector), and the batches one of them
read and decoded, shared with the others of its process (``DecodedBatches``)."""

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast
from uuid import UUID

from eventsourcing.persistence import Mapper, Notification, StoredEvent, find_id_convertor
from eventsourcing.utils import resolve_topic

# The newest events ``DecodedBatches`` keeps for its followers (whole batches: at least
# the newest one, however large): a follower further behind reads the log itself. Ten
# atomic batches of 1,000 transfers (some 40 MB decoded): with 10,000 the feed, starved
# under such batches, fell out of the window and read and decoded the log itself, which
# cost it more and kept it out.
SHARED_EVENTS_MAX: Final = 30_000
# The most stream ids a ``StreamTexts`` keeps as text (some 150 bytes each).
STREAM_TEXTS_KEPT_MAX: Final = 20_000


def domain_event_reader(mapper: Mapper[Any]) -> Callable[[StoredEvent], Any]:
    """``mapper.to_domain_event``, with what depends on an event's topic alone (its
    class, class version and id convertor) found once per topic rather than once per
    event: the same steps otherwise (decode, the originator's id and version, each
    upcaster ``upcast_vN_vN+1`` in turn, the event built without its constructor).
    A mapper that decrypts or decompresses keeps its own method."""
    if mapper.cipher is not None or mapper.compressor is not None:
        return mapper.to_domain_event
    decode = mapper.transcoder.decode
    classes: dict[tuple[str, type], tuple[type, int, Callable[[Any], Any]]] = {}

    def to_domain_event(stored: StoredEvent) -> Any:
        key = (stored.topic, type(stored.originator_id))
        found = classes.get(key)
        if found is None:
            event_class = resolve_topic(stored.topic)
            found = classes[key] = (
                event_class,
                getattr(event_class, "class_version", 1),
                find_id_convertor(event_class, cast("Hashable", key[1])),
            )
        event_class, class_version, convert_id = found
        state = decode(stored.state)
        state["originator_id"] = convert_id(stored.originator_id)
        state["originator_version"] = stored.originator_version
        version = state.pop("class_version", 1)
        while version < class_version:
            getattr(event_class, f"upcast_v{version}_v{version + 1}")(state)
            version += 1
        event: Any = object.__new__(event_class)
        object.__setattr__(event, "__dict__", state)
        return event

    return to_domain_event


class StreamTexts:
    """Stream ids as text (``str(UUID)`` by default, or what ``write`` makes of one: the
    feed keys an account's state by the first, the views by its ``hex``), each written
    out once and then looked up by the id's integer (hashing a ``UUID`` calls back into
    Python). A reader of the log meets an account's id two or more times per transfer:
    ``UUID.__str__`` was the feed's largest Python cost of its own. At most ``kept_max``
    kept: past it, all of them are dropped and written out again as they come."""

    def __init__(
        self, write: Callable[[UUID], str] = str, kept_max: int = STREAM_TEXTS_KEPT_MAX
    ) -> None:
        self._texts: dict[int, str] = {}
        self._write = write
        self._kept_max = kept_max

    def of(self, stream_id: UUID) -> str:
        key = stream_id.int
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) >= self._kept_max:
                self._texts.clear()
            text = self._texts[key] = self._write(stream_id)
        return text

    def __len__(self) -> int:
        return len(self._texts)


@dataclass(frozen=True)
class DecodedBatch:
    """Every event of the log after ``after`` up to its last notification's position,
    in order: the stored notifications and their domain events, index for index."""

    after: int
    notifications: Sequence[Notification]
    events: Sequence[Any]

    @property
    def last(self) -> int:
        return self.notifications[-1].id


class DecodedBatches:
    """The batches of the log one reader (the views' runner) has read and decoded,
    offered to followers in the same process (the feed projector) so that each event is
    read from the store and decoded once, not once per reader.

    Only whole stretches of the log are offered (a batch is everything after ``after``
    up to its end), so a follower at position P may take any batch that holds P's
    successor; a follower whose successor is no longer (or not) held reads the log
    itself. Bounded (``SHARED_EVENTS_MAX``) and never blocking the reader. The events are
    shared, not copied: their readers must not change them (no reader of the log does)."""

    def __init__(self, events_max: int = SHARED_EVENTS_MAX) -> None:
        self._batches: deque[DecodedBatch] = deque()
        self._events = 0
        self._events_max = events_max
        self._changed = threading.Condition()
        self._newest: tuple[int, float] | None = None

    def offer(
        self, after: int, notifications: Sequence[Notification], events: Sequence[Any]
    ) -> None:
        """Share the log's events after ``after``: all of them up to the last one's
        position, in order, ``events[i]`` decoded from ``notifications[i]``."""
        if not notifications:
            return
        with self._changed:
            self._batches.append(DecodedBatch(after, notifications, events))
            self._newest = (notifications[-1].id, time.monotonic())
            self._events += len(notifications)
            while self._events > self._events_max and len(self._batches) > 1:
                self._events -= len(self._batches.popleft().notifications)
            self._changed.notify_all()

    def after(self, position: int, timeout: float) -> DecodedBatch | None:
        """The shared events right after ``position`` (waiting up to ``timeout`` for
        some), or None: none came, or those held begin later (the follower reads the log
        itself up to them)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                newer = False
                for batch in self._batches:
                    if batch.last <= position:
                        continue
                    if batch.after == position:  # the follower's usual place: all of it
                        return batch
                    if batch.after < position:
                        ids = [notification.id for notification in batch.notifications]
                        start = bisect.bisect_right(ids, position)
                        if start == 0:
                            return batch
                        return DecodedBatch(
                            position, batch.notifications[start:], batch.events[start:]
                        )
                    newer = True
                remaining = deadline - time.monotonic()
                if newer or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def newest(self) -> tuple[int, float] | None:
        """The newest batch's last position and when it was offered (``time.monotonic``),
        or None before any."""
        with self._changed:
            return self._newest

    def begin_after(self, position: int) -> bool:
        """Whether what is held begins further on than ``position``'s successor: a
        follower there will not be offered its next events (it reads the log itself)."""
        with self._changed:
            later = [batch for batch in self._batches if batch.last > position]
            return bool(later) and all(batch.after > position for batch in later)
