"""``POST /v1/transfers`` goes from the app's exception middleware straight to its
route's stack, past Litestar's router (``app.compat.route_directly``, decision 0030).
Every request, taken directly or not, answers, logs and counts exactly as it does
through the router: the same requests sent to an app built with the router alone give
the same bytes, the same access lines and the same metrics."""

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import structlog
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import generate_latest

from app.api import app as app_module
from app.api.app import create_app
from app.api.services import Services
from app.bootstrap import configure_logging
from app.settings import Settings
from tests.api.helpers import Client, fund, open_account, open_issuer, transfer_body

REQUEST_ID: Final = "direct-route-test"
# What differs between two answers to the same request: when it was answered, how long
# it took (the access line) and a new transfer's own values (its id, time and position).
VARYING_LINE_FIELDS: Final = ("timestamp", "ms")
# The metrics every request touches (samples of the app's own registry).
COMPARED_METRICS: Final = (
    "ledger_http_requests_total",
    "ledger_http_request_duration_seconds_count",
    "ledger_transfers_recorded_total",
    "ledger_rejections_total",
)

Send = Callable[[Client], httpx.Response]


@pytest.fixture
def stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The process's logging configured as ``ledger serve`` does, onto a buffer."""
    handlers = list(logging.getLogger().handlers)
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging(Settings(data_dir=tmp_path / "logs"))
    # No logger keeps this buffer once the test is over (a module's lazy logger, such as
    # the error handlers', would cache its first binding for the rest of the process).
    structlog.configure(cache_logger_on_first_use=False)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers[:] = handlers


@pytest.fixture
def routed(
    services: Services, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    """A client of an app that routes every request through Litestar's router."""
    with monkeypatch.context() as patch:
        patch.setattr(app_module, "route_directly", lambda *_: None)
        app = create_app(services)
    with TestClient(app=app) as client:
        client.headers["Authorization"] = f"Bearer {keys['admin']}"
        yield client


@pytest.fixture
def direct(routed: Client, client: Client) -> Client:
    """The product's app (its transfers taken directly), over the same ledger, funded."""
    open_issuer(client)
    for name in ("alice", "bob"):
        open_account(client, name)
    fund(client, "alice", 100)
    return client


def post(body: Any, path: str = "/v1/transfers", **options: Any) -> Send:
    headers = {"X-Request-ID": REQUEST_ID, **options.pop("headers", {})}

    def send(client: Client) -> httpx.Response:
        if isinstance(body, bytes):
            return client.post(path, content=body, headers=headers, **options)
        return client.post(path, json=body, headers=headers, **options)

    return send


def answer(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers in order, body; a 405's ``Allow`` as a sorted list (Litestar
    lists a route's methods from a set, in an order that varies between two apps)."""
    headers = [
        (name, b", ".join(sorted(value.split(b", "))) if name == b"allow" else value)
        for name, value in response.headers.raw
    ]
    return response.status_code, headers, response.content


def access_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The access lines written since the last call, without their varying fields."""
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    buffer.seek(0)
    buffer.truncate()
    accesses = [line for line in lines if line.get("event") == "request"]
    for line in accesses:
        for field in VARYING_LINE_FIELDS:
            assert field in line, line
            line.pop(field)
    return accesses


def counted(client: Client) -> dict[str, float]:
    """The compared metrics of the client's app: each sample by name and labels."""
    app = client.app
    assert isinstance(app, Litestar)
    samples: dict[str, float] = {}
    for text in generate_latest(app.state.metrics.registry).decode().splitlines():
        name = text.split("{")[0].split(" ")[0]
        if name in COMPARED_METRICS:
            labels_and_value = text[len(name) :]
            samples[name + labels_and_value.rsplit(" ", 1)[0]] = float(text.rsplit(" ", 1)[1])
    return samples


def both_ways(
    routed: Client,
    direct: Client,
    stderr: io.StringIO,
    send: Send,
    other: Send | None = None,
    *,
    logged: bool = True,
) -> tuple[httpx.Response, httpx.Response]:
    """The request through the router, then directly (or ``other`` if given): the same
    access line (none when not ``logged``), the same counts added to each app's metrics."""
    access_lines(stderr)
    before = counted(routed), counted(direct)
    by_router = send(routed)
    router_lines = access_lines(stderr)
    by_direct = (other or send)(direct)
    assert access_lines(stderr) == router_lines
    assert len(router_lines) == logged, router_lines
    after = counted(routed), counted(direct)
    added = [
        {sample: value - was.get(sample, 0.0) for sample, value in now.items()}
        for was, now in zip(before, after, strict=True)
    ]
    assert {k: v for k, v in added[0].items() if v} == {k: v for k, v in added[1].items() if v}
    return by_router, by_direct


# The router refuses a bad Host header or method before any route's middleware: no
# access line (before this decision too).
UNLOGGED: Final = False


@pytest.mark.parametrize(
    ("send", "status", "logged"),
    [
        (post(transfer_body("t-0", "alice", "bob", 5)), 200, True),  # resent: a replay
        (post(transfer_body("big", "alice", "bob", 1_000)), 422, True),  # insufficient funds
        (post(transfer_body("t-9", "alice", "nobody", 1)), 404, True),  # unknown account
        (post(b'{"id": "x", '), 400, True),  # not JSON
        (post({"id": "x", "amount": 1}), 422, True),  # not a transfer
        (post(transfer_body("x", "alice", "bob", 1), params={"dry_run": "1"}), 400, True),
        (
            post(transfer_body("x", "alice", "bob", 1), headers={"Authorization": "Bearer no"}),
            401,
            True,
        ),
        (post(transfer_body("x", "alice", "bob", 1), headers={"Host": "bad/host"}), 400, UNLOGGED),
        (post(transfer_body("t-0", "alice", "bob", 5), path="/v1/transfers/"), 200, True),
        (  # another route of the path (refused: an answer that needs no views)
            lambda client: client.get(
                "/v1/transfers", params={"limit": "0"}, headers={"X-Request-ID": REQUEST_ID}
            ),
            422,
            True,
        ),
        (
            lambda client: client.put("/v1/transfers", headers={"X-Request-ID": REQUEST_ID}),
            405,
            UNLOGGED,
        ),
    ],
)
def test_a_request_answers_logs_and_counts_the_same_taken_directly_or_routed(
    routed: Client,
    direct: Client,
    stderr: io.StringIO,
    send: Send,
    status: int,
    logged: bool,
) -> None:
    assert post(transfer_body("t-0", "alice", "bob", 5))(direct).status_code == 201
    by_router, by_direct = both_ways(routed, direct, stderr, send, logged=logged)
    assert by_router.status_code == status, by_router.text
    assert answer(by_router) == answer(by_direct)


def test_a_new_transfer_answers_logs_and_counts_the_same_taken_directly_or_routed(
    routed: Client, direct: Client, stderr: io.StringIO
) -> None:
    by_router, by_direct = both_ways(
        routed,
        direct,
        stderr,
        post(transfer_body("t-1", "alice", "bob", 1)),
        post(transfer_body("t-2", "alice", "bob", 1)),
    )
    assert by_router.status_code == by_direct.status_code == 201
    assert [name for name, _ in by_router.headers.raw] == [
        name for name, _ in by_direct.headers.raw
    ]
    assert by_direct.headers["location"] == "/v1/transfers/t-2"
    router_body, direct_body = by_router.json(), by_direct.json()
    for varying in ("id", "recorded_at", "position"):
        router_body.pop(varying)
        direct_body.pop(varying)
    assert router_body == direct_body


def test_a_bug_answers_logs_and_counts_the_same_taken_directly_or_routed(
    routed: Client,
    direct: Client,
    stderr: io.StringIO,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*_: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(services.ledger, "record_transfer_async", broken)
    by_router, by_direct = both_ways(
        routed, direct, stderr, post(transfer_body("t-bug", "alice", "bob", 1))
    )
    assert by_router.status_code == 500
    assert by_direct.headers["x-request-id"] == REQUEST_ID
    assert answer(by_router) == answer(by_direct)
