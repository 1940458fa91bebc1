"""``POST /v1/transfers`` answers an ordinary request in its fast lane (app.api.fast_lane)
and everything else through the route's own handler: either way the client gets the
same bytes (status, headers in order, body), whatever the request."""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.api import fast_lane
from app.api.app import create_app
from app.api.services import Services
from app.domain.errors import OverloadedError
from tests.api.helpers import ISSUER, Client, fund, open_account, open_issuer, transfer_body

REQUEST_ID = "fast-lane-test"


@pytest.fixture
def lane_answers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The statuses the fast lane itself answered with, in order."""
    answered: list[int] = []
    answer = fast_lane._answer
    answer_error = fast_lane._answer_error

    async def counted(send: Any, outcome: Any) -> None:
        answered.append(201 if outcome.created else 200)
        await answer(send, outcome)

    async def counted_error(scope: Any, receive: Any, send: Any, error: Exception) -> None:
        answered.append(-1)
        await answer_error(scope, receive, send, error)

    monkeypatch.setattr(fast_lane, "_answer", counted)
    monkeypatch.setattr(fast_lane, "_answer_error", counted_error)
    return answered


@contextmanager
def through_the_route(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every request handed to the route's handler, as the lane does when unsure."""
    with monkeypatch.context() as patch:
        patch.setattr(fast_lane, "_authorized", lambda *_: False)
        yield


def send(client: Client, body: Any, **options: Any) -> httpx.Response:
    headers = {"X-Request-ID": REQUEST_ID, **options.pop("headers", {})}
    if isinstance(body, bytes):
        return client.post("/v1/transfers", content=body, headers=headers, **options)
    return client.post("/v1/transfers", json=body, headers=headers, **options)


def answer(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.headers.raw), response.content


def both_ways(
    client: Client, monkeypatch: pytest.MonkeyPatch, request: Callable[[], httpx.Response]
) -> tuple[httpx.Response, httpx.Response]:
    with through_the_route(monkeypatch):
        by_route = request()
    return by_route, request()


@pytest.fixture
def funded(client: Client) -> Client:
    open_issuer(client)
    for name in ("alice", "bob"):
        open_account(client, name)
    fund(client, "alice", 100)
    return client


def test_an_ordinary_transfer_takes_the_lane_and_answers_as_the_route(
    funded: Client, monkeypatch: pytest.MonkeyPatch, lane_answers: list[int]
) -> None:
    with through_the_route(monkeypatch):
        by_route = send(funded, transfer_body("t-route", "alice", "bob", 5))
    by_lane = send(funded, transfer_body("t-lane", "alice", "bob", 5))
    assert lane_answers == [201]
    assert by_route.status_code == by_lane.status_code == 201
    # The same headers in the same order; only the new transfer's own values differ.
    assert [name for name, _ in by_route.headers.raw] == [name for name, _ in by_lane.headers.raw]
    assert by_lane.headers["location"] == "/v1/transfers/t-lane"
    route_body, lane_body = by_route.json(), by_lane.json()
    for varying in ("id", "recorded_at", "position"):
        route_body.pop(varying)
        lane_body.pop(varying)
    assert route_body == lane_body


def test_a_resent_transfer_is_the_same_bytes_from_the_lane_and_the_route(
    funded: Client, monkeypatch: pytest.MonkeyPatch, lane_answers: list[int]
) -> None:
    first = send(funded, transfer_body("t1", "alice", "bob", 7))
    assert first.status_code == 201
    by_route, by_lane = both_ways(
        funded, monkeypatch, lambda: send(funded, transfer_body("t1", "alice", "bob", 7))
    )
    assert lane_answers == [201, 200]
    assert by_route.status_code == 200
    assert answer(by_route) == answer(by_lane)
    assert by_lane.content == first.content  # a replay is the first answer, as recorded


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (transfer_body("big", "alice", "bob", 1_000), 422),  # insufficient funds
        (transfer_body("t9", "alice", "nobody", 1), 404),  # unknown account
        (transfer_body("t9", "alice", "alice", 1), 422),  # a rule across fields
    ],
)
def test_a_refused_write_is_the_same_problem_from_the_lane_and_the_route(
    funded: Client,
    monkeypatch: pytest.MonkeyPatch,
    lane_answers: list[int],
    body: dict[str, Any],
    status: int,
) -> None:
    by_route, by_lane = both_ways(funded, monkeypatch, lambda: send(funded, body))
    assert by_route.status_code == status
    assert lane_answers == [-1]
    assert answer(by_route) == answer(by_lane)


def test_an_overloaded_ledger_is_the_same_503_from_the_lane_and_the_route(
    funded: Client, services: Services, monkeypatch: pytest.MonkeyPatch, lane_answers: list[int]
) -> None:
    async def overloaded(*_: Any) -> None:
        raise OverloadedError("the write queue is full; retry shortly")

    monkeypatch.setattr(services.ledger, "record_transfer_async", overloaded)
    body = transfer_body("t-busy", "alice", "bob", 1)
    by_route, by_lane = both_ways(funded, monkeypatch, lambda: send(funded, body))
    assert by_route.status_code == 503
    assert "retry-after" in by_lane.headers
    assert lane_answers == [-1]
    assert answer(by_route) == answer(by_lane)


def test_a_raw_store_fault_is_the_same_problem_from_the_lane_and_the_route(
    funded: Client, services: Services, monkeypatch: pytest.MonkeyPatch, lane_answers: list[int]
) -> None:
    async def locked(*_: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(services.ledger, "record_transfer_async", locked)
    body = transfer_body("t-locked", "alice", "bob", 1)
    by_route, by_lane = both_ways(funded, monkeypatch, lambda: send(funded, body))
    assert by_route.status_code == 503
    assert by_route.json()["code"] == "store_unavailable"
    assert lane_answers == [-1]
    assert answer(by_route) == answer(by_lane)


def test_a_bug_in_the_write_is_litestars_500_with_the_request_id_as_from_the_route(
    funded: Client, services: Services, monkeypatch: pytest.MonkeyPatch, lane_answers: list[int]
) -> None:
    """Neither a refusal nor a store fault: the lane does not catch it (the style allows
    a broad catch only at a process boundary), so Litestar's app-level exception
    handling answers it, outside the request context; the answer still carries the
    request id the problem's detail quotes, and is the route's, byte for byte."""

    async def broken(*_: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(services.ledger, "record_transfer_async", broken)
    body = transfer_body("t-bug", "alice", "bob", 1)
    by_route, by_lane = both_ways(funded, monkeypatch, lambda: send(funded, body))
    assert lane_answers == []
    assert by_lane.status_code == 500
    assert by_lane.json()["code"] == "internal_error"
    assert by_lane.headers["x-request-id"] == REQUEST_ID
    assert REQUEST_ID in by_lane.json()["detail"]
    assert answer(by_route) == answer(by_lane)


@pytest.mark.parametrize(
    ("body", "options"),
    [
        (b'{"id": "x", ', {}),  # not JSON
        (b"[1, 2]", {}),  # JSON, not an object
        (b'{"id": "\xff"}', {}),  # not UTF-8
        (b"[" * 2_000 + b"]" * 2_000, {}),  # nested too deep to decode
        (b'{"id": "x", "amount": 1' + b"0" * 40 + b"}", {}),  # a number out of range
        ({"id": "x", "debit_account_id": "alice", "credit_account_id": "bob"}, {}),  # no amount
        ({**transfer_body("x", "alice", "bob", 1), "amount": "5"}, {}),  # text is no amount
        ({**transfer_body("x", "alice", "bob", 1), "amount": 1.0}, {}),  # nor is a float
        (transfer_body("x", "alice", "bob", 1, colour="red"), {}),  # an unknown field
        (transfer_body("x", "alice", "bob", 1), {"params": {"dry_run": "1"}}),
        (transfer_body("x", "alice", "bob", 1), {"headers": {"Authorization": "Bearer nope"}}),
        (transfer_body("x", "alice", "bob", 1), {"headers": {"Authorization": "Basic a:b"}}),
    ],
)
def test_every_request_refused_before_the_write_is_answered_by_the_route(
    funded: Client,
    monkeypatch: pytest.MonkeyPatch,
    lane_answers: list[int],
    body: Any,
    options: dict[str, Any],
) -> None:
    by_route, by_lane = both_ways(funded, monkeypatch, lambda: send(funded, body, **options))
    assert 400 <= by_route.status_code < 500
    assert lane_answers == []
    assert answer(by_route) == answer(by_lane)


def test_a_read_only_key_is_refused_by_the_route(
    funded: Client, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, lane_answers: list[int]
) -> None:
    headers = {"Authorization": f"Bearer {keys['read']}"}
    body = transfer_body("x", "alice", "bob", 1)
    by_route, by_lane = both_ways(funded, monkeypatch, lambda: send(funded, body, headers=headers))
    assert by_route.status_code == 403
    assert lane_answers == []
    assert answer(by_route) == answer(by_lane)


def test_a_body_over_the_limit_is_refused_by_the_route(
    services: Services,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    lane_answers: list[int],
) -> None:
    monkeypatch.setattr(services.settings, "request_body_bytes_max", 120)
    with TestClient(app=create_app(services)) as small:
        small.headers["Authorization"] = f"Bearer {keys['admin']}"
        open_issuer(small)
        open_account(small, "bob")
        fits = send(small, transfer_body("x", ISSUER, "bob", 1))
        assert fits.status_code == 201
        body = transfer_body("x" * 60, ISSUER, "bob", 1)
        by_route, by_lane = both_ways(small, monkeypatch, lambda: send(small, body))
    assert by_route.status_code == 413
    assert lane_answers == [201]
    assert answer(by_route) == answer(by_lane)


def test_the_route_still_has_only_what_the_lane_reproduces(app: Litestar) -> None:
    """The lane answers for the route: a guard, hook, dependency or parameter added to
    the route must be added to the lane too (or the route leaves the lane). This fails
    until both agree again."""
    route = next(r for r in app.routes if r.path == "/v1/transfers")
    handler = next(h for h in getattr(route, "route_handlers", []) if "POST" in h.http_methods)
    assert handler.handler_name == "record"
    assert len(handler.resolve_guards()) == 1  # requires("write"): the lane's _authorized
    assert handler.resolve_before_request() is not None  # refuse_unknown_parameters: no query
    assert handler.resolve_after_response() is None
    assert not handler.cache
    assert set(handler.parsed_fn_signature.parameters) == {"request", "data", "services"}
    # Innermost first: the lane runs inside the request context (ids, logs, metrics).
    assert [m.__name__ for m in handler.resolve_middleware()] == [
        "transfer_fast_lane",
        "request_context",
    ]
