"""The feed projector against real stores: every log event's public events once and in
log order, whatever the batch boundaries, restarts, gaps in positions or competing
projectors; grants' events; monitors firing once per crossing under concurrency."""

import functools
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.api.schemas import AccountRead, TransferRead, account_document
from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import TransferView
from app.domain.account import Account
from app.domain.chain import ChainedEvent
from app.domain.transfer import Transfer
from app.domain.values import account_uuid, transfer_uuid
from app.events import projector as projector_module
from app.events.database import Database
from app.events.monitors import MonitorStore
from app.events.projector import (
    HANDLERS,
    FeedProjector,
    account_metadata_updated,
    account_resource,
    transfer_resource,
)
from app.events.store import FeedStore
from app.persistence.stores import event_store_env
from tests.conftest import store_env, store_url
from tests.e2e.gapped_store import GAPPED_RECORDER_TOPIC, STRIDE, is_position
from tests.support.threads import assert_all_end, run_in_threads

ISSUER = "system:issuance"
# How long a test's threads may take to end (each one's failure fails the test).
THREADS_END_SECONDS = 60.0
FEED_BACKENDS = ["sqlite", "postgres"]
LOG_BACKENDS = ["memory", "sqlite", "postgres", "kurrentdb-fake"]
# What the feed keeps of an account (besides its id), as an ``AccountView`` names it.
FEED_STATE_FIELDS = (
    "unit",
    "status",
    "allow_negative",
    "overdraft_limit",
    "account_type",
    "metadata",
    "debits_posted",
    "credits_posted",
    "debits_pending",
    "credits_pending",
)


def feed_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'feed.sqlite'}"


def all_events(store: FeedStore) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while rows := store.page(after, 100):
        events += [row.event() for row in rows]
        after = rows[-1].sequence
    return events


def scenario(ledger: Ledger) -> None:
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    for name in ("alice", "bob"):
        ledger.open_account(OpenAccount(id=name, unit="CREDITS"))
    ledger.record_batch(
        [
            RecordTransfer(id=f"b{n}", debit_account_id=ISSUER, credit_account_id="alice", amount=5)
            for n in range(6)
        ],
        atomic=True,
    )
    ledger.record_transfer(
        RecordTransfer(
            id="h", debit_account_id="alice", credit_account_id="bob", amount=7, pending=True
        )
    )
    ledger.post_pending("h", 4)
    ledger.reverse_transfer("b0", "r0")


def project_in_small_steps(ledger: Ledger, store: FeedStore, limit: int) -> None:
    """A new projector for every batch of ``limit`` notifications: a restart each time."""
    while FeedProjector(ledger, store).step(limit):
        pass


@pytest.mark.parametrize("log_backend", LOG_BACKENDS)
@pytest.mark.parametrize("feed_backend", FEED_BACKENDS)
def test_restarts_and_batch_boundaries_change_nothing(
    log_backend: str, feed_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ledger = Ledger(store_env(store_url(log_backend, tmp_path, request)))
    try:
        scenario(ledger)
        in_one_go = FeedStore(Database(f"sqlite:///{tmp_path / 'one-go.sqlite'}"))
        FeedProjector(ledger, in_one_go).catch_up()
        restarted = FeedStore(Database(feed_url(feed_backend, tmp_path, request)))
        project_in_small_steps(ledger, restarted, limit=2)

        expected, got = all_events(in_one_go), all_events(restarted)
        assert got == expected
        assert len({event["id"] for event in got}) == len(got)
        positions = [event["position"] for event in got]
        assert positions == sorted(positions)
        assert restarted.head().checkpoint == ledger.recorder.max_notification_id()
        alice_after = [
            next(a["balance"] for a in e["data"]["accounts"] if a["id"] == "alice")
            for e in got
            if e["type"] == "transfer.recorded" and e["data"]["transfer"]["id"].startswith("b")
        ]
        assert alice_after == [5, 10, 15, 20, 25, 30]
        restarted.database.close()
    finally:
        ledger.close()


def test_gapped_positions_are_followed_without_loss_or_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_APPLICATION_RECORDER_TOPIC", GAPPED_RECORDER_TOPIC)
    with Ledger(event_store_env(f"sqlite:///{tmp_path / 'events.sqlite'}")) as ledger:
        scenario(ledger)
        store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
        project_in_small_steps(ledger, store, limit=3)
        events = all_events(store)

        logged = [n.id for n in ledger.recorder.select_notifications(start=None, limit=10_000)]
        assert all(later - earlier == STRIDE for earlier, later in itertools.pairwise(logged))
        assert all(is_position(event["position"]) for event in events)
        assert store.head().checkpoint == logged[-1]
        transfers = [
            e["data"]["transfer"]["id"] for e in events if e["type"] == "transfer.recorded"
        ]
        assert transfers == ["b0", "b1", "b2", "b3", "b4", "b5", "h", "r0"]


def test_competing_projectors_never_write_an_event_twice(tmp_path: Path) -> None:
    with Ledger(event_store_env(f"sqlite:///{tmp_path / 'events.sqlite'}")) as ledger:
        ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
        for n in range(60):
            ledger.record_transfer(
                RecordTransfer(
                    id=f"t{n}", debit_account_id=ISSUER, credit_account_id="alice", amount=1
                )
            )
        store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
        projectors = [FeedProjector(ledger, store).start() for _ in range(3)]
        deadline = datetime.now(tz=UTC) + timedelta(seconds=20)
        while store.head().checkpoint < (ledger.recorder.max_notification_id() or 0):
            assert datetime.now(tz=UTC) < deadline
            threading.Event().wait(0.02)
        for projector in projectors:
            projector.stop()

        events = all_events(store)
        assert len(events) == 62
        assert len({e["id"] for e in events}) == 62
        balances = [
            e["data"]["accounts"][1]["balance"] for e in events if e["type"] == "transfer.recorded"
        ]
        assert balances == list(range(1, 61))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_grants_are_announced_when_created_and_when_they_expire(tmp_path: Path) -> None:
    clock = Clock()
    ledger = Ledger(event_store_env(f"sqlite:///{tmp_path / 'events.sqlite'}"), clock=clock)
    try:
        ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
        expires_at = clock.now + timedelta(days=30)
        ledger.record_transfer(
            RecordTransfer(
                id="promo",
                debit_account_id=ISSUER,
                credit_account_id="alice",
                amount=100,
                grant=GrantTerms(expires_at=expires_at, category="promotional", priority=10),
            )
        )
        ledger.record_transfer(
            RecordTransfer(
                id="spend", debit_account_id="alice", credit_account_id=ISSUER, amount=30
            )
        )
        clock.now = expires_at + timedelta(seconds=1)
        assert ledger.expire_grant("promo") is not None
        store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
        FeedProjector(ledger, store).catch_up()

        events = all_events(store)
        created = [e for e in events if e["type"] == "grant.created"]
        expired = [e for e in events if e["type"] == "grant.expired"]
        assert len(created) == 1
        assert created[0]["data"]["grant"]["id"] == "promo"
        assert created[0]["data"]["grant"]["category"] == "promotional"
        assert created[0]["data"]["grant"]["priority"] == 10
        assert created[0]["data"]["grant"]["amount"] == 100
        assert datetime.fromisoformat(created[0]["data"]["grant"]["expires_at"]) == expires_at
        assert len(expired) == 1
        assert expired[0]["data"]["grant"] == {
            "id": "promo",
            "account_id": "alice",
            "expired_amount": 70,
        }
        alice = next(a for a in expired[0]["data"]["accounts"] if a["id"] == "alice")
        assert alice["balance"] == 0
        # Each grant event follows its transfer's own event, at the same position.
        for grant_event in created + expired:
            index = events.index(grant_event)
            assert events[index - 1]["type"] == "transfer.recorded"
            assert events[index - 1]["position"] == grant_event["position"]
        store.database.close()
    finally:
        ledger.close()


@pytest.fixture
def monitored(tmp_path: Path) -> Iterator[tuple[Ledger, FeedStore, MonitorStore]]:
    ledger = Ledger(event_store_env(f"sqlite:///{tmp_path / 'events.sqlite'}"))
    database = Database(f"sqlite:///{tmp_path / 'feed.sqlite'}")
    yield ledger, FeedStore(database), MonitorStore(database)
    database.close()
    ledger.close()


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def crossings(store: FeedStore) -> list[dict[str, Any]]:
    return [e["data"] for e in all_events(store) if e["type"] == "balance.threshold_crossed"]


def test_a_monitor_fires_once_each_way_under_concurrent_transfers(
    monitored: tuple[Ledger, FeedStore, MonitorStore],
) -> None:
    ledger, store, monitors = monitored
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
    ledger.record_transfer(
        RecordTransfer(id="fund", debit_account_id=ISSUER, credit_account_id="alice", amount=100)
    )
    low = monitors.create("alice", "balance", "below", 50, "running low", head(ledger))
    projector = FeedProjector(ledger, store).start()

    def spend(n: int) -> None:
        ledger.record_transfer(
            RecordTransfer(
                id=f"s{n}", debit_account_id="alice", credit_account_id=ISSUER, amount=10
            )
        )

    def refill(n: int) -> None:
        ledger.record_transfer(
            RecordTransfer(
                id=f"r{n}", debit_account_id=ISSUER, credit_account_id="alice", amount=10
            )
        )

    for work in (spend, refill):
        run_in_threads([functools.partial(work, n) for n in range(8)], timeout=THREADS_END_SECONDS)
    deadline = datetime.now(tz=UTC) + timedelta(seconds=20)
    while store.head().checkpoint < (ledger.recorder.max_notification_id() or 0):
        assert datetime.now(tz=UTC) < deadline
        threading.Event().wait(0.02)
    projector.stop()

    seen = crossings(store)
    assert [(c["direction"], c["condition_holds"]) for c in seen] == [("down", True), ("up", False)]
    assert seen[0]["previous_value"] >= 50 > seen[0]["value"]
    assert seen[1]["previous_value"] < 50 <= seen[1]["value"]
    assert all(c["monitor"]["id"] == low.id and c["monitor"]["below"] == 50 for c in seen)
    assert monitors.get(low.id) is not None
    assert monitors.get(low.id).holds is False  # type: ignore[union-attr]


def test_monitors_fire_exactly_at_each_crossing_of_the_balance_history(
    monitored: tuple[Ledger, FeedStore, MonitorStore],
) -> None:
    ledger, store, monitors = monitored
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
    above = monitors.create("alice", "available", "above", 25, "", head(ledger))
    amounts = [30, -10, -10, 20, -25, 5, 50, -1, -30]
    for n, amount in enumerate(amounts):
        debit, credit = (ISSUER, "alice") if amount > 0 else ("alice", ISSUER)
        ledger.record_transfer(
            RecordTransfer(
                id=f"m{n}", debit_account_id=debit, credit_account_id=credit, amount=abs(amount)
            )
        )
    # A hold lowers available without touching balance.
    ledger.record_transfer(
        RecordTransfer(
            id="hold", debit_account_id="alice", credit_account_id=ISSUER, amount=10, pending=True
        )
    )
    project_in_small_steps(ledger, store, limit=2)

    values = [*list(itertools.accumulate(amounts, initial=0)), sum(amounts) - 10]
    expected = [
        ("up" if after > before else "down")
        for before, after in itertools.pairwise(values)
        if (before > 25) != (after > 25)
    ]
    seen = crossings(store)
    assert [c["direction"] for c in seen] == expected
    assert all(c["monitor"]["id"] == above.id for c in seen)
    assert len(expected) >= 4


def test_a_deleted_monitor_fires_no_more(
    monitored: tuple[Ledger, FeedStore, MonitorStore],
) -> None:
    ledger, store, monitors = monitored
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
    monitor = monitors.create("alice", "balance", "above", 0, "", head(ledger))
    assert monitors.delete(monitor.id)
    ledger.record_transfer(
        RecordTransfer(id="t", debit_account_id=ISSUER, credit_account_id="alice", amount=1)
    )
    FeedProjector(ledger, store).catch_up()
    assert crossings(store) == []
    assert json.dumps(all_events(store))  # the feed itself is intact


class MetadataReplaced(ChainedEvent):
    """A stored event carrying an account's new metadata, as a PATCH writes one."""

    metadata: dict[str, str]

    def apply(self, aggregate: Any) -> None:
        aggregate.metadata = dict(self.metadata)


def test_an_account_metadata_event_is_published_as_account_updated(tmp_path: Path) -> None:
    account_metadata_updated(MetadataReplaced)
    try:
        with Ledger(event_store_env(f"sqlite:///{tmp_path / 'events.sqlite'}")) as ledger:
            ledger.open_account(OpenAccount(id="alice", unit="CREDITS", metadata={"a": "1"}))
            account: Account = ledger.repository.get(account_uuid("alice"))
            account.trigger_event(MetadataReplaced, metadata={"tier": "gold"})
            ledger.save(account)
            store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
            FeedProjector(ledger, store).catch_up()
            events = all_events(store)
            store.database.close()
    finally:
        del HANDLERS[MetadataReplaced]

    assert [event["type"] for event in events] == ["account.opened", "account.updated"]
    assert events[1]["data"]["account"]["metadata"] == {"tier": "gold"}
    assert events[1]["data"]["account"]["id"] == "alice"


def open_issuer_and_thirty(ledger: Ledger) -> list[str]:
    """The issuer and thirty accounts (their ids) opened."""
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    names = [f"acct-{n}" for n in range(30)]
    for name in names:
        ledger.open_account(OpenAccount(id=name, unit="CREDITS"))
    return names


def pay_each(ledger: Ledger, names: list[str], prefix: str) -> None:
    """5 from the issuer to each of ``names``, in one (non-atomic) batch."""
    ledger.record_batch(
        [RecordTransfer(f"{prefix}-{name}", ISSUER, name, 5) for name in names], atomic=False
    )


def reads_of_a_step(projector: FeedProjector, store: FeedStore) -> list[str]:
    """The SELECTs a step of ``projector`` (which finds something to project) sends."""
    statements: list[str] = []
    store.database._sqlite().set_trace_callback(statements.append)
    try:
        assert projector.step() > 0
    finally:
        store.database._sqlite().set_trace_callback(None)
    return [s for s in statements if s.startswith("SELECT")]


def test_a_batch_reads_its_accounts_and_monitors_together_not_one_by_one(
    monitored: tuple[Ledger, FeedStore, MonitorStore],
) -> None:
    """Thirty transfers to thirty monitored accounts, projected in one step: the accounts'
    state and their monitors come in one query each (not thirty-one each), and every
    monitor still fires at its crossing."""
    ledger, store, monitors = monitored
    names = open_issuer_and_thirty(ledger)
    FeedProjector(ledger, store).catch_up()
    for name in names:
        monitors.create(name, "balance", "above", 0, "funded", head(ledger))
    pay_each(ledger, names, "t")
    reads = reads_of_a_step(FeedProjector(ledger, store), store)
    assert len([s for s in reads if "FROM ledger_feed_accounts" in s]) == 1, reads
    assert len([s for s in reads if "FROM ledger_monitors" in s]) == 1, reads
    fired = crossings(store)
    assert sorted(c["account"]["id"] for c in fired) == sorted(names)
    assert all(c["condition_holds"] and c["value"] == 5 for c in fired)


def test_a_batch_on_kept_account_states_reads_their_monitors_together_not_one_by_one(
    monitored: tuple[Ledger, FeedStore, MonitorStore],
) -> None:
    """A projector's second step starts from the account states its first one kept: it
    reads them no more, yet it reads their monitors (which the API may have added
    meanwhile) in one query, not one per account, and every new monitor fires."""
    ledger, store, monitors = monitored
    names = open_issuer_and_thirty(ledger)
    projector = FeedProjector(ledger, store)
    projector.catch_up()
    pay_each(ledger, names, "t1")
    assert projector.step() > 0  # the thirty accounts' states are kept now
    for name in names:
        monitors.create(name, "balance", "above", 7, "funded", head(ledger))
    pay_each(ledger, names, "t2")
    reads = reads_of_a_step(projector, store)
    assert not [s for s in reads if "FROM ledger_feed_accounts" in s], reads
    assert len([s for s in reads if "FROM ledger_monitors" in s]) == 1, reads
    fired = crossings(store)
    assert sorted(c["account"]["id"] for c in fired) == sorted(names)
    assert all(c["condition_holds"] and c["value"] == 10 for c in fired)


def test_a_projector_reads_no_account_state_back_until_another_projector_wrote(
    monitored: tuple[Ledger, FeedStore, MonitorStore],
) -> None:
    ledger, store, _ = monitored
    ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
    mine, other = FeedProjector(ledger, store), FeedProjector(ledger, store)
    statements: list[str] = []
    store.database._sqlite().set_trace_callback(statements.append)

    def step_reading_states(projector: FeedProjector, transfer_id: str) -> bool:
        ledger.record_transfer(RecordTransfer(transfer_id, ISSUER, "alice", 1))
        statements.clear()
        assert projector.step() > 0
        return any("FROM ledger_feed_accounts" in s for s in statements)

    try:
        mine.catch_up()
        assert not step_reading_states(mine, "t1")  # its own states, kept
        assert not step_reading_states(mine, "t2")
        assert step_reading_states(other, "t3")  # a projector of its own: reads them
        assert step_reading_states(mine, "t4")  # the checkpoint moved: read again
        assert not step_reading_states(mine, "t5")
    finally:
        store.database._sqlite().set_trace_callback(None)
    balances = [
        e["data"]["accounts"][1]["balance"]
        for e in all_events(store)
        if e["type"] == "transfer.recorded"
    ]
    assert balances == [1, 2, 3, 4, 5]


def test_a_batch_reads_the_effects_earlier_batches_left_together_not_one_by_one(
    tmp_path: Path,
) -> None:
    """An atomic batch of transfers writes every account's events before the transfers'
    own: projected a step at a time, the transfers' step finds the balances their
    accounts had just after each of them in one query (not one per transfer and
    account), and the feed is the one projected in a single step."""
    ledger = Ledger(store_env(f"sqlite:///{tmp_path / 'log.sqlite'}"))
    try:
        ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
        names = [f"acct-{n}" for n in range(30)]
        for name in names:
            ledger.open_account(OpenAccount(id=name, unit="CREDITS"))
        store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
        FeedProjector(ledger, store).catch_up()
        ledger.record_batch(
            [RecordTransfer(f"t-{name}", ISSUER, name, 5) for name in names], atomic=True
        )
        # The accounts' events (two per transfer) in one step, the transfers' in the next.
        assert FeedProjector(ledger, store).step(limit=2 * len(names)) == 2 * len(names)
        statements: list[str] = []
        store.database._sqlite().set_trace_callback(statements.append)
        try:
            assert FeedProjector(ledger, store).step() == len(names)
        finally:
            store.database._sqlite().set_trace_callback(None)
        reads = [s for s in statements if s.startswith("SELECT")]
        assert len([s for s in reads if "FROM ledger_feed_effects" in s]) == 1, reads

        in_one_step = FeedStore(Database(f"sqlite:///{tmp_path / 'one-step.sqlite'}"))
        FeedProjector(ledger, in_one_step).catch_up()
        assert all_events(store) == all_events(in_one_step)
        recorded = [e for e in all_events(store) if e["type"] == "transfer.recorded"]
        assert len(recorded) == len(names)
        assert all(e["data"]["accounts"][1]["balance"] == 5 for e in recorded)
    finally:
        ledger.close()


def test_the_feeds_account_and_transfer_resources_say_exactly_what_the_api_models_say() -> None:
    """The feed builds them from plain values (no model per event): they must never
    drift from ``AccountRead`` and ``TransferRead``."""
    ledger = Ledger(event_store_env("memory://"))
    try:
        ledger.open_account(OpenAccount(ISSUER, "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("ana", "CREDITS", metadata={"tier": "gold", "ü": "ß"}))
        ledger.open_account(OpenAccount("shop", "CREDITS", overdraft_limit=5))
        expiry = datetime(2999, 1, 1, 12, tzinfo=UTC)
        outcomes = [
            ledger.record_transfer(
                RecordTransfer("grant", ISSUER, "ana", 50, grant=GrantTerms(expires_at=expiry))
            ),
            ledger.record_transfer(RecordTransfer("spend", "ana", "shop", 20, metadata={"a": "b"})),
            ledger.record_transfer(
                RecordTransfer("hold", "ana", "shop", 5, pending=True, timeout_seconds=60)
            ),
            ledger.reverse_transfer("spend", "refund", amount=10),
        ]
        outcomes.append(
            ledger.record_transfer(
                RecordTransfer("open-hold", "ana", "shop", 1, pending=True, metadata={"k": "v"})
            )
        )
        for outcome in outcomes:
            transfer: Transfer = ledger.transfers.get(transfer_uuid(outcome.transfer.id))
            view = TransferView.of(transfer)
            modelled = TransferRead.of(view, outcome.position).model_dump(mode="json")
            assert transfer_resource(view, outcome.position) == modelled
            # What the feed builds from a recording without the aggregate is the
            # aggregate's view as that recording left it.
            recorded: Transfer = ledger.transfers.get(transfer.id, version=Transfer.INITIAL_VERSION)
            (first,) = ledger.events.get(transfer.id, lte=Transfer.INITIAL_VERSION)
            assert isinstance(first, Transfer.TransferRecorded)
            assert TransferView.recorded(first) == TransferView.of(recorded)
        ledger.open_account(OpenAccount("gone", "CREDITS"))
        ledger.close_account("gone")
        for name in (ISSUER, "ana", "shop", "gone"):
            account = ledger.get_account(name)
            modelled = AccountRead.of(account, 7).model_dump(mode="json")
            assert account_document(account, 7) == modelled
            state = {
                "account_id": account.id,
                **{key: getattr(account, key) for key in FEED_STATE_FIELDS},
            }
            assert account_resource(state, 7) == modelled
    finally:
        ledger.close()


class _NotedWaits(threading.Event):
    """A projector's stop event, noting each pause it takes and how far the feed was."""

    def __init__(self, store: FeedStore) -> None:
        super().__init__()
        self.store = store
        self.waits: list[tuple[float | None, int]] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append((timeout, self.store.head().checkpoint))
        return super().wait(timeout)


def test_a_projector_pauses_longer_after_a_step_that_found_a_busy_log(tmp_path: Path) -> None:
    """After a step that read a busy log's worth of events it pauses
    ``PROJECTOR_BUSY_POLL_SECONDS`` (the next step takes more at once); after one that
    read a few or none, ``PROJECTOR_POLL_SECONDS``; after a full batch, not at all; and
    every event is projected once, in order, whatever the pauses."""
    ledger = Ledger(store_env(f"sqlite:///{tmp_path / 'log.sqlite'}"))
    try:
        ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount(id="alice", unit="CREDITS"))
        store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
        FeedProjector(ledger, store).catch_up()
        stopping = _NotedWaits(store)
        projector = FeedProjector(ledger, store)
        steps: list[int] = []
        project = projector._project

        def noting_steps(checkpoint: int, notifications: Any, events: Any) -> None:
            steps.append(len(notifications))
            project(checkpoint, notifications, events)

        projector._project = noting_steps  # type: ignore[method-assign]
        thread = threading.Thread(target=projector.run, args=(stopping,))
        thread.start()
        try:

            def transfers(prefix: str, count: int) -> int:
                ledger.record_batch(
                    [
                        RecordTransfer(
                            id=f"{prefix}{n}",
                            debit_account_id=ISSUER,
                            credit_account_id="alice",
                            amount=1,
                        )
                        for n in range(count)
                    ],
                    atomic=True,
                )
                written = head(ledger)
                deadline = datetime.now(tz=UTC) + timedelta(seconds=20)
                while store.head().checkpoint < written:
                    assert datetime.now(tz=UTC) < deadline
                    threading.Event().wait(0.01)
                return written

            busy = transfers("busy", projector_module.PROJECTOR_BUSY_EVENTS)  # 3 events each
            quiet = transfers("quiet", 1)
            # After a quiet step it keeps polling at the short pause: twice at least
            # before the burst is written (waited for: on a busy machine the burst's
            # write can be quicker than one pause).
            deadline = datetime.now(tz=UTC) + timedelta(seconds=20)
            while stopping.waits.count((projector_module.PROJECTOR_POLL_SECONDS, quiet)) < 2:
                assert datetime.now(tz=UTC) < deadline, stopping.waits
                threading.Event().wait(0.01)
            burst = transfers("burst", projector_module.PROJECTOR_BATCH_MAX)
        finally:
            stopping.set()
            assert_all_end([thread], THREADS_END_SECONDS)

        def first_wait_at(checkpoint: int) -> float | None:
            return next(timeout for timeout, at in stopping.waits if at == checkpoint)

        assert first_wait_at(busy) == projector_module.PROJECTOR_BUSY_POLL_SECONDS
        assert first_wait_at(quiet) == projector_module.PROJECTOR_POLL_SECONDS
        # A full batch reads on at once: no pause at its end position.
        full = quiet + projector_module.PROJECTOR_BATCH_MAX
        assert all(at != full for _, at in stopping.waits)
        # ... and the next step takes twice as many: the burst (three batches' worth of
        # events) in two steps.
        batch = projector_module.PROJECTOR_BATCH_MAX
        assert steps[-2:] == [batch, 2 * batch]
        events = all_events(store)
        transfer_ids = [
            e["data"]["transfer"]["id"] for e in events if e["type"] == "transfer.recorded"
        ]
        expected = [f"busy{n}" for n in range(projector_module.PROJECTOR_BUSY_EVENTS)]
        expected += ["quiet0"]
        expected += [f"burst{n}" for n in range(projector_module.PROJECTOR_BATCH_MAX)]
        assert sorted(transfer_ids) == sorted(expected)
        assert len(transfer_ids) == len(expected)
        positions = [e["position"] for e in events]
        assert positions == sorted(positions)
        assert store.head().checkpoint == burst
    finally:
        ledger.close()
