"""In ``ledger project`` on SQLite the feed projector projects the batches the views'
runner has read and decoded, instead of reading and decoding them again: every public
event still once and in log order (the same feed as a projector reading the log
itself), none decoded twice while it follows, and the log read by itself again as soon
as the runner's batches stop coming."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.events import projector as projector_module
from app.events.database import Database
from app.events.projector import FeedProjector
from app.events.store import FeedStore
from app.persistence.decoding import DecodedBatches
from app.persistence.stores import event_store_env, sqlite_url
from projections import catchup
from projections.runner import start_runner
from tests.events.test_projector import all_events
from tests.support.waiting import eventually

ISSUER: Final = "system:issuance"
WAIT_SECONDS: Final = 60.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(sqlite_url(tmp_path / "events.sqlite")))
    try:
        yield ledger
    finally:
        ledger.close()


def transfers(ledger: Ledger, prefix: str, count: int) -> int:
    commands = [
        RecordTransfer(
            id=f"{prefix}{n}", debit_account_id=ISSUER, credit_account_id="alice", amount=1
        )
        for n in range(count)
    ]
    if count == 1:
        ledger.record_transfer(commands[0])
    else:
        ledger.record_batch(commands, atomic=True)
    return ledger.recorder.max_notification_id() or 0


class CountingProjector(FeedProjector):
    """Counts the events it decodes itself."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.decoded = 0
        decode = self._to_domain_event

        def counting(stored: Any) -> Any:
            self.decoded += 1
            return decode(stored)

        self._to_domain_event = counting


def test_a_projector_following_the_runner_decodes_nothing_and_projects_every_event_once(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Never read the log for want of a batch while this test writes (a loaded machine).
    monkeypatch.setattr(projector_module, "FOLLOW_WAIT_SECONDS", WAIT_SECONDS)
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
    before = transfers(ledger, "before", 20)
    shared = DecodedBatches()
    events_url = sqlite_url(tmp_path / "events.sqlite")
    runner = start_runner(events_url, sqlite_url(tmp_path / "views.sqlite"), 1, shared)
    store = FeedStore(Database(sqlite_url(tmp_path / "feed.sqlite")))
    projector = CountingProjector(ledger, store, shared)
    projector.start()
    try:
        assert eventually(lambda: store.head().checkpoint == before, WAIT_SECONDS)
        decoded_before = projector.decoded
        assert decoded_before <= before  # its own catch-up: each event once at most
        for number in range(3):
            transfers(ledger, f"single{number}-", 1)
        # More than a live batch of the runner: shared as two batches, both joined on.
        head = transfers(ledger, "burst", 600)
        runner.wait(head, timeout=WAIT_SECONDS)
        assert eventually(lambda: store.head().checkpoint == head, WAIT_SECONDS)
        assert projector.decoded == decoded_before  # all of it came decoded
    finally:
        projector.stop()
        runner.__exit__(None, None, None)

    reference = FeedStore(Database(sqlite_url(tmp_path / "reference.sqlite")))
    FeedProjector(ledger, reference).catch_up()
    got, expected = all_events(store), all_events(reference)
    assert got == expected
    assert len({event["id"] for event in got}) == len(got)
    recorded = [e["data"]["transfer"]["id"] for e in got if e["type"] == "transfer.recorded"]
    assert len(recorded) == 20 + 3 + 600


def test_a_projector_whose_runner_stops_sharing_reads_the_log_itself_within_the_wait(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Nothing is offered (the runner is down, restarting or gone): every event still
    reaches the feed, within ``FOLLOW_WAIT_SECONDS`` of its projector's last batch."""
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
    store = FeedStore(Database(sqlite_url(tmp_path / "feed.sqlite")))
    projector = FeedProjector(ledger, store, DecodedBatches())
    stopping = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stopping,))
    thread.start()
    try:
        for number in range(3):
            head = transfers(ledger, f"alone{number}-", 5)
            assert eventually(lambda at=head: store.head().checkpoint == at, WAIT_SECONDS)  # type: ignore[misc]
    finally:
        stopping.set()
        thread.join(WAIT_SECONDS)
    assert not thread.is_alive()  # stopped while it waited for a batch
    recorded = [e for e in all_events(store) if e["type"] == "transfer.recorded"]
    assert len(recorded) == 15


def test_a_following_projector_waits_out_the_runners_pause_while_the_log_is_busy() -> None:
    """Under load the views' runner pauses ``BUSY_POLL_SECONDS`` between its reads (and
    then writes its batch): a follower waiting less would read the log itself again
    each time, decoding what the runner is about to share."""
    assert projector_module.FOLLOW_WAIT_SECONDS >= 2 * catchup.BUSY_POLL_SECONDS
