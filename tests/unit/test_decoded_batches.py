"""The batches one reader of the log shares with the others of its process: a follower
at a position gets exactly the events after it (sliced from a batch that holds its
successor), nothing when what is held begins further on or nothing comes in time, and
the newest batches only, within the bound."""

import threading
from uuid import uuid4

from eventsourcing.persistence import Notification

from app.persistence.decoding import DecodedBatches

WAIT_SECONDS = 5.0


def stretch(first: int, last: int, stride: int = 1) -> list[Notification]:
    stream = uuid4()
    return [
        Notification(
            id=position, originator_id=stream, originator_version=position, topic="t", state=b""
        )
        for position in range(first, last + 1, stride)
    ]


def offer(batches: DecodedBatches, after: int, notifications: list[Notification]) -> None:
    batches.offer(after, notifications, [f"event {n.id}" for n in notifications])


def test_a_follower_gets_the_events_right_after_its_position_and_no_others() -> None:
    batches = DecodedBatches()
    offer(batches, 0, stretch(1, 10))
    offer(batches, 10, stretch(13, 40, stride=3))  # gaps in positions, as on KurrentDB
    whole = batches.after(0, 0)
    assert whole is not None
    assert [n.id for n in whole.notifications] == list(range(1, 11))
    part = batches.after(4, 0)
    assert part is not None
    assert part.after == 4
    assert [n.id for n in part.notifications] == list(range(5, 11))
    assert part.events == [f"event {i}" for i in range(5, 11)]
    between = batches.after(14, 0)  # inside a gap: the next one held is its successor
    assert between is not None
    assert [n.id for n in between.notifications] == list(range(16, 41, 3))
    assert between.last == 40


def test_a_follower_behind_what_is_held_gets_nothing_and_reads_the_log_itself() -> None:
    batches = DecodedBatches()
    offer(batches, 20, stretch(21, 30))
    assert batches.after(5, WAIT_SECONDS) is None  # at once: 6..20 are not held
    assert batches.begin_after(5)
    assert not batches.begin_after(20)  # joins on
    assert not batches.begin_after(25)
    assert not batches.begin_after(30)  # ahead of everything held: waits for more


def test_a_follower_ahead_waits_for_the_next_batch_at_most_its_timeout() -> None:
    batches = DecodedBatches()
    offer(batches, 0, stretch(1, 10))
    assert batches.after(10, 0.05) is None

    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(batches.after(10, WAIT_SECONDS)))
    waiting.start()
    offer(batches, 10, stretch(11, 12))
    waiting.join(WAIT_SECONDS)
    assert not waiting.is_alive()
    assert got[0] is not None
    assert [n.id for n in got[0].notifications] == [11, 12]  # type: ignore[attr-defined]


def test_only_the_newest_events_are_kept_and_always_the_newest_batch() -> None:
    batches = DecodedBatches(events_max=15)
    offer(batches, 0, stretch(1, 10))
    offer(batches, 10, stretch(11, 20))
    assert batches.after(0, 0) is None  # 1..10 dropped: begins further on
    newest = batches.after(10, 0)
    assert newest is not None
    assert newest.last == 20
    offer(batches, 20, stretch(21, 60))  # larger than the bound: kept alone
    assert batches.after(10, 0) is None
    kept = batches.after(20, 0)
    assert kept is not None
    assert kept.last == 60
