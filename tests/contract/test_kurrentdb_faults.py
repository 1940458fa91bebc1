"""KurrentDB as it really behaves, on the fake that models it (each behaviour cited in
tests/support/fake_kurrentdb.py): lost replies and the client's resend, unknown
outcomes, deadlines, an unreachable server, subscription drops, the append limits, and
positions that stay the same between the first answer and a replay."""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kurrentdbclient import NewEvent, StreamState
from kurrentdbclient.events import NewEvents
from kurrentdbclient.exceptions import MultiAppendToSameStreamError

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import TransferOutcome
from app.domain.errors import (
    BatchTooLargeError,
    OutcomeUnknownError,
    StoreUnavailableError,
)
from app.domain.values import transfer_uuid
from app.persistence.kurrentdb import DEADLINE_KEY, DeadlineClient, leader_uri
from projections.runner import ProjectionWorkers, wait_until
from tests.support.fake_kurrentdb import FakeKurrentDBClient, FakeServer, fake_env, server_named

SHORT_DEADLINE_SECONDS = 0.2
# A call without a deadline waits out the whole stall: a call answered before
# SHORT_DEADLINE_SECONDS times its tries plus the slack ended at its deadline. The
# slack only absorbs a loaded machine's scheduling delays; the stall is far longer.
DEADLINE_SLACK_SECONDS = 3.0
STALL_SECONDS = 10.0
VIEW_WAIT_SECONDS = 10.0


@pytest.fixture
def name() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def server(name: str) -> FakeServer:
    return server_named(name)


@pytest.fixture
def ledger(name: str) -> Iterator[Ledger]:
    ledger = Ledger({**fake_env(name), DEADLINE_KEY: str(SHORT_DEADLINE_SECONDS)})
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS"))
    yield ledger
    ledger.close()


def recorded_position(server: FakeServer, transfer_id: str) -> int:
    stream = server.streams[str(transfer_uuid(transfer_id))]
    return int(stream[0].commit_position or 0)


def test_a_lost_reply_is_resent_and_answered_with_the_original_position(
    ledger: Ledger, server: FakeServer
) -> None:
    before, attempts = len(server.log), server.append_attempts
    server.lost_replies = 1
    outcome = ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    assert server.append_attempts == attempts + 2  # the client sent it again
    assert len(server.log) == before + 3  # ...and it was written once
    assert outcome.created
    assert outcome.position == recorded_position(server, "t1")
    assert ledger.get_account("alice").balance == 5
    again = ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    assert not again.created
    assert again.position == outcome.position
    assert ledger.get_account("alice").balance == 5


def test_a_resend_the_server_drops_is_an_unknown_outcome_and_resending_is_safe(
    ledger: Ledger, server: FakeServer
) -> None:
    server.lost_replies = 1
    server.replicated = False
    with pytest.raises(OutcomeUnknownError):
        ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    server.replicated = True
    # The write did land; the caller resends the same id and learns the outcome.
    again = ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    assert not again.created
    assert again.position == recorded_position(server, "t1")
    assert ledger.get_account("alice").balance == 5


def test_an_error_the_client_cannot_classify_is_an_unknown_outcome(
    ledger: Ledger, server: FakeServer
) -> None:
    attempts = server.append_attempts
    server.unclassified_errors = 1
    with pytest.raises(OutcomeUnknownError, match=r"again is safe"):
        ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    assert server.append_attempts == attempts + 1  # not a gRPC error: the client does not resend
    again = ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    assert not again.created
    assert ledger.get_account("alice").balance == 5


def test_an_unknown_outcome_that_did_not_land_is_written_by_the_resend(
    ledger: Ledger, server: FakeServer
) -> None:
    server.stall_seconds = STALL_SECONDS
    server.stall_writes_only = True
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError):
        ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    # The deadline holds (the client resends once after a deadline: two of them).
    assert time.monotonic() - started < 4 * SHORT_DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS
    server.stall_seconds = 0
    assert "t1" not in {e.stream_name for e in server.log}
    again = ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    assert again.created
    assert ledger.get_account("alice").balance == 5


def test_a_read_from_a_stalled_server_ends_at_the_deadline_as_store_unavailable(
    ledger: Ledger, server: FakeServer
) -> None:
    ledger.repository.cache = None  # force a read of the store
    ledger.transfers.cache = None
    server.stall_seconds = STALL_SECONDS
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        ledger.get_account("alice")
    assert time.monotonic() - started < 2 * SHORT_DEADLINE_SECONDS + DEADLINE_SLACK_SECONDS
    server.stall_seconds = 0


def test_an_unreachable_server_refuses_writes_as_store_unavailable_with_nothing_written(
    ledger: Ledger, server: FakeServer
) -> None:
    before = len(server.log)
    server.unreachable = True
    with pytest.raises(StoreUnavailableError):
        ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
    server.unreachable = False
    assert len(server.log) == before
    assert ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5)).created


def test_the_probe_tells_an_unreachable_server_from_an_old_one(name: str) -> None:
    server_named(name).unreachable = True
    with pytest.raises(StoreUnavailableError, match="reachable"):
        Ledger(fake_env(name))
    server_named(name).unreachable = False
    Ledger(fake_env(name)).close()


def test_a_transfer_in_a_batch_answers_the_same_position_first_and_on_replay(
    ledger: Ledger, server: FakeServer
) -> None:
    commands = [RecordTransfer(f"t{i}", "bank", "alice", i + 1) for i in range(5)]
    first = ledger.record_batch(commands, atomic=False).results
    replayed = ledger.record_batch(commands, atomic=False).results
    atomic_first = ledger.record_batch(
        [RecordTransfer(f"a{i}", "bank", "alice", 1) for i in range(3)], atomic=True
    ).results
    for outcome, again in zip(first, replayed, strict=True):
        assert isinstance(outcome, TransferOutcome)
        assert isinstance(again, TransferOutcome)
        assert outcome.created
        assert not again.created
        assert outcome.position == again.position == recorded_position(server, outcome.transfer.id)
    assert len({o.position for o in first if isinstance(o, TransferOutcome)}) == len(commands)
    for outcome in atomic_first:
        assert isinstance(outcome, TransferOutcome)
        assert outcome.position == ledger.transfer_position(outcome.transfer.id)


def test_one_stream_twice_in_one_append_is_refused_by_the_server(server: FakeServer) -> None:
    client = FakeKurrentDBClient(server)
    twice = [
        NewEvents("s", [NewEvent(type="A", data=b"{}")], StreamState.NO_STREAM),
        NewEvents("S", [NewEvent(type="B", data=b"{}")], StreamState.ANY),
    ]
    with pytest.raises(MultiAppendToSameStreamError):
        client.multi_append_to_stream(twice)
    assert server.log == []


def test_a_batch_touching_one_account_many_times_is_one_group_per_stream(
    ledger: Ledger,
) -> None:
    # The fake refuses a stream twice in one append, as the server does: this passes
    # only because every stream's events are grouped into one NewEvents.
    outcome = ledger.record_batch(
        [RecordTransfer(f"t{i}", "bank", "alice", 1) for i in range(50)], atomic=True
    )
    assert all(isinstance(result, TransferOutcome) for result in outcome.results)
    assert ledger.get_account("alice").balance == 50


def test_an_append_over_the_servers_size_limit_is_refused_with_nothing_written(
    ledger: Ledger, server: FakeServer
) -> None:
    before = len(server.log)
    server.max_append_size = 4_000
    with pytest.raises(BatchTooLargeError, match="size limit"):
        ledger.record_batch(
            [RecordTransfer(f"t{i}", "bank", "alice", 1) for i in range(40)], atomic=True
        )
    assert len(server.log) == before
    assert ledger.get_account("alice").balance == 0


@pytest.mark.parametrize("cleanly", [False, True], ids=["broken", "ended"])
def test_the_projection_resubscribes_after_a_drop_without_skipping_or_doubling(
    ledger: Ledger, server: FakeServer, name: str, tmp_path: Path, cleanly: bool
) -> None:
    workers = ProjectionWorkers(
        f"fake://{name}", f"sqlite:///{tmp_path / 'views.sqlite'}", ledger
    ).start()
    try:
        total = 0
        for round_number in range(3):
            for i in range(5):
                outcome = ledger.record_transfer(
                    RecordTransfer(f"r{round_number}-{i}", "bank", "alice", i + 1)
                )
                total += i + 1
            opened = server.subscriptions_opened
            server.drop_subscriptions(cleanly=cleanly)
            assert workers.view.wait_for(outcome.position, VIEW_WAIT_SECONDS)
            balance = workers.view.balance("alice")
            assert balance is not None
            assert balance.balance == total
        # Each drop was answered by a new subscription (not a new worker). The views may
        # have applied every event before the drop, so the new one may come a pause later.
        assert wait_until(lambda: server.subscriptions_opened > opened, VIEW_WAIT_SECONDS)
        workers.check()  # the runner's thread did not die
    finally:
        workers.stop()


def test_every_bounded_call_gets_the_deadline_and_the_subscription_none() -> None:
    seen: dict[str, Any] = {}

    class Recording:
        def __getattr__(self, call: str) -> Any:
            return lambda *_, **kwargs: seen.__setitem__(call, kwargs.get("timeout"))

    client = DeadlineClient(Recording(), 1.5)
    client.multi_append_to_stream([])
    client.read_stream("s")
    client.read_all()
    client.get_commit_position()
    client.read_stream("s", timeout=9)
    client.subscribe_to_all()
    assert seen == {
        "multi_append_to_stream": 1.5,
        "read_stream": 9,
        "read_all": 1.5,
        "get_commit_position": 1.5,
        "subscribe_to_all": None,
    }


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("kurrentdb://localhost:2113?Tls=false", "Tls=false&NodePreference=leader"),
        ("esdb+discover://a:2113?NodePreference=follower", "NodePreference=leader"),
        ("kurrentdb://h:2113", "NodePreference=leader"),
    ],
)
def test_commands_read_from_the_leader(uri: str, expected: str) -> None:
    shaped = leader_uri(uri)
    assert shaped.endswith("?" + expected)
    assert shaped.count("NodePreference") == 1
