"""The public event feed over HTTP: every event once and in order, the public shapes
with balances after each change, filters, cursors across restarts, long-poll and bad
input."""

import threading
import time
from typing import Any, get_args

import pytest

from app.api.services import Services
from app.events.feed import WAIT_SECONDS_MAX
from app.events.schema import EVENT_TYPES, EventType
from tests.api.helpers import (
    ISSUER,
    Client,
    Json,
    assert_problem,
    fund,
    ok,
    open_account,
    open_issuer,
    record,
)

FEED_WAIT_SECONDS = 10.0


def feed(client: Client, **query: Any) -> Json:
    return ok(client.get("/v1/events", params=query))


def read_all(client: Client, after: str = "", **query: Any) -> tuple[list[Json], str]:
    """Follow the feed page by page until a page comes back empty."""
    events: list[Json] = []
    while True:
        page = feed(client, after=after, limit=3, **query)
        if not page["items"]:
            return events, after
        events += page["items"]
        after = page["next_cursor"]


def wait_for_events(client: Client, count: int, **query: Any) -> list[Json]:
    deadline = time.monotonic() + FEED_WAIT_SECONDS
    while True:
        events, _ = read_all(client, **query)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def test_a_transfer_appears_once_with_the_balances_just_after_it(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    fund(client, "alice", 70, "t1")
    record(client, "t2", "alice", ISSUER, 20)

    events = wait_for_events(client, 4)

    assert [event["type"] for event in events] == [
        "account.opened",
        "account.opened",
        "transfer.recorded",
        "transfer.recorded",
    ]
    positions = [event["position"] for event in events]
    assert positions == sorted(positions)
    assert len({event["id"] for event in events}) == 4
    t1, t2 = events[2]["data"], events[3]["data"]
    assert t1["transfer"]["id"] == "t1"
    assert t1["transfer"]["status"] == "posted"
    balances_after_t1 = {account["id"]: account["balance"] for account in t1["accounts"]}
    assert balances_after_t1 == {ISSUER: -70, "alice": 70}
    balances_after_t2 = {account["id"]: account["balance"] for account in t2["accounts"]}
    assert balances_after_t2 == {ISSUER: -50, "alice": 50}
    assert events[1]["data"]["account"]["id"] == "alice"
    assert events[1]["data"]["account"]["balance"] == 0
    for event in events:
        assert set(event) == {"id", "type", "version", "position", "occurred_at", "data"}
        assert event["version"] == 1


def test_an_atomic_batch_gives_each_transfer_the_balances_after_itself(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    body = {
        "atomic": True,
        "transfers": [
            {"id": f"b{n}", "debit_account_id": ISSUER, "credit_account_id": "alice", "amount": 10}
            for n in range(5)
        ],
    }
    ok(client.post("/v1/transfers/batch", json=body))

    events = wait_for_events(client, 5, types="transfer.recorded")

    after = [
        next(a["balance"] for a in event["data"]["accounts"] if a["id"] == "alice")
        for event in events
    ]
    assert after == [10, 20, 30, 40, 50]


def test_two_phase_close_and_reversal_have_their_own_types(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    open_account(client, "bob")
    fund(client, "alice", 100, "f")
    record(client, "h1", "alice", "bob", 30, pending=True)
    ok(client.post("/v1/transfers/h1/post", json={"amount": 20}))
    record(client, "h2", "alice", "bob", 5, pending=True)
    ok(client.post("/v1/transfers/h2/void", json={}))
    ok(client.post("/v1/transfers/h1/reverse", json={"id": "refund"}), 201)
    ok(client.post("/v1/accounts/bob/close"))

    types = [e["type"] for e in wait_for_events(client, 12)]

    assert types[3:] == [
        "transfer.recorded",
        "transfer.recorded",
        "transfer.posted",
        "transfer.recorded",
        "transfer.voided",
        "transfer.reversed",  # the original is written first in the reversal's commit
        "transfer.recorded",
        "account.closed",
    ]
    posted = wait_for_events(client, 1, types="transfer.posted")[0]["data"]
    assert posted["transfer"]["amount_posted"] == 20
    alice = next(a for a in posted["accounts"] if a["id"] == "alice")
    assert (alice["balance"], alice["debits_pending"]) == (80, 0)


def test_filters_by_type_and_by_account(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    open_account(client, "bob")
    fund(client, "alice", 10, "fa")
    fund(client, "bob", 10, "fb")
    wait_for_events(client, 5)

    opened, _ = read_all(client, types="account.opened")
    bobs, _ = read_all(client, account_id="bob")
    both, _ = read_all(client, types="account.opened,transfer.recorded", account_id="alice")

    assert [e["data"]["account"]["id"] for e in opened] == [ISSUER, "alice", "bob"]
    assert [e["type"] for e in bobs] == ["account.opened", "transfer.recorded"]
    assert bobs[1]["data"]["transfer"]["id"] == "fb"
    assert [e["type"] for e in both] == ["account.opened", "transfer.recorded"]


def test_a_stored_cursor_resumes_without_loss_or_repeat(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    seen, cursor = read_all(client)
    for n in range(7):
        fund(client, "alice", 1, f"t{n}")
        if n % 2:
            more, cursor = read_all(client, after=cursor)
            seen += more
    wait_for_events(client, 9)
    more, cursor = read_all(client, after=cursor)
    seen += more

    everything, _ = read_all(client)
    assert [e["id"] for e in seen] == [e["id"] for e in everything]
    assert len(everything) == 9


def test_long_poll_answers_as_soon_as_an_event_arrives(client: Client, services: Services) -> None:
    open_issuer(client)
    open_account(client, "alice")
    wait_for_events(client, 2)
    cursor = feed(client)["next_cursor"]
    writer = threading.Timer(0.5, lambda: open_account(client, "bob"))

    started = time.monotonic()
    writer.start()
    page = feed(client, after=cursor, wait_seconds=WAIT_SECONDS_MAX)
    waited = time.monotonic() - started
    writer.join()

    assert [e["data"]["account"]["id"] for e in page["items"]] == ["bob"]
    # After the write, and well before the wait would have ended: however slow a loaded
    # machine makes the write and the answer, it is not a whole wait's worth of it.
    assert 0.4 < waited < WAIT_SECONDS_MAX / 2


def test_long_poll_with_nothing_new_answers_empty_after_the_wait(client: Client) -> None:
    open_issuer(client)
    wait_for_events(client, 1)
    cursor = feed(client)["next_cursor"]

    started = time.monotonic()
    page = feed(client, after=cursor, wait_seconds=0.3)

    assert page == {"items": [], "next_cursor": cursor}
    assert 0.25 < time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"types": "transfer.exploded"}, 422, "unknown_event_type"),
        ({"types": ",".join(["account.opened"] * 400)}, 422, "filter_too_large"),
        ({"types": "account.opened,x.y"}, 422, "unknown_event_type"),
        (
            {"types": ",".join(f"{name}.{n}" for name in EVENT_TYPES for n in range(2))},
            422,
            "filter_too_large",
        ),
        ({"after": "-1"}, 400, "invalid_cursor"),
        ({"typez": "account.opened"}, 400, "unknown_parameter"),
        ({"after": "9" * 40}, 400, "invalid_cursor"),
        ({"limit": 0}, 422, "validation_error"),
        ({"limit": 5000}, 422, "validation_error"),
        ({"wait_seconds": 31}, 422, "validation_error"),
        ({"account_id": "not valid!"}, 422, "validation_error"),
    ],
)
def test_bad_feed_queries_are_refused_clearly(
    client: Client, query: dict[str, Any], status: int, code: str
) -> None:
    assert_problem(client.get("/v1/events", params=query), status, code)


def test_the_feed_needs_a_read_key(client: Client) -> None:
    del client.headers["Authorization"]
    assert_problem(client.get("/v1/events"), 401, "unauthorized")


def test_the_schema_names_every_public_type_once() -> None:
    assert list(get_args(EventType)) == list(EVENT_TYPES)


def test_the_openapi_document_describes_the_public_event(client: Client) -> None:
    document = client.get("/schema/openapi.json").json()
    event = document["components"]["schemas"]["PublicEvent"]
    assert set(event["properties"]) == {"id", "type", "version", "position", "occurred_at", "data"}
    assert event["properties"]["type"]["$ref"] == "#/components/schemas/EventType"
    assert document["components"]["schemas"]["EventType"]["enum"] == list(EVENT_TYPES)
    assert "/v1/events/stream" in document["paths"]


def test_a_metadata_update_is_published_as_account_updated(client: Client) -> None:
    open_account(client, "alice", metadata={"plan": "free", "trial": "yes"})
    ok(client.patch("/v1/accounts/alice", json={"metadata": {"plan": "pro", "trial": None}}))

    events = wait_for_events(client, 2, account_id="alice")

    assert [event["type"] for event in events] == ["account.opened", "account.updated"]
    assert events[1]["data"]["account"]["metadata"] == {"plan": "pro"}
    assert events[1]["position"] > events[0]["position"]
