"""The catch-up runner reads the log up to its head itself, batch after batch, and
subscribes only from there: a long catch-up is one thread (no hand-off per event, no
second thread taking the GIL from the writer), and events written afterwards still
arrive through the subscription."""

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.sqlite_subscription import SubscribableSQLiteApplicationRecorder
from app.persistence.stores import event_store_env, sqlite_url
from projections import catchup
from projections.catchup import catch_up_batch_size
from projections.projection import PROJECTION_BATCH_MAX, RowWriter
from projections.runner import start_runner
from tests.support.waiting import eventually

UNIT: Final = "CREDITS"
# The runner's own reading takes this many events per batch here (a smaller log than
# with the default), and the log holds enough transfers (three events each) for several.
CATCH_UP_BATCH: Final = 400
TRANSFERS: Final = 1000
BATCH: Final = 500
WAIT_SECONDS: Final = 60.0


@pytest.fixture
def log_urls(tmp_path: Path) -> tuple[str, str]:
    return sqlite_url(tmp_path / "events.sqlite"), sqlite_url(tmp_path / "views.sqlite")


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
def subscribed_from(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The position each subscription of the SQLite recorder starts after."""
    starts: list[int | None] = []
    subscribe = SubscribableSQLiteApplicationRecorder.subscribe

    def recording(self: Any, gt: int | None = None, topics: Any = ()) -> Any:
        starts.append(gt)
        return subscribe(self, gt=gt, topics=topics)

    monkeypatch.setattr(SubscribableSQLiteApplicationRecorder, "subscribe", recording)
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
