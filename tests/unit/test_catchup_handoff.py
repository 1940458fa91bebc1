"""The catch-up runner's hand-off between its reader and writer threads: everything put
is taken once, in order, in bulk; the reader waits while it is full; the end of the
stream is seen by every later take; a stopping reader never waits forever. And the
runner keeps the collector off the objects the process built before it started."""

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from eventsourcing.persistence import Notification

from app.persistence.stores import sqlite_url
from projections.catchup import Handoff
from tests.support.threads import assert_all_end

ITEMS: Final = 5_000
CAPACITY: Final = 64
WAIT_SECONDS: Final = 10.0
SUBPROCESS_SECONDS: Final = 120.0


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
    assert_all_end([reader], WAIT_SECONDS)
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
    assert_all_end([reader], WAIT_SECONDS)
    assert outcome == [False]
    assert [item.id for item in handoff.take(10, 0)[0]] == [1, 2]


FREEZE_PROBE: Final = """
import gc, sys
from projections.runner import start_runner
before = gc.get_freeze_count()
runner = start_runner(sys.argv[1], sys.argv[2], 1)
try:
    print(before, gc.get_freeze_count())
finally:
    runner.__exit__(None, None, None)
"""


def test_a_runner_takes_the_objects_alive_at_its_start_out_of_the_collectors_walks(
    tmp_path: Path,
) -> None:
    """In a fresh process (the freeze is once per process): nothing is frozen before
    the first runner starts, and the application it built is frozen after."""
    finished = subprocess.run(
        [
            sys.executable,
            "-c",
            FREEZE_PROBE,
            sqlite_url(tmp_path / "events.sqlite"),
            sqlite_url(tmp_path / "views.sqlite"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_SECONDS,
    )
    before, after = (int(part) for part in finished.stdout.split())
    assert before == 0
    assert after > 0
