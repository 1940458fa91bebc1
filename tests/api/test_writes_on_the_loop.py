"""Every write endpoint awaits the committer on the event loop: none runs its handler in a
worker thread (a thread hop per request, each paying a wake-up and the interpreter lock).
Each write is still answered as before; the committer sees every command arrive from the
thread that runs the event loop."""

import asyncio
from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from app.api.services import Services
from app.application.committer import Pending
from tests.api.helpers import Client, fund, ok, open_account, open_issuer, record, transfer_body

WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


def write_handlers(app: Litestar) -> list[HTTPRouteHandler]:
    """The handlers of the write endpoints that go through the ledger's committer."""
    found = []
    for route in app.routes:
        if not route.path.startswith(("/v1/accounts", "/v1/transfers")):
            continue
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler) and handler.http_methods & WRITE_METHODS:
                found.append(handler)
    return found


def test_every_ledger_write_endpoint_is_a_coroutine_run_on_the_loop(app: Litestar) -> None:
    handlers = write_handlers(app)
    names = {handler.handler_name for handler in handlers}
    assert {"open", "update", "close", "record", "batch", "post_pending", "void_pending"} <= names
    assert "reverse" in names
    assert [h.handler_name for h in handlers if h.has_sync_callable] == []


@pytest.fixture
def queued_from(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each command queued from now on: whether its thread was running an event loop."""
    seen: list[bool] = []
    committer = services.ledger.committer
    original = committer._enqueue

    def enqueue(entries: list[Pending[Any]], *, wake: bool = True) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            seen.append(False)
        else:
            seen.append(True)
        original(entries, wake=wake)

    monkeypatch.setattr(committer, "_enqueue", enqueue)
    return seen


def test_every_write_is_queued_from_the_event_loop_and_answered(
    client: Client, queued_from: list[bool]
) -> None:
    open_issuer(client)
    open_account(client, "alice")
    open_account(client, "bob")
    fund(client, "alice", 100)
    metadata = {"metadata": {"team": "red"}}
    assert ok(client.patch("/v1/accounts/bob", json=metadata))["metadata"] == {"team": "red"}
    hold = record(client, "hold-1", "alice", "bob", 10, pending=True)
    assert hold["status"] == "pending"
    assert ok(client.post("/v1/transfers/hold-1/post", json={"amount": 4}))["amount_posted"] == 4
    record(client, "hold-2", "alice", "bob", 5, pending=True)
    assert ok(client.post("/v1/transfers/hold-2/void"))["status"] == "voided"
    reversal = client.post("/v1/transfers/hold-1/reverse", json={"id": "refund-1"})
    assert ok(reversal, 201)["reversal_of"] == "hold-1"
    for atomic in (True, False):
        items = [transfer_body(f"b-{atomic}-{n}", "alice", "bob", 1) for n in range(3)]
        batch = ok(client.post("/v1/transfers/batch", json={"atomic": atomic, "transfers": items}))
        assert [item["status"] for item in batch["results"]] == [201, 201, 201]
    open_account(client, "carol")
    assert ok(client.post("/v1/accounts/carol/close"))["status"] == "closed"
    assert len(queued_from) >= 13
    assert all(queued_from), queued_from
