"""What only the KurrentDB backend has: the start-up capability check, one atomic
multi-stream append per command, gapped positions and the filtered $all subscription,
on the fake client. The faults of a real server (lost replies, resends, deadlines,
drops, limits) are in test_kurrentdb_faults.py; the same on a real server in
test_kurrentdb_real.py when KURRENTDB_URI is set."""

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kurrentdbclient import NewEvent, StreamState

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.values import account_uuid, transfer_uuid
from app.persistence.kurrentdb import UnsupportedServerError
from app.persistence.stores import event_store_env
from projections.runner import ProjectionWorkers
from tests.support.fake_kurrentdb import server_named


def fake_url() -> str:
    return f"fake://{uuid.uuid4().hex}"


@contextmanager
def funded(url: str) -> Iterator[Ledger]:
    with Ledger(event_store_env(url)) as ledger:
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "CREDITS"))
        yield ledger


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("kurrentdb://localhost:2113?Tls=false", "app.persistence.kurrentdb"),
        ("esdb://admin:changeit@localhost:2113", "app.persistence.kurrentdb"),
        ("kurrentdb+discover://a:2113,b:2113?tls=true", "app.persistence.kurrentdb"),
    ],
)
def test_kurrentdb_urls_select_the_multi_stream_recorder(url: str, module: str) -> None:
    env = event_store_env(url)
    assert env["PERSISTENCE_MODULE"].startswith(module)
    assert env["KURRENTDB_URI"] == url


def test_a_server_without_multi_stream_append_is_refused_at_start_up() -> None:
    url = fake_url()
    server_named(url.removeprefix("fake://")).supports_multi_append = False
    with pytest.raises(UnsupportedServerError, match=r"25\.1"):
        Ledger(event_store_env(url))


def test_a_transfer_and_both_accounts_are_one_append() -> None:
    url = fake_url()
    with funded(url) as ledger:
        server = server_named(url.removeprefix("fake://"))
        before = len(server.log)
        outcome = ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
        written = server.log[before:]
        assert {event.stream_name for event in written} == {
            str(account_uuid("bank")),
            str(account_uuid("alice")),
            str(transfer_uuid("t1")),
        }
        assert len(written) == 3  # debit leg, credit leg, TransferRecorded
        assert outcome.position == written[-1].commit_position


def test_positions_have_gaps_and_the_views_follow_them(tmp_path: Path) -> None:
    url = fake_url()
    with funded(url) as ledger:
        workers = ProjectionWorkers(url, f"sqlite:///{tmp_path / 'views.sqlite'}", ledger).start()
        try:
            outcomes = [
                ledger.record_transfer(RecordTransfer(f"t{i}", "bank", "alice", i + 1))
                for i in range(10)
            ]
            positions = [outcome.position for outcome in outcomes]
            assert any(b - a > 3 for a, b in itertools.pairwise(positions))
            assert workers.view.wait_for(positions[-1], 10)
            balance = workers.view.balance("alice")
            assert balance is not None
            assert balance.balance == sum(range(1, 11))
            at_fifth = workers.view.balance_at_position("alice", positions[4])
            assert at_fifth is not None
            assert at_fifth.balance == sum(range(1, 6))
            assert workers.lag().positions == 0
        finally:
            workers.stop()


def test_the_subscription_sees_only_ledger_events() -> None:
    url = fake_url()
    with funded(url) as ledger:
        server = server_named(url.removeprefix("fake://"))
        client = ledger.recorder.client  # type: ignore[attr-defined]
        client.append_events(
            "someone-else",
            current_version=StreamState.ANY,
            events=[NewEvent(type="ForeignEvent", data=b"{}")],
        )
        ledger.record_transfer(RecordTransfer("t1", "bank", "alice", 5))
        types = [
            notification.topic for notification in ledger.recorder.select_notifications(0, 100)
        ]
        assert "ForeignEvent" not in types
        assert all(topic.startswith("app.domain.") for topic in types)
        assert len(types) == len(
            [
                e
                for e in server.log
                if e.type.startswith("app.domain.") and not e.type.endswith("Snapshot")
            ]
        )
