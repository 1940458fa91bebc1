"""Regressions found by fuzzing and review: no input gives a 500, malformed bodies are
malformed_json, batch answers are stable, and time travel never shows half a commit."""

import base64
import json

import pytest

from tests.api.helpers import (
    ISSUER,
    Client,
    account,
    assert_problem,
    fund,
    open_account,
    open_issuer,
    transfer_body,
)


def cursor(before: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": before}).encode()).decode().rstrip("=")


def test_cursor_beyond_int64_is_400_not_500(client: Client) -> None:
    position = open_account(client, "a")["position"]
    for path in ("/v1/transfers", "/v1/accounts/a/entries"):
        response = client.get(path, params={"cursor": cursor(2**63), "min_position": position})
        assert_problem(response, 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("as_of", "0001-01-01T00:00:00+01:00"),
        ("since", "0001-01-01T00:00:00+01:00"),
        ("until", "9999-12-31T23:59:59-14:00"),
    ],
)
def test_times_outside_the_utc_range_are_422_not_500(client: Client, name: str, value: str) -> None:
    position = open_account(client, "a")["position"]
    path = "/v1/accounts/a" if name == "as_of" else "/v1/accounts/a/entries"
    response = client.get(path, params={name: value, "min_position": position})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"id": "\xff"}'],
    ids=["deep-nesting", "invalid-utf8"],
)
def test_undecodable_bodies_are_400_not_500(client: Client, raw: bytes) -> None:
    response = client.post(
        "/v1/transfers", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed_json")


@pytest.mark.parametrize(
    "raw", [b'{"id": "a"', b"[1, 2", b'{"id": "\\ud800"}', b'{"amount": 1e400}', b"nul"]
)
def test_every_undecodable_body_is_malformed_json(client: Client, raw: bytes) -> None:
    response = client.post(
        "/v1/transfers", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed_json")


def test_a_batch_replay_answers_the_same_body(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    items = [transfer_body(f"l{i}", ISSUER, "a", 1) for i in range(3)]
    first = client.post("/v1/transfers/batch", json={"atomic": True, "transfers": items})
    again = client.post("/v1/transfers/batch", json={"atomic": True, "transfers": items})
    assert [r["transfer"] for r in again.json()["results"]] == [
        r["transfer"] for r in first.json()["results"]
    ]


def test_one_transfer_one_position_within_a_batch(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    items = [
        transfer_body("n1", ISSUER, "a", 1),
        transfer_body("n2", ISSUER, "a", 1),
        transfer_body("n1", ISSUER, "a", 1),
    ]
    results = client.post("/v1/transfers/batch", json={"atomic": False, "transfers": items}).json()[
        "results"
    ]
    assert results[0]["transfer"]["position"] == results[2]["transfer"]["position"]


def test_batch_item_status_matches_its_problem(client: Client) -> None:
    open_issuer(client)
    items = [transfer_body("x", ISSUER, "ghost", 1)]
    result = client.post("/v1/transfers/batch", json={"atomic": False, "transfers": items}).json()[
        "results"
    ][0]
    assert result["status"] == result["error"]["status"] == 404, result


def test_at_position_never_shows_half_a_commit(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    first = fund(client, "a", 100, "t1")
    second = fund(client, "a", 50, "t2")
    for position in range(first["position"], second["position"] + 1):
        total = sum(account(client, n, at_position=position)["balance"] for n in (ISSUER, "a"))
        assert total == 0, position
