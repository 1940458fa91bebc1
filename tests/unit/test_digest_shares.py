"""The log digest worker takes what the views' runner of its process has read of the
log (``DecodedBatches``) instead of reading it again: the same chain as over the log
itself, checkpoints included, and the log read by itself only when nothing shared
joins on to its head."""

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
from eventsourcing.persistence import ApplicationRecorder, Notification

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.anchors import Anchor, take_anchor
from app.persistence.decoding import DecodedBatches
from app.persistence.stores import event_store_env, sqlite_url
from projections import digest
from projections.digest import DigestCheckpoints, keep_digest
from projections.runner import start_runner
from tests.support.threads import assert_all_end
from tests.support.waiting import eventually

WAIT_SECONDS: Final = 60.0


class CountingReads:
    """A recorder whose reads of the log count the events they return."""

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder
        self.events_read = 0

    def select_notifications(self, *args: Any, **kwargs: Any) -> Sequence[Notification]:
        found = self.recorder.select_notifications(*args, **kwargs)
        self.events_read += len(found)
        return found


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(sqlite_url(tmp_path / "events.sqlite")))
    try:
        ledger.open_account(OpenAccount("funding", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("user", "CREDITS"))
        yield ledger
    finally:
        ledger.close()


def write(ledger: Ledger, prefix: str, count: int) -> int:
    ledger.record_batch(
        [RecordTransfer(f"{prefix}{n}", "funding", "user", 1) for n in range(count)],
        atomic=True,
    )
    return ledger.recorder.max_notification_id() or 0


def digest_at(checkpoints: DigestCheckpoints, position: int) -> bool:
    newest = checkpoints.newest()
    return newest is not None and newest.position == position


def run_digest(
    ledger: Ledger, checkpoints: DigestCheckpoints, shared: DecodedBatches
) -> tuple[CountingReads, threading.Event, threading.Thread]:
    reads, stopping = CountingReads(ledger.recorder), threading.Event()
    worker = threading.Thread(
        target=keep_digest,
        args=(reads, checkpoints, stopping, shared),
    )
    worker.start()
    return reads, stopping, worker


def test_the_digest_takes_what_the_runner_read_and_reads_nothing_itself(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rounds far enough apart that the runner (waiting at most 50 ms between reads) has
    # shared each write before the digest's second round after it.
    monkeypatch.setattr(digest, "DIGEST_INTERVAL_SECONDS", 0.3)
    views = sqlite_url(tmp_path / "views.sqlite")
    shared = DecodedBatches()
    runner = start_runner(sqlite_url(tmp_path / "events.sqlite"), views, 1, shared)
    checkpoints = DigestCheckpoints(views)
    try:
        first = write(ledger, "a", 50)
        runner.wait(first, timeout=WAIT_SECONDS)
        reads, stopping, worker = run_digest(ledger, checkpoints, shared)
        try:
            for prefix in ("b", "c", "d"):
                head = write(ledger, prefix, 30)
                runner.wait(head, timeout=WAIT_SECONDS)
                assert eventually(lambda at=head: digest_at(checkpoints, at), WAIT_SECONDS)  # type: ignore[misc]
        finally:
            stopping.set()
            assert_all_end([worker], WAIT_SECONDS)
    finally:
        runner.__exit__(None, None, None)

    assert reads.events_read == 0  # all of it came from the runner
    expected = take_anchor(ledger.recorder)  # the chain over the log itself
    newest = checkpoints.newest()
    assert newest is not None
    assert (newest.position, newest.digest, newest.events) == (
        expected.position,
        expected.digest,
        expected.events,
    )


def test_the_digest_reads_the_log_itself_when_nothing_shared_joins_on(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digest, "DIGEST_INTERVAL_SECONDS", 0.05)
    checkpoints = DigestCheckpoints(sqlite_url(tmp_path / "views.sqlite"))
    shared = DecodedBatches()
    head = write(ledger, "a", 20)
    later = ledger.recorder.select_notifications(start=head - 5, limit=100)
    shared.offer(head - 6, later, [None] * len(later))  # begins further on: no use
    reads, stopping, worker = run_digest(ledger, checkpoints, shared)
    try:
        assert eventually(lambda: digest_at(checkpoints, head), WAIT_SECONDS)
    finally:
        stopping.set()
        assert_all_end([worker], WAIT_SECONDS)
    assert reads.events_read >= head - 6
    expected = take_anchor(ledger.recorder)
    assert checkpoints.newest() is not None
    assert checkpoints.newest().digest == expected.digest  # type: ignore[union-attr]


def test_checkpoints_are_recorded_through_one_kept_connection_that_a_failure_drops(
    tmp_path: Path,
) -> None:
    views = tmp_path / "views.sqlite"
    checkpoints = DigestCheckpoints(sqlite_url(views))
    try:
        checkpoints.record(Anchor(3, "a" * 64, 3))
        kept = checkpoints._kept
        checkpoints.record(Anchor(6, "b" * 64, 6))
        assert checkpoints._kept is kept is not None
        assert checkpoints.newest() == Anchor(6, "b" * 64, 6)
        with sqlite3.connect(views) as other:
            other.execute("ALTER TABLE ledger_log_digest RENAME TO moved_away")
        with pytest.raises(sqlite3.OperationalError):
            checkpoints.record(Anchor(9, "c" * 64, 9))
        assert checkpoints._kept is None  # the next record connects afresh
        with sqlite3.connect(views) as other:
            other.execute("ALTER TABLE moved_away RENAME TO ledger_log_digest")
        checkpoints.record(Anchor(9, "c" * 64, 9))
        assert [anchor.position for anchor in checkpoints.all()] == [3, 6, 9]
    finally:
        checkpoints.close()
    assert checkpoints._kept is None


def test_a_digest_ahead_of_the_runner_waits_for_its_batches_instead_of_reading_the_log(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digest, "DIGEST_INTERVAL_SECONDS", 0.02)
    checkpoints = DigestCheckpoints(sqlite_url(tmp_path / "views.sqlite"))
    ahead = write(ledger, "a", 10)
    checkpoints.record(take_anchor(ledger.recorder))  # the digest starts at the head
    shared = DecodedBatches()
    behind = ledger.recorder.select_notifications(start=1, limit=3)
    shared.offer(0, behind, [None] * len(behind))  # the runner, sharing, is behind it
    head = write(ledger, "b", 10)  # the log goes on: the runner will bring it
    waits: list[bool] = []

    def noted(shared: DecodedBatches | None, position: int) -> bool:
        waits.append(behind_it(shared, position))
        return waits[-1]

    behind_it = digest._behind_it
    monkeypatch.setattr(digest, "_behind_it", noted)
    reads, stopping, worker = run_digest(ledger, checkpoints, shared)
    try:
        assert eventually(lambda: waits.count(True) >= 3, WAIT_SECONDS)
        later = ledger.recorder.select_notifications(start=ahead - 5, limit=100)
        shared.offer(ahead - 6, later, [None] * len(later))  # the runner catches up
        assert eventually(lambda: digest_at(checkpoints, head), WAIT_SECONDS)
    finally:
        stopping.set()
        assert_all_end([worker], WAIT_SECONDS)
    assert reads.events_read == 0
    newest, expected = checkpoints.newest(), take_anchor(ledger.recorder)
    assert newest is not None
    assert (newest.position, newest.digest, newest.events) == (
        expected.position,
        expected.digest,
        expected.events,
    )
