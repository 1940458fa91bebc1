"""Balance monitors over HTTP: create, read, list, delete; a crossing reaches the feed;
bad input refused with nothing stored."""

import time
from typing import Any

import pytest

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


def monitors(client: Client, **query: Any) -> list[Json]:
    items: list[Json] = ok(client.get("/v1/monitors", params=query))["items"]
    return items


def test_a_monitor_announces_its_crossing_in_the_feed(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    fund(client, "alice", 100, "f")
    monitor = ok(
        client.post(
            "/v1/monitors",
            json={"account_id": "alice", "field": "available", "below": 20, "description": "low"},
        ),
        201,
    )
    assert (monitor["below"], monitor["above"], monitor["field"]) == (20, None, "available")
    record(client, "spend1", "alice", ISSUER, 50)
    record(client, "spend2", "alice", ISSUER, 40)
    record(client, "spend3", "alice", ISSUER, 5)

    deadline = time.monotonic() + 10
    while True:
        crossed = ok(client.get("/v1/events", params={"types": "balance.threshold_crossed"}))
        if crossed["items"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)

    [event] = crossed["items"]
    assert event["data"]["transfer_id"] == "spend2"
    assert (event["data"]["previous_value"], event["data"]["value"]) == (50, 10)
    assert event["data"]["direction"] == "down"
    assert event["data"]["monitor"]["id"] == monitor["id"]
    assert ok(client.get(f"/v1/monitors/{monitor['id']}"))["condition_holds"] is True


def test_monitors_are_listed_read_and_deleted(client: Client) -> None:
    open_issuer(client)
    open_account(client, "alice")
    open_account(client, "bob")
    first = ok(client.post("/v1/monitors", json={"account_id": "alice", "above": 1000}), 201)
    second = ok(client.post("/v1/monitors", json={"account_id": "bob", "below": 0}), 201)

    assert {m["id"] for m in monitors(client)} == {first["id"], second["id"]}
    assert [m["id"] for m in monitors(client, account_id="bob")] == [second["id"]]
    assert client.delete(f"/v1/monitors/{first['id']}").status_code == 204
    assert [m["id"] for m in monitors(client)] == [second["id"]]
    assert_problem(client.get(f"/v1/monitors/{first['id']}"), 404, "monitor_not_found")
    assert_problem(client.delete(f"/v1/monitors/{first['id']}"), 404, "monitor_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"account_id": "alice"}, 422, "validation_error"),
        ({"account_id": "alice", "below": 1, "above": 2}, 422, "validation_error"),
        ({"account_id": "alice", "below": "10"}, 422, "validation_error"),
        ({"account_id": "alice", "below": 2**63}, 422, "validation_error"),
        ({"account_id": "alice", "field": "debits", "below": 1}, 422, "validation_error"),
        ({"account_id": "nobody", "below": 1}, 404, "account_not_found"),
        ({"account_id": "bad id!", "below": 1}, 422, "validation_error"),
    ],
)
def test_bad_monitors_are_refused_and_nothing_is_stored(
    client: Client, body: Json, status: int, code: str
) -> None:
    open_account(client, "alice")
    assert_problem(client.post("/v1/monitors", json=body), status, code)
    assert monitors(client) == []


def test_a_read_key_cannot_add_monitors(client: Client, keys: dict[str, str]) -> None:
    open_account(client, "alice")
    refused = client.post(
        "/v1/monitors",
        json={"account_id": "alice", "below": 1},
        headers={"Authorization": f"Bearer {keys['read']}"},
    )
    assert_problem(refused, 403, "forbidden")
    assert monitors(client) == []
