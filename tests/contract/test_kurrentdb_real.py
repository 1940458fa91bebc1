"""The KurrentDB behaviours the fake models, checked on a real server (≥ 25.1).

Runs when ``KURRENTDB_URI`` points at one (e.g. ``kurrentdb://localhost:2113?Tls=false``
from docker-compose.yml). Optional, for the cases one server cannot show alone:
``KURRENTDB_OLD_URI`` (a 24.x or older server, for the probe) and
``KURRENTDB_RESTART_COMMAND`` (a shell command that restarts the server, e.g.
``docker compose restart kurrentdb``, for the subscription surviving a restart).
"""

import multiprocessing
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.events import NewEvents
from kurrentdbclient.exceptions import DeadlineExceededError, WrongCurrentVersionError

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import TransferOutcome
from app.domain import limits
from app.domain.errors import OutcomeUnknownError, StoreUnavailableError
from app.domain.values import account_uuid, transfer_uuid
from app.persistence.kurrentdb import (
    DEADLINE_KEY,
    DeadlineClient,
    UnsupportedServerError,
    leader_uri,
)
from app.persistence.stores import event_store_env
from projections.runner import ProjectionWorkers
from tests.e2e.ledger_workers import SpendReport, spend_in_process
from tests.support.ports import free_port

URI = os.environ.get("KURRENTDB_URI", "")
pytestmark = pytest.mark.skipif(
    not URI, reason="KURRENTDB_URI is not set: no KurrentDB server to run against"
)

UNIT: Final = "CREDITS"
PROCESS_TIMEOUT_SECONDS: Final = 200.0
HOT_TRANSFERS_PER_PROCESS: Final = 100
VIEW_WAIT_SECONDS: Final = 30.0
RESTART_WAIT_SECONDS: Final = 120.0


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(URI))
    yield ledger
    ledger.close()


@pytest.fixture
def client() -> Iterator[KurrentDBClient]:
    client = KurrentDBClient(uri=leader_uri(URI))
    yield client
    client.close()


def funded_pair(ledger: Ledger) -> tuple[str, str]:
    bank, alice = unique("bank"), unique("alice")
    ledger.open_account(OpenAccount(bank, UNIT, allow_negative=True))
    ledger.open_account(OpenAccount(alice, UNIT))
    return bank, alice


def events_from(client: KurrentDBClient, position: int, count: int) -> list[Any]:
    return list(client.read_all(commit_position=position, limit=count, filter_exclude=[]))


def test_the_events_of_one_command_are_contiguous_in_all(
    ledger: Ledger, client: KurrentDBClient
) -> None:
    bank, alice = funded_pair(ledger)
    transfer_id = unique("t")
    ledger.record_transfer(RecordTransfer(transfer_id, bank, alice, 5))
    first = client.get_stream(str(account_uuid(bank)), stream_position=1, limit=1)[0]
    written = events_from(client, first.commit_position, 3)
    assert {event.stream_name for event in written} == {
        str(account_uuid(bank)),
        str(account_uuid(alice)),
        str(transfer_uuid(transfer_id)),
    }
    positions = [event.commit_position for event in written]
    assert positions == sorted(set(positions))  # each event its own position


@pytest.mark.parametrize("stale_stream", [0, 1, 2])
def test_a_stale_version_on_any_stream_writes_nothing(
    client: KurrentDBClient, stale_stream: int
) -> None:
    names = [unique("s") for _ in range(3)]
    for name in names:
        client.multi_append_to_stream(
            [NewEvents(name, [NewEvent(type="Seed", data=b"{}")], StreamState.NO_STREAM)]
        )
    head = client.get_commit_position()
    groups = [
        NewEvents(
            name,
            [NewEvent(type="Next", data=b"{}")],
            StreamState.NO_STREAM if index == stale_stream else 0,
        )
        for index, name in enumerate(names)
    ]
    with pytest.raises(WrongCurrentVersionError):
        client.multi_append_to_stream(groups)
    for name in names:
        assert len(client.get_stream(name)) == 1
    assert client.get_commit_position() == head


def test_an_identical_append_sent_again_answers_the_original_position(
    client: KurrentDBClient,
) -> None:
    names = [unique("s"), unique("s")]
    groups = [
        NewEvents(name, [NewEvent(type="Once", data=b"{}")], StreamState.NO_STREAM)
        for name in names
    ]
    first = client.multi_append_to_stream(groups)
    second = client.multi_append_to_stream(groups)  # same event ids: a resend
    assert second == first
    for name in names:
        assert len(client.get_stream(name)) == 1


def test_the_probe_accepts_this_server() -> None:
    Ledger(event_store_env(URI)).close()


def test_the_probe_calls_a_stopped_server_unreachable_within_the_deadline() -> None:
    port = free_port()  # reserved by this process, and nothing listens on it
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="reachable"):
        Ledger({**event_store_env(f"kurrentdb://127.0.0.1:{port}?Tls=false"), DEADLINE_KEY: "2"})
    assert time.monotonic() - started < 30


@pytest.mark.skipif(not os.environ.get("KURRENTDB_OLD_URI"), reason="KURRENTDB_OLD_URI not set")
def test_the_probe_refuses_a_server_older_than_25_1() -> None:
    with pytest.raises(UnsupportedServerError, match=r"25\.1"):
        Ledger(event_store_env(os.environ["KURRENTDB_OLD_URI"]))


def test_positions_are_the_same_first_and_on_replay(ledger: Ledger) -> None:
    bank, alice = funded_pair(ledger)
    commands = [RecordTransfer(unique("t"), bank, alice, i + 1) for i in range(5)]
    first = ledger.record_batch(commands, atomic=False).results
    again = ledger.record_batch(commands, atomic=False).results
    for one, two in zip(first, again, strict=True):
        assert isinstance(one, TransferOutcome)
        assert isinstance(two, TransferOutcome)
        assert one.position == two.position == ledger.transfer_position(one.transfer.id)


def test_commands_read_from_the_leader(ledger: Ledger) -> None:
    spec = ledger.recorder.client.connection_spec  # type: ignore[attr-defined]
    assert spec.options.node_preference == "leader"
    bank, alice = funded_pair(ledger)
    ledger.record_transfer(RecordTransfer(unique("t"), bank, alice, 3))
    fresh = Ledger(event_store_env(URI))  # no cache: reads the server
    try:
        assert fresh.get_account(alice).balance == 3
    finally:
        fresh.close()


def test_a_call_past_its_deadline_is_store_unavailable(ledger: Ledger) -> None:
    bounded: Any = DeadlineClient(KurrentDBClient(uri=leader_uri(URI)), 0.000_001)
    with pytest.raises(DeadlineExceededError):
        bounded.get_commit_position()
    ledger.recorder.client = bounded  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailableError):
        ledger.recorder.max_notification_id()


def test_the_largest_atomic_batch_is_one_append(ledger: Ledger) -> None:
    bank, alice = funded_pair(ledger)
    commands = [RecordTransfer(unique("t"), bank, alice, 1) for _ in range(limits.BATCH_SIZE_MAX)]
    outcome = ledger.record_batch(commands, atomic=True)
    assert all(isinstance(result, TransferOutcome) for result in outcome.results)
    assert ledger.get_account(alice).balance == limits.BATCH_SIZE_MAX


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ledger_processes_on_a_hot_account_move_each_credit_once(ledger: Ledger) -> None:
    bank, alice = funded_pair(ledger)
    work = [[unique(f"p{n}") for _ in range(HOT_TRANSFERS_PER_PROCESS)] for n in range(2)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(work))
    reports: multiprocessing.queues.Queue[SpendReport] = context.Queue()
    processes = [
        context.Process(target=spend_in_process, args=(URI, bank, alice, ids, start, reports))
        for ids in work
    ]
    for process in processes:
        process.start()
    report = SpendReport()
    for _ in processes:
        report.merge(reports.get(timeout=PROCESS_TIMEOUT_SECONDS))
    for process in processes:
        process.join(timeout=PROCESS_TIMEOUT_SECONDS)
    assert report.unexpected == []
    assert sorted(report.created) == sorted(i for ids in work for i in ids)
    fresh = Ledger(event_store_env(URI))
    try:
        assert fresh.get_account(alice).balance == 2 * HOT_TRANSFERS_PER_PROCESS
    finally:
        fresh.close()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("KURRENTDB_RESTART_COMMAND"), reason="KURRENTDB_RESTART_COMMAND not set"
)
def test_the_projection_subscription_survives_a_server_restart(
    ledger: Ledger, tmp_path: Path
) -> None:
    bank, alice = funded_pair(ledger)
    workers = ProjectionWorkers(URI, f"sqlite:///{tmp_path / 'views.sqlite'}", ledger).start()
    try:
        ledger.record_transfer(RecordTransfer(unique("t"), bank, alice, 1))
        subprocess.run(os.environ["KURRENTDB_RESTART_COMMAND"], shell=True, check=True)
        deadline = time.monotonic() + RESTART_WAIT_SECONDS
        after_restart = RecordTransfer(unique("t"), bank, alice, 2)
        while True:
            try:  # the same id each time: resending is safe whatever happened
                outcome = ledger.record_transfer(after_restart)
                break
            except (StoreUnavailableError, OutcomeUnknownError):
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(1)
        assert workers.view.wait_for(outcome.position, VIEW_WAIT_SECONDS)
        balance = workers.view.balance(alice)
        assert balance is not None
        assert balance.balance == 3
    finally:
        workers.stop()
