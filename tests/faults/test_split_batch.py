"""An independent (not atomic) batch whose items are written by two group writes, the
second failing on a store fault: each item says what happened to it. The items the
first write committed answer their transfers, the others their own fault; never one
store error for the whole batch, which would hide the items that did move money."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from eventsourcing.persistence import OperationalError
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.application import committer
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import TransferOutcome
from app.application.workspace import Written
from app.bootstrap import build_services, shutdown
from app.domain.errors import StoreUnavailableError
from app.settings import Settings
from tests.api.helpers import transfer_body
from tests.conftest import store_env

ISSUER: Final = "issuer"
# Two transfers per group write: a batch of four is written by two.
GROUP_UNITS: Final = 2
ITEMS: Final = 4


def locked_after(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, writes_allowed: int) -> None:
    """The ledger's next ``writes_allowed`` group writes commit; every later one meets a
    locked store (SQLite's busy error, as the library raises it)."""
    record = ledger._record_events
    writes = 0

    def until_locked(events: Any) -> Written:
        nonlocal writes
        writes += 1
        if writes > writes_allowed:
            locked = sqlite3.OperationalError("database is locked")
            raise OperationalError(str(locked)) from locked
        return record(events)

    monkeypatch.setattr(ledger, "_record_events", until_locked)


def batch() -> list[RecordTransfer]:
    return [RecordTransfer(f"t{n}", ISSUER, "alice", 1) for n in range(ITEMS)]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(store_env(f"sqlite:///{tmp_path / 'events.sqlite'}"))
    try:
        opened.open_account(OpenAccount(ISSUER, "CREDITS", allow_negative=True))
        opened.open_account(OpenAccount("alice", "CREDITS"))
        yield opened
    finally:
        opened.close()


def test_a_batch_split_over_two_writes_answers_each_item_for_itself(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(committer, "GROUP_UNITS_MAX", GROUP_UNITS)
    with monkeypatch.context() as patched:
        locked_after(ledger, patched, writes_allowed=1)
        outcome = ledger.record_batch(batch(), atomic=False)
    written, failed = outcome.results[:GROUP_UNITS], outcome.results[GROUP_UNITS:]
    assert all(isinstance(r, TransferOutcome) and r.created for r in written), written
    assert all(isinstance(r, StoreUnavailableError) for r in failed), failed
    assert ledger.get_account("alice").balance == GROUP_UNITS

    # Sending the batch again (safe) settles the rest and moves nothing twice.
    again = ledger.record_batch(batch(), atomic=False)
    created = [isinstance(r, TransferOutcome) and r.created for r in again.results]
    assert created == [False] * GROUP_UNITS + [True] * (ITEMS - GROUP_UNITS)
    assert ledger.get_account("alice").balance == ITEMS


def test_a_batch_none_of_whose_items_was_written_answers_the_store_fault(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing committed: the fault is the whole batch's answer (503, nothing written),
    as for a single transfer."""
    monkeypatch.setattr(committer, "GROUP_UNITS_MAX", GROUP_UNITS)
    with monkeypatch.context() as patched:
        locked_after(ledger, patched, writes_allowed=0)
        with pytest.raises(OperationalError):
            ledger.record_batch(batch(), atomic=False)
    assert ledger.get_account("alice").balance == 0


def test_over_http_the_split_batch_answers_201_and_503_item_by_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(committer, "GROUP_UNITS_MAX", GROUP_UNITS)
    settings = Settings(data_dir=tmp_path, log_format="console")
    services = build_services(settings, projections=False)
    try:
        with TestClient[Litestar](app=create_app(services)) as client:
            client.headers["Authorization"] = f"Bearer {services.keys.create('admin')}"
            for body in (
                {"id": ISSUER, "unit": "CREDITS", "allow_negative": True},
                {"id": "alice", "unit": "CREDITS"},
            ):
                assert client.post("/v1/accounts", json=body).status_code == 201
            items = [transfer_body(f"t{n}", ISSUER, "alice", 1) for n in range(ITEMS)]
            locked_after(services.ledger, monkeypatch, writes_allowed=1)
            response = client.post(
                "/v1/transfers/batch", json={"atomic": False, "transfers": items}
            )
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert [r["status"] for r in results] == [201] * GROUP_UNITS + [503] * (
                ITEMS - GROUP_UNITS
            )
            for index, result in enumerate(results[GROUP_UNITS:], start=GROUP_UNITS):
                assert result["error"]["code"] == "store_unavailable"
                assert result["error"]["index"] == index
            assert services.ledger.get_account("alice").balance == GROUP_UNITS
    finally:
        shutdown(services)
