"""The catch-up runner reads the log up to its head itself, batch after batch, and
subscribes only from there: a long catch-up is one thread (no hand-off per event, no
second thread taking the GIL from the writer), and events written afterwards still
arrive through the subscription. On SQLite it goes on reading the log itself (no
subscription, no thread but its writer), and so it does on PostgreSQL, waiting longer
between reads while the log is busy."""

import gc
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.postgres import LedgerPostgresApplicationRecorder
from app.persistence.sqlite_subscription import SubscribableSQLiteApplicationRecorder
from app.persistence.stores import event_store_env, sqlite_url
from projections import catchup
from projections.backends import WantedPosition
from projections.catchup import catch_up_batch_size
from projections.projection import PROJECTION_BATCH_MAX, RowWriter
from projections.runner import start_runner, view_class_for, view_env
from tests.support.waiting import eventually

UNIT: Final = "CREDITS"
# The runner's own reading takes this many events per batch here (a smaller log than
# with the default), and the log holds enough transfers (three events each) for several.
CATCH_UP_BATCH: Final = 400
TRANSFERS: Final = 1000
BATCH: Final = 500
WAIT_SECONDS: Final = 60.0
# A writer's pause long enough that a read waiting it out is plainly seen.
LONG_PAUSE_SECONDS: Final = 30.0
QUIET_PAUSE_SECONDS: Final = 0.25
# How long an ask lets a close in another thread go first (it waits for the ask).
CLOSE_WAIT_SECONDS: Final = 0.5
# Four pauses' reads, one woken and some slack for a slow machine (hundreds unpaused).
READS_IN_FOUR_PAUSES_MAX: Final = 8


@pytest.fixture
def log_urls(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    """The log and the views: SQLite files, or (``"postgres"`` as the indirect parameter)
    one PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
        return url, url
    return sqlite_url(tmp_path / "events.sqlite"), sqlite_url(tmp_path / "views.sqlite")


# The tests of a live runner that reads the log itself, on each store where it does.
on_both_stores = pytest.mark.parametrize("log_urls", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def ledger(log_urls: tuple[str, str]) -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(log_urls[0]))
    try:
        yield ledger
    finally:
        ledger.close()


@pytest.fixture(autouse=True)
def small_catch_up_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catchup, "catch_up_batch_size", lambda behind: CATCH_UP_BATCH)


@pytest.fixture
def subscribing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner subscribes to the SQLite log as it does to every other store's."""
    monkeypatch.setattr(catchup, "reads_the_log_itself", lambda recorder: False)


@pytest.fixture
def subscribed_from(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The position each subscription of the SQLite or PostgreSQL recorder starts after."""
    starts: list[int | None] = []
    for recorder_class in (
        SubscribableSQLiteApplicationRecorder,
        LedgerPostgresApplicationRecorder,
    ):

        def recording(
            self: Any,
            gt: int | None = None,
            topics: Any = (),
            subscribe: Any = recorder_class.subscribe,
        ) -> Any:
            starts.append(gt)
            return subscribe(self, gt=gt, topics=topics)

        monkeypatch.setattr(recorder_class, "subscribe", recording)
    return starts


def write_transfers(ledger: Ledger, count: int, prefix: str) -> int:
    """``count`` transfers from a funding account; the head position after them."""
    for start in range(0, count, BATCH):
        ledger.record_batch(
            [
                RecordTransfer(f"{prefix}:{number}", "funding", "user", 1)
                for number in range(start, min(count, start + BATCH))
            ],
            atomic=True,
        )
    head = ledger.recorder.max_notification_id()
    assert head is not None
    return head


@pytest.mark.usefixtures("subscribing")
def test_a_runner_reads_the_log_to_its_head_before_it_subscribes_from_there(
    ledger: Ledger, log_urls: tuple[str, str], subscribed_from: list[int | None]
) -> None:
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    head = write_transfers(ledger, TRANSFERS, "before")
    assert head > 2 * CATCH_UP_BATCH  # several batches of the runner's own reading

    runner = start_runner(*log_urls, 1)
    try:
        runner.wait(head, timeout=WAIT_SECONDS)
        # The one subscription starts where the runner's own reading ended: the head.
        assert eventually(lambda: bool(subscribed_from), WAIT_SECONDS)
        assert subscribed_from == [head]

        # Written after the catch-up: these come through the subscription.
        later = write_transfers(ledger, 10, "after")
        runner.wait(later, timeout=WAIT_SECONDS)
        balance = runner.view.balance("user")
        assert balance is not None
        assert balance.credits_posted == TRANSFERS + 10
    finally:
        runner.__exit__(None, None, None)


def test_a_runner_stopped_during_its_own_catch_up_ends_there_and_never_subscribes(
    ledger: Ledger,
    log_urls: tuple[str, str],
    subscribed_from: list[int | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    head = write_transfers(ledger, TRANSFERS, "before")
    # The writer's first batch waits until the runner has been told to stop.
    applying, stopped = threading.Event(), threading.Event()
    apply = RowWriter.apply_at_positions

    def apply_once_stopped(self: RowWriter, *args: Any) -> None:
        applying.set()
        assert stopped.wait(WAIT_SECONDS)
        apply(self, *args)

    monkeypatch.setattr(RowWriter, "apply_at_positions", apply_once_stopped)

    runner = start_runner(*log_urls, 1)
    try:
        assert applying.wait(WAIT_SECONDS)
        runner.stop()
        stopped.set()
    finally:
        runner.__exit__(None, None, None)

    assert subscribed_from == []
    # The batch it held was applied whole; nothing after it.
    assert runner.view.checkpoint() == CATCH_UP_BATCH < head


def test_a_catch_up_takes_a_tenth_of_what_it_has_to_do_per_batch_within_bounds() -> None:
    live = PROJECTION_BATCH_MAX
    largest = catchup.CATCH_UP_BATCH_MAX
    assert live < largest
    # A short catch-up (a test's log, a restart a little behind): live-sized batches, so
    # that it still commits its progress several times.
    assert catch_up_batch_size(0) == live
    assert catch_up_batch_size(live * catchup.CATCH_UP_COMMITS_MIN) == live
    # In between: a tenth of it.
    middle = (live + largest) // 2 * catchup.CATCH_UP_COMMITS_MIN
    assert catch_up_batch_size(middle) == middle // catchup.CATCH_UP_COMMITS_MIN
    # A long one (a rebuild, the benchmark): the largest batches.
    assert catch_up_batch_size(largest * catchup.CATCH_UP_COMMITS_MIN) == largest
    assert catch_up_batch_size(10**9) == largest


def test_the_collector_is_held_off_while_a_batch_is_applied_and_on_again_after(
    ledger: Ledger, log_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's events and rows are freed by reference counting: the collector's passes
    over them (set off by their number) are held off until the batch is written."""
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    head = write_transfers(ledger, TRANSFERS, "before")
    collecting: list[bool] = []
    apply = RowWriter.apply_at_positions

    def apply_noting_the_collector(self: RowWriter, *args: Any) -> None:
        collecting.append(gc.isenabled())
        apply(self, *args)

    monkeypatch.setattr(RowWriter, "apply_at_positions", apply_noting_the_collector)
    # The ledger's writer holds the collector off during its own writes: done by now.
    assert eventually(gc.isenabled, WAIT_SECONDS)

    runner = start_runner(*log_urls, 1)
    try:
        runner.wait(head, timeout=WAIT_SECONDS)
    finally:
        runner.__exit__(None, None, None)

    assert len(collecting) >= head // CATCH_UP_BATCH
    assert not any(collecting)
    assert gc.isenabled()


class _Deaf:
    """A subscription that never delivers (as the library's PostgreSQL subscription
    does with an event committed between its first pull and its LISTEN) until stopped."""

    def __init__(self) -> None:
        self._stopped = threading.Event()

    def __enter__(self) -> "_Deaf":
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()

    def __iter__(self) -> "_Deaf":
        return self

    def __next__(self) -> Any:
        self._stopped.wait()
        raise StopIteration

    def stop(self) -> None:
        self._stopped.set()


def test_an_event_the_subscription_never_delivers_is_applied_within_the_check_bound(
    ledger: Ledger, log_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write after the runner subscribed, which its subscription misses, still reaches
    the view within ``MISSED_CHECK_SECONDS`` (a caller waiting on the view for its own
    write is never stuck), and once only."""
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    deaf: list[_Deaf] = []

    def subscribe(self: Any, gt: int | None = None, topics: Any = ()) -> _Deaf:
        deaf.append(_Deaf())
        return deaf[-1]

    monkeypatch.setattr(SubscribableSQLiteApplicationRecorder, "subscribe", subscribe)
    monkeypatch.setattr(catchup, "reads_the_log_itself", lambda recorder: False)
    runner = start_runner(*log_urls, 1)
    try:
        assert eventually(lambda: bool(deaf), WAIT_SECONDS), "the runner subscribed"
        later = write_transfers(ledger, 3, "missed")

        runner.wait(later, timeout=WAIT_SECONDS)
        balance = runner.view.balance("user")
        assert balance is not None
        assert balance.credits_posted == 3
    finally:
        runner.__exit__(None, None, None)


class _Waits(threading.Event):
    """The runner's stop event, noting how long each of its waits was to last and how
    far the view was then."""

    def __init__(self, view: list[Any]) -> None:
        super().__init__()
        self.view = view
        self.waits: list[tuple[float | None, int]] = []

    def wait(self, timeout: float | None = None) -> bool:
        if self.view:
            self.waits.append((timeout, self.view[0].checkpoint()))
        return super().wait(timeout)


@on_both_stores
def test_on_sqlite_and_postgres_a_live_runner_reads_the_log_itself_and_never_subscribes(
    ledger: Ledger, log_urls: tuple[str, str], subscribed_from: list[int | None]
) -> None:
    """No subscription (its poll, pull and reader threads): the writer reads what was
    written after its catch-up itself, each write within a poll, exactly once."""
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    head = write_transfers(ledger, 10, "before")
    threads_before = set(threading.enumerate())
    runner = start_runner(*log_urls, 1)
    try:
        runner.wait(head, timeout=WAIT_SECONDS)
        for number in range(5):  # one at a time, each seen before the next is written
            ledger.record_transfer(RecordTransfer(f"after:{number}", "funding", "user", 1))
            runner.wait(ledger.recorder.max_notification_id() or 0, timeout=WAIT_SECONDS)
        # A batch of live writes larger than a live batch: read on at once, in order.
        later = write_transfers(ledger, PROJECTION_BATCH_MAX, "burst")
        runner.wait(later, timeout=WAIT_SECONDS)
        balance = runner.view.balance("user")
        assert balance is not None
        assert balance.credits_posted == 10 + 5 + PROJECTION_BATCH_MAX
        assert runner.view.checkpoint() == later
        started = [t.name for t in set(threading.enumerate()) - threads_before]
        # Its writer alone (and on PostgreSQL its connection pools' own threads).
        assert [n for n in started if not n.startswith("pool-")] == ["projection-writer"]
    finally:
        runner.__exit__(None, None, None)
    assert subscribed_from == []


@on_both_stores
def test_a_live_runner_waits_longer_between_its_reads_while_the_log_is_busy(
    ledger: Ledger, log_urls: tuple[str, str]
) -> None:
    """After a read that found a busy log's worth of events it waits
    ``BUSY_POLL_SECONDS`` (so that the next batch gathers more); after one that found
    a few or none, ``LIVE_POLL_SECONDS``; after a full batch, not at all."""
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    env = {**event_store_env(log_urls[0]), **view_env(log_urls[1], 1)}
    runner = catchup.CatchUpRunner(view_class_for(log_urls[1]), env)
    pauses: list[tuple[float, int]] = []
    pause = runner._pause

    def noting(seconds: float, writes: Any = None) -> bool:
        pauses.append((seconds, runner.view.checkpoint()))
        return pause(seconds, writes)

    runner._pause = noting  # type: ignore[method-assign]
    runner.__enter__()
    try:
        # Its catch-up done (a write before that would be read by the catch-up).
        assert eventually(lambda: bool(pauses), WAIT_SECONDS)
        busy = write_transfers(ledger, catchup.BUSY_EVENTS, "busy")  # 3 events each
        runner.wait(busy, timeout=WAIT_SECONDS)
        ledger.record_transfer(RecordTransfer("quiet", "funding", "user", 1))
        quiet = ledger.recorder.max_notification_id() or 0
        runner.wait(quiet, timeout=WAIT_SECONDS)
        # A read that found nothing: the short wait too, twice at least before the burst
        # is written (waited for: a busy machine can write it within one wait) on SQLite;
        # on PostgreSQL the next read follows the next write's notification, or the
        # missed-check bound.
        polls = 2 if log_urls[0].startswith("sqlite") else 1
        assert eventually(
            lambda: pauses.count((catchup.LIVE_POLL_SECONDS, quiet)) >= polls, WAIT_SECONDS
        )
        full = quiet + PROJECTION_BATCH_MAX
        ledger.record_batch(  # one commit of three live batches' worth of events
            [
                RecordTransfer(f"burst:{number}", "funding", "user", 1)
                for number in range(PROJECTION_BATCH_MAX)
            ],
            atomic=True,
        )
        burst = ledger.recorder.max_notification_id() or 0
        runner.wait(burst, timeout=WAIT_SECONDS)
        assert eventually(lambda: pauses[-1][1] == burst, WAIT_SECONDS)
    finally:
        runner.__exit__(None, None, None)

    def first_wait_at(checkpoint: int) -> float | None:
        return next(timeout for timeout, at in pauses if at == checkpoint)

    # Each pause after a read that found a busy log's worth (but not a full batch) is
    # the long one, wherever the runner's reads fell between the writes' commits.
    found = [
        (seconds, checkpoint - before)
        for (seconds, checkpoint), (_, before) in zip(pauses[1:], pauses, strict=False)
    ]
    after_busy = [
        seconds for seconds, count in found if catchup.BUSY_EVENTS <= count < PROJECTION_BATCH_MAX
    ]
    assert after_busy
    assert set(after_busy) == {catchup.BUSY_POLL_SECONDS}
    assert first_wait_at(quiet) == catchup.LIVE_POLL_SECONDS
    assert first_wait_at(full) == 0  # a full batch: more is waiting
    # ... and the next read takes twice as many (the rest of the burst, in one batch).
    assert first_wait_at(full + 2 * PROJECTION_BATCH_MAX) == 0
    assert catchup.LIVE_POLL_SECONDS < catchup.BUSY_POLL_SECONDS


def reads_from_head(
    runner: catchup.CatchUpRunner, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], int]:
    """The runner's reads of the log from when its views reached the log's head (one
    item each), and that head."""
    reads: list[int] = []
    select = runner.app.recorder.select_notifications

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return select(*args, **kwargs)

    monkeypatch.setattr(runner.app.recorder, "select_notifications", counting)
    head = ledger.recorder.max_notification_id() or 0
    assert eventually(lambda: runner.view.checkpoint() == head, WAIT_SECONDS)
    reads.clear()
    return reads, head


def applied(runner: catchup.CatchUpRunner, position: int) -> bool:
    """Whether the runner's views are at ``position`` (looked at without asking)."""
    return bool(runner.view.checkpoint() == position)


@pytest.mark.parametrize("log_urls", ["postgres"], indirect=True)
def test_on_postgres_an_idle_writer_reads_the_log_when_a_write_is_notified(
    ledger: Ledger, log_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN/NOTIFY: idle, the writer does not read the log on the clock; each write's
    notification has it read (here the bound without one is longer than the test)."""
    monkeypatch.setattr(catchup, "MISSED_CHECK_SECONDS", 2 * WAIT_SECONDS)
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    runner = start_runner(*log_urls, 1)
    try:
        reads, _ = reads_from_head(runner, ledger, monkeypatch)
        time.sleep(4 * QUIET_PAUSE_SECONDS)  # some fifty polls' time at LIVE_POLL_SECONDS
        assert len(reads) <= 1  # at most the read right after its catch-up
        for number in range(3):
            ledger.record_transfer(RecordTransfer(f"heard:{number}", "funding", "user", 1))
            written = ledger.recorder.max_notification_id() or 0
            # Looked at without asking (``wait`` would ask, and an ask wakes it too).
            assert eventually(partial(applied, runner, written), WAIT_SECONDS)
        balance = runner.view.balance("user")
        assert balance is not None
        assert balance.credits_posted == 3
        assert 3 <= len(reads) <= READS_IN_FOUR_PAUSES_MAX, len(reads)
    finally:
        runner.__exit__(None, None, None)


@on_both_stores
def test_a_reader_waiting_for_a_position_wakes_a_writer_pausing_while_the_log_is_busy(
    ledger: Ledger, log_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy log makes the writer pause long between reads; a read naming a fresh
    write's position (``wait_for``: ``min_position``, ``Ledger-Position``) does not wait
    out the pause: the writer looks at what readers ask for and reads at once."""
    monkeypatch.setattr(catchup, "BUSY_POLL_SECONDS", LONG_PAUSE_SECONDS)
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user", UNIT))
    runner = start_runner(*log_urls, 1)
    try:
        ledger.record_batch(  # one commit: one read finds a busy log's worth
            [RecordTransfer(f"busy:{n}", "funding", "user", 1) for n in range(catchup.BUSY_EVENTS)],
            atomic=True,
        )
        busy = ledger.recorder.max_notification_id() or 0
        # Looked at without asking: the writer is then in its long pause.
        assert eventually(lambda: runner.view.checkpoint() == busy, WAIT_SECONDS)
        ledger.record_transfer(RecordTransfer("fresh", "funding", "user", 1))
        fresh = ledger.recorder.max_notification_id() or 0
        started = time.monotonic()
        assert runner.view.wait_for(fresh, LONG_PAUSE_SECONDS / 2)
        assert time.monotonic() - started < LONG_PAUSE_SECONDS / 3
    finally:
        runner.__exit__(None, None, None)


@on_both_stores
def test_a_position_asked_for_beyond_the_log_does_not_keep_the_writer_reading(
    ledger: Ledger, log_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken for a position its read does not find, the writer pauses as before (it is
    not woken again for that position), instead of reading the log without pause."""
    monkeypatch.setattr(catchup, "LIVE_POLL_SECONDS", QUIET_PAUSE_SECONDS)
    ledger.open_account(OpenAccount("funding", UNIT, allow_negative=True))
    runner = start_runner(*log_urls, 1)
    try:
        reads, head = reads_from_head(runner, ledger, monkeypatch)
        # Asked, again as a waiting reader does, until the writer heard it and read (an
        # ask before the writer first looked is not heard on PostgreSQL).
        assert eventually(lambda: runner.view.ask_for(head + 1_000) or bool(reads), WAIT_SECONDS)
        reads.clear()
        time.sleep(4 * QUIET_PAUSE_SECONDS)
        assert len(reads) <= READS_IN_FOUR_PAUSES_MAX, len(reads)
    finally:
        runner.__exit__(None, None, None)


def test_a_view_whose_wanted_file_cannot_be_made_still_waits_and_reads(tmp_path: Path) -> None:
    """The file beside the views cannot be made (here its directory is a file): asking
    and looking are then nothing, not a failed read."""
    not_a_directory = tmp_path / "plain-file"
    not_a_directory.write_text("")
    wanted = WantedPosition(str(not_a_directory / "views.g1.sqlite"))
    wanted.ask_for(42)
    assert wanted.read() == 0
    wanted.close()


def test_a_wanted_file_closed_while_a_reader_asks_is_closed_after_the_ask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner replaced while serving (a rebuild's switch, a restart after a failure)
    closes its view's wanted file while a reader that took the view may be asking
    through it. The close waits for the ask: the ask never writes through a descriptor
    closed under it (EBADF, a 500 seen in the suite) or since given to another file
    (8 bytes over that file's start). Closed, the view asks and looks no more."""
    wanted = WantedPosition(str(tmp_path / "views.g1.sqlite"))
    victim = tmp_path / "another-file"
    victim.write_bytes(b"x" * 16)
    opened = wanted._opened
    closer = threading.Thread(target=wanted.close)
    others: list[int] = []

    def opened_then_closed_elsewhere() -> int | None:
        fd = opened()
        closer.start()  # the runner's replacement closes the view now
        closer.join(CLOSE_WAIT_SECONDS)
        others.append(os.open(victim, os.O_RDWR))  # the lowest free number: a closed one
        return fd

    monkeypatch.setattr(wanted, "_opened", opened_then_closed_elsewhere)
    try:
        wanted.ask_for(7)
    finally:
        closer.join()
        for fd in others:
            os.close(fd)
    assert victim.read_bytes() == b"x" * 16
    assert Path(wanted.path).read_bytes() == (7).to_bytes(8, "big")
    monkeypatch.undo()
    wanted.ask_for(9)
    assert wanted.read() == 0
    assert Path(wanted.path).read_bytes() == (7).to_bytes(8, "big")
