"""The catch-up runner reads the log up to its head itself, batch after batch, and
subscribes only from there: a long catch-up is one thread (no hand-off per event, no
second thread taking the GIL from the writer), and events written afterwards still
arrive through the subscription."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.sqlite_subscription import SubscribableSQLiteApplicationRecorder
from app.persistence.stores import event_store_env, sqlite_url
from projections.projection import PROJECTION_BATCH_MAX, RowWriter
from projections.runner import start_runner
from tests.support.waiting import eventually

UNIT: Final = "CREDITS"
# Enough transfers (three events each) for the runner's own reading to take several
# batches before it reaches the head.
TRANSFERS: Final = PROJECTION_BATCH_MAX
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
    assert head > 2 * PROJECTION_BATCH_MAX  # several batches of the runner's own reading

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
    assert runner.view.checkpoint() == PROJECTION_BATCH_MAX < head
