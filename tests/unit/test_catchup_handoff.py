"""The catch-up runner's hand-off between its reader and writer threads: everything put
is taken once, in order, in bulk; the reader waits while it is full; the end of the
stream is seen by every later take; a stopping reader never waits forever."""

import threading
import time
from typing import Any, Final

from eventsourcing.persistence import Notification

from projections.catchup import Handoff

ITEMS: Final = 5_000
CAPACITY: Final = 64
WAIT_SECONDS: Final = 10.0


def notification(number: int) -> Notification:
    return Notification(
        id=number, originator_id="s", originator_version=number, topic="t", state=b""
    )


def test_every_item_is_taken_once_in_order_through_a_small_handoff() -> None:
    handoff = Handoff(CAPACITY)
    stopping = threading.Event()
    largest_batch = 0

    def read() -> None:
        for number in range(1, ITEMS + 1):
            assert handoff.put(notification(number), stopping)
        handoff.put(None, stopping)

    reader = threading.Thread(target=read)
    reader.start()
    taken: list[int] = []
    batches = 0
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        batch, ended = handoff.take(1_000, 0.1)
        largest_batch = max(largest_batch, len(batch))
        taken += [item.id for item in batch]
        batches += bool(batch)
        if ended:
            break
    reader.join(WAIT_SECONDS)
    assert taken == list(range(1, ITEMS + 1))
    assert largest_batch <= CAPACITY, "the reader never ran more than capacity ahead"
    assert batches < ITEMS, "taken in bulk, not one by one"
    assert handoff.take(10, 0) == ([], True), "the end stays seen"


def test_a_take_waits_for_the_first_item_at_most_its_timeout() -> None:
    handoff = Handoff(CAPACITY)
    started = time.monotonic()
    assert handoff.take(10, 0.2) == ([], False)
    assert time.monotonic() - started >= 0.2
    stopping = threading.Event()
    threading.Timer(0.1, lambda: handoff.put(notification(1), stopping)).start()
    batch, ended = handoff.take(10, WAIT_SECONDS)
    assert [item.id for item in batch] == [1]
    assert not ended


def test_a_reader_waiting_for_room_gives_up_once_stopping() -> None:
    handoff = Handoff(2)
    stopping = threading.Event()
    assert handoff.put(notification(1), stopping)
    assert handoff.put(notification(2), stopping)
    outcome: list[Any] = []
    reader = threading.Thread(target=lambda: outcome.append(handoff.put(notification(3), stopping)))
    reader.start()
    time.sleep(0.2)
    assert outcome == [], "full: the reader waits"
    stopping.set()
    reader.join(WAIT_SECONDS)
    assert outcome == [False]
    assert [item.id for item in handoff.take(10, 0)[0]] == [1, 2]
