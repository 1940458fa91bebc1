"""Accounts over HTTP: open (idempotent), read now / at a position / as of a time /
after a position, statement lines with cursor pagination and a time range, close.
Also the cross-cutting parts of the API: auth, problem documents, request limits and
the operational endpoints."""

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.api.services import Services
from app.bootstrap import build_services, shutdown
from app.settings import Settings
from tests.api.helpers import (
    ISSUER,
    UNIT,
    Client,
    Json,
    account,
    assert_problem,
    fund,
    now,
    ok,
    open_account,
    open_issuer,
    record,
    rfc3339,
    send_transfer,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A generous wait for read-your-writes: a busy CI machine must not turn reads into 409s.
    return Settings(data_dir=tmp_path, read_wait_seconds=15.0, log_format="console")


# Open ----------------------------------------------------------------------------------


def test_open_returns_201_then_an_identical_replay_returns_200(client: Client) -> None:
    body = {
        "id": "user:42:credits",
        "unit": UNIT,
        "overdraft_limit": 10,
        "metadata": {"plan": "pro"},
    }
    created = ok(client.post("/v1/accounts", json=body), 201)
    assert created == {
        "id": "user:42:credits",
        "unit": UNIT,
        "status": "open",
        "balance": 0,
        "available": 0,
        "debits_posted": 0,
        "credits_posted": 0,
        "debits_pending": 0,
        "credits_pending": 0,
        "allow_negative": False,
        "overdraft_limit": 10,
        "account_type": "liability",  # the default for an account with a floor
        "metadata": {"plan": "pro"},
        "position": created["position"],
    }
    assert created["position"] > 0

    replayed = ok(client.post("/v1/accounts", json=body), 200)
    assert replayed == created


def test_open_same_id_with_a_different_body_is_409(client: Client) -> None:
    body = {"id": "acc", "unit": UNIT, "overdraft_limit": 10, "metadata": {"plan": "pro"}}
    created = ok(client.post("/v1/accounts", json=body), 201)
    changes: list[Json] = [
        {"unit": "USD"},
        {"overdraft_limit": 11},
        {"overdraft_limit": 0},
        {"allow_negative": True},
        {"metadata": {"plan": "free"}},
        {"metadata": {"plan": "pro", "extra": "x"}},
        {"metadata": {}},
    ]
    for change in changes:
        response = client.post("/v1/accounts", json={**body, **change})
        assert_problem(response, 409, "idempotency_conflict")
    # The original stands unchanged, and an identical body still replays.
    assert ok(client.post("/v1/accounts", json=body)) == created
    assert account(client, "acc", created["position"])["overdraft_limit"] == 10


INVALID_ACCOUNTS: list[Json] = [
    {"id": "has space", "unit": UNIT},
    {"id": "", "unit": UNIT},
    {"id": "x" * 129, "unit": UNIT},
    {"id": "ok", "unit": "credits"},
    {"id": "ok", "unit": ""},
    {"id": "ok", "unit": "A" * 17},
    {"id": "ok"},
    {"unit": UNIT},
    {"id": "ok", "unit": UNIT, "overdraft_limit": -1},
    {"id": "ok", "unit": UNIT, "overdraft_limit": "5"},
    {"id": "ok", "unit": UNIT, "overdraft_limit": 2**63},
    {"id": "ok", "unit": UNIT, "allow_negative": "yes"},
    {"id": "ok", "unit": UNIT, "metadata": {"k": 1}},
    {"id": "ok", "unit": UNIT, "metadata": ["k"]},
    {"id": "ok", "unit": UNIT, "metadata": {f"k{i}": "v" for i in range(33)}},
    {"id": "ok", "unit": UNIT, "metadata": {"k" * 65: "v"}},
    {"id": "ok", "unit": UNIT, "metadata": {"k": "v" * 1025}},
    {"id": "ok", "unit": UNIT, "colour": "blue"},
    {"id": 5, "unit": UNIT},
    {"id": "ok", "unit": UNIT, "metadata": None},
]


def test_open_with_an_invalid_body_is_422_and_opens_nothing(client: Client) -> None:
    for body in INVALID_ACCOUNTS:
        response = client.post("/v1/accounts", json=body)
        assert_problem(response, 422, "validation_error")
    assert_problem(client.get("/v1/accounts/ok"), 404, "account_not_found")
    assert_problem(client.get("/v1/accounts/has%20space"), 422, "validation_error")


def test_limits_at_the_edge_are_accepted(client: Client) -> None:
    opened = open_account(
        client,
        "x" * 128,
        "A" * 16,
        overdraft_limit=2**63 - 1,
        metadata={f"k{i}": "v" * 1024 for i in range(32)},
    )
    assert opened["overdraft_limit"] == 2**63 - 1
    assert len(opened["metadata"]) == 32


# Read ----------------------------------------------------------------------------------


def test_read_with_min_position_sees_the_write(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    write = fund(client, "a", 70)
    # Read-your-writes: the very next read, asked to wait for the write's position.
    read = account(client, "a", min_position=write["position"])
    assert read["balance"] == 70
    assert read["available"] == 70
    assert read["credits_posted"] == 70
    assert read["position"] >= write["position"]
    issuer = account(client, ISSUER, min_position=write["position"])
    assert issuer["balance"] == -70
    assert issuer["debits_posted"] == 70


def test_every_account_answer_says_the_accounts_type(client: Client) -> None:
    """Stated at opening, else the default for the floor: in the write answers, the
    stream-current read, the views' list, time travel and the close answer alike."""
    opened = {
        "cash": open_account(client, "cash", allow_negative=True, account_type="asset"),
        ISSUER: open_issuer(client),  # no floor: equity
        "a": open_account(client, "a"),  # a floor: liability
    }
    expected = {"cash": "asset", ISSUER: "equity", "a": "liability"}
    assert {name: answer["account_type"] for name, answer in opened.items()} == expected
    written = fund(client, "a", 5)
    head = {"min_position": written["position"]}
    for name, account_type in expected.items():
        assert account(client, name, **head)["account_type"] == account_type
        at = {"at_position": written["position"]}
        assert account(client, name, **at)["account_type"] == account_type
    listed = ok(client.get("/v1/accounts", params=head))["items"]
    assert {item["id"]: item["account_type"] for item in listed} == expected
    updated = ok(client.patch("/v1/accounts/a", json={"metadata": {"k": "v"}}))
    assert updated["account_type"] == "liability"
    assert ok(client.post("/v1/accounts/cash/close"))["account_type"] == "asset"


def test_min_position_beyond_the_head_is_422(client: Client) -> None:
    open_account(client, "a")
    body = assert_problem(
        client.get("/v1/accounts/a", params={"min_position": 10**12}), 422, "position_out_of_range"
    )
    assert "10000000000" in body["detail"]
    assert_problem(
        client.get("/v1/accounts/a/entries", params={"min_position": 10**12}),
        422,
        "position_out_of_range",
    )


def test_min_position_must_be_a_non_negative_int64(client: Client) -> None:
    open_account(client, "a")
    for value in ["-1", "abc", "1.5", "", str(2**63)]:
        for path in (
            "/v1/accounts/a",
            "/v1/accounts/a/entries",
            "/v1/transfers/t",
            "/v1/transfers",
        ):
            response = client.get(path, params={"min_position": value})
            assert_problem(response, 422, "validation_error")


def test_unknown_account_is_404(client: Client) -> None:
    assert_problem(client.get("/v1/accounts/nobody"), 404, "account_not_found")
    assert_problem(client.get("/v1/accounts/nobody/entries"), 404, "account_not_found")
    assert_problem(client.post("/v1/accounts/nobody/close"), 404, "account_not_found")


def test_invalid_account_id_in_the_path_is_422(client: Client) -> None:
    for path in ("/v1/accounts/{}", "/v1/accounts/{}/entries"):
        for bad in ("has%20space", "x" * 129, "%C3%A9t%C3%A9", "a%00b"):
            assert_problem(client.get(path.format(bad)), 422, "validation_error")
    assert_problem(client.post(f"/v1/accounts/{'x' * 129}/close"), 422, "validation_error")


def snapshot(client: Client, account_id: str, position: int) -> Json:
    body = account(client, account_id, min_position=position)
    body.pop("position")
    return body


def test_at_position_answers_what_the_account_was_then(client: Client) -> None:
    open_issuer(client)
    opened = open_account(client, "a")
    open_account(client, "b")
    history: list[tuple[int, Json]] = []
    for step, (debit, credit, amount, pending) in enumerate(
        [
            (ISSUER, "a", 100, False),
            (ISSUER, "a", 50, False),
            ("a", "b", 30, False),
            ("a", "b", 20, True),
        ]
    ):
        written = record(client, f"t{step}", debit, credit, amount, pending=pending)
        history.append((written["position"], snapshot(client, "a", written["position"])))
    closed = ok(client.post("/v1/transfers/t3/void", json={}))
    history.append((closed["position"], snapshot(client, "a", closed["position"])))

    assert [state["balance"] for _, state in history] == [100, 150, 120, 120, 120]
    assert [state["available"] for _, state in history] == [100, 150, 120, 100, 120]
    for position, state in history:
        then = account(client, "a", at_position=position)
        assert then.pop("position") == position
        assert then == state
    # Before the account existed there was nothing to show.
    assert_problem(
        client.get("/v1/accounts/a", params={"at_position": opened["position"] - 1}),
        404,
        "account_not_found",
    )
    assert_problem(
        client.get("/v1/accounts/a", params={"at_position": 0}), 404, "account_not_found"
    )
    # At every commit position the books balance.
    for position, _ in history:
        total = sum(
            account(client, name, at_position=position)["balance"] for name in (ISSUER, "a", "b")
        )
        assert total == 0, position


def test_at_position_beyond_the_head_is_422(client: Client) -> None:
    open_account(client, "a")
    assert_problem(
        client.get("/v1/accounts/a", params={"at_position": 10**12}), 422, "position_out_of_range"
    )


def test_as_of_answers_what_the_account_was_at_that_time(client: Client) -> None:
    open_issuer(client)
    before_opening = now()
    time.sleep(0.01)
    open_account(client, "a", metadata={"who": "alice"})
    moments: list[tuple[str, Json]] = []
    for step, amount in enumerate([100, 25, 5]):
        written = fund(client, "a", amount, transfer_id=f"t{step}")
        state = snapshot(client, "a", written["position"])
        time.sleep(0.01)
        moments.append((rfc3339(now()), state))
        time.sleep(0.01)
    closed = ok(client.post("/v1/accounts/a/close"))
    assert closed["status"] == "closed"
    closed_state = snapshot(client, "a", closed["position"])
    moments.append((rfc3339(now()), closed_state))

    assert [state["balance"] for _, state in moments] == [100, 125, 130, 130]
    for moment, state in moments:
        then = account(client, "a", as_of=moment)
        then.pop("position")
        assert then == state, moment
    assert moments[-2][1]["status"] == "open"
    # Offsets other than Z name the same instant.
    offset = now().astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert account(client, "a", as_of=offset)["status"] == "closed"

    assert_problem(
        client.get("/v1/accounts/a", params={"as_of": rfc3339(before_opening)}),
        404,
        "account_not_found",
    )


def test_time_travel_with_invalid_parameters_is_422(client: Client) -> None:
    open_account(client, "a")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"as_of": "2999-01-01T00:00:00Z"}, "as_of_in_future"),
        ({"as_of": "2020-01-01T00:00:00"}, "validation_error"),
        ({"as_of": "2020-01-01T00:00Z"}, "validation_error"),
        ({"as_of": "yesterday"}, "validation_error"),
        ({"as_of": "2020-01-01T00:00:00Z", "at_position": 1}, "conflicting_parameters"),
        ({"at_position": -1}, "validation_error"),
        ({"at_position": "one"}, "validation_error"),
        ({"at_position": 2**63}, "validation_error"),
    ]
    for query, code in cases:
        assert_problem(client.get("/v1/accounts/a", params=query), 422, code)


def test_a_date_alone_means_midnight_utc_as_on_the_command_line(client: Client) -> None:
    opened = open_account(client, "a")
    today = datetime.now(tz=UTC).date().isoformat()
    by_date = client.get("/v1/accounts/a", params={"as_of": today})
    explicit = client.get("/v1/accounts/a", params={"as_of": f"{today}T00:00:00Z"})
    assert by_date.status_code == explicit.status_code
    assert by_date.json() == explicit.json()
    # The account was opened after midnight: it did not exist at the start of the day.
    assert by_date.status_code == 404, (opened, by_date.text)


# Statement lines ------------------------------------------------------------------------


def entries_page(client: Client, account_id: str, **query: Any) -> Json:
    return ok(client.get(f"/v1/accounts/{account_id}/entries", params=query))


def all_entries(client: Client, account_id: str, limit: int, **query: Any) -> list[Json]:
    items: list[Json] = []
    cursor: str | None = None
    for _ in range(100):
        params = {**query, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = entries_page(client, account_id, **params)
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("count", [7, 6])
def test_entries_are_newest_first_and_cursor_pages_cover_them_once(
    client: Client, count: int
) -> None:
    open_issuer(client)
    open_account(client, "a")
    open_account(client, "b")
    amounts = [10 * (i + 1) for i in range(count)]
    last = {}
    for i, amount in enumerate(amounts):
        last = fund(client, "a", amount, transfer_id=f"in{i}")
    spent = record(client, "out", "a", "b", 5)
    position = max(last["position"], spent["position"])

    everything = entries_page(client, "a", min_position=position, limit=1000)
    assert everything["next_cursor"] is None
    items = everything["items"]
    assert [item["transfer_id"] for item in items] == [
        "out",
        *[f"in{i}" for i in reversed(range(count))],
    ]
    positions = [item["position"] for item in items]
    assert positions == sorted(positions, reverse=True)
    assert len(set(positions)) == len(positions)
    # Running balances: each line shows the balance after it.
    running = 0
    for item in reversed(items):
        running += item["amount"]
        assert item["balance"] == running, item
    assert items[0]["kind"] == "Debited"
    assert items[0]["amount"] == -5
    assert items[0]["counterparty_id"] == "b"
    assert items[1]["kind"] == "Credited"
    assert items[1]["counterparty_id"] == ISSUER

    paged = all_entries(client, "a", limit=3)
    assert paged == items


def test_a_full_last_page_is_followed_by_an_empty_page(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    written = [fund(client, "a", 1 + i, transfer_id=f"t{i}") for i in range(4)]
    first = entries_page(client, "a", limit=2, min_position=written[-1]["position"])
    second = entries_page(client, "a", limit=2, cursor=first["next_cursor"])
    assert second["next_cursor"] is not None
    third = entries_page(client, "a", limit=2, cursor=second["next_cursor"])
    assert (third["items"], third["next_cursor"]) == ([], None)


def test_entries_since_and_until_filter_by_recorded_time(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    fund(client, "a", 1, transfer_id="t1")
    time.sleep(0.01)
    since = rfc3339(now())
    time.sleep(0.01)
    fund(client, "a", 2, transfer_id="t2")
    fund(client, "a", 3, transfer_id="t3")
    time.sleep(0.01)
    until = rfc3339(now())
    time.sleep(0.01)
    last = fund(client, "a", 4, transfer_id="t4")

    def ids(**query: Any) -> list[str]:
        page = entries_page(client, "a", min_position=last["position"], **query)
        return [item["transfer_id"] for item in page["items"]]

    assert ids() == ["t4", "t3", "t2", "t1"]
    assert ids(since=since) == ["t4", "t3", "t2"]
    assert ids(until=until) == ["t3", "t2", "t1"]
    assert ids(since=since, until=until) == ["t3", "t2"]
    assert ids(since=until, until=since) == []
    # The range composes with pagination.
    page = entries_page(client, "a", since=since, limit=1)
    assert [i["transfer_id"] for i in page["items"]] == ["t4"]
    page = entries_page(client, "a", since=since, limit=1, cursor=page["next_cursor"])
    assert [i["transfer_id"] for i in page["items"]] == ["t3"]


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


INVALID_CURSORS = [
    "not-a-cursor!",
    "zzz",
    encode(b"not json"),
    encode(json.dumps({"after": 5}).encode()),
    encode(json.dumps({"before": -1}).encode()),
    encode(json.dumps({"before": "5"}).encode()),
    encode(json.dumps({"before": True}).encode()),
    encode(json.dumps({"before": 1.5}).encode()),
    encode(json.dumps([5]).encode()),
    encode(b"\xff\xfe"),
]


def test_entries_with_an_invalid_cursor_is_400(client: Client) -> None:
    position = open_account(client, "a")["position"]
    for cursor in INVALID_CURSORS:
        query = {"cursor": cursor, "min_position": position}
        response = client.get("/v1/accounts/a/entries", params=query)
        assert_problem(response, 400, "invalid_cursor")


def test_entries_with_invalid_parameters_is_422(client: Client) -> None:
    open_account(client, "a")
    queries: list[dict[str, Any]] = [
        {"limit": 0},
        {"limit": -1},
        {"limit": 1001},
        {"limit": "ten"},
        {"since": "2020-01-01T00:00:00"},
        {"until": "2020-01-01T00:00:00"},
        {"until": "not a time"},
        {"cursor": "c" * 201},
    ]
    for query in queries:
        response = client.get("/v1/accounts/a/entries", params=query)
        assert_problem(response, 422, "validation_error")


# Close ---------------------------------------------------------------------------------


def test_close_is_idempotent_and_refuses_new_money(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    open_account(client, "b")
    fund(client, "b", 10)
    closed = ok(client.post("/v1/accounts/a/close"))
    assert closed["status"] == "closed"
    again = ok(client.post("/v1/accounts/a/close"))
    assert again["status"] == "closed"
    assert again["position"] == closed["position"]
    assert account(client, "a", min_position=closed["position"])["status"] == "closed"

    assert_problem(send_transfer(client, "in", ISSUER, "a", 1), 422, "account_closed")
    assert_problem(send_transfer(client, "out", "a", "b", 1), 422, "account_closed")
    assert_problem(send_transfer(client, "hold", "b", "a", 1, pending=True), 422, "account_closed")


def test_close_with_pending_transfers_is_refused(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    record(client, "hold", ISSUER, "a", 5, pending=True)
    assert_problem(client.post("/v1/accounts/a/close"), 422, "account_has_pending_transfers")
    assert_problem(
        client.post(f"/v1/accounts/{ISSUER}/close"), 422, "account_has_pending_transfers"
    )
    ok(client.post("/v1/transfers/hold/void", json={}))
    assert ok(client.post("/v1/accounts/a/close"))["status"] == "closed"


# Auth ----------------------------------------------------------------------------------


@pytest.fixture
def anonymous(app: Litestar) -> Iterator[Client]:
    with TestClient(app=app) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


READS = [("GET", "/v1/accounts/a"), ("GET", "/v1/accounts/a/entries"), ("GET", "/v1/transfers")]
WRITES: list[tuple[str, str, Json | None]] = [
    ("POST", "/v1/accounts", {"id": "new", "unit": UNIT}),
    ("POST", "/v1/accounts/a/close", {}),
    (
        "POST",
        "/v1/transfers",
        {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1},
    ),
    ("POST", "/v1/transfers/batch", {"atomic": True, "transfers": []}),
    ("POST", "/v1/transfers/t/post", {}),
    ("POST", "/v1/transfers/t/void", {}),
    ("POST", "/v1/transfers/t/reverse", {"id": "r"}),
]


def test_no_key_is_401_with_www_authenticate(anonymous: Client) -> None:
    for authorization in (None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "lk_abc_def"):
        headers = {} if authorization is None else {"Authorization": authorization}
        requests = [(method, path, None) for method, path in READS] + WRITES
        for method, path, body in requests:
            response = anonymous.request(method, path, json=body, headers=headers)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].lower().startswith("bearer"), path


def test_unknown_key_is_401(anonymous: Client, keys: dict[str, str]) -> None:
    for key in ("lk_000000000000_secret", "lk_nothing", "not-a-key", "lk__", "lk_" + "a" * 5000):
        response = anonymous.get("/v1/transfers", headers=bearer(key))
        assert_problem(response, 401, "unauthorized")
        assert "www-authenticate" in response.headers


def test_a_known_key_with_a_wrong_secret_is_401(anonymous: Client, keys: dict[str, str]) -> None:
    prefix, key_id, _secret = keys["admin"].split("_", 2)
    forged = f"{prefix}_{key_id}_{'A' * 43}"
    assert anonymous.get("/v1/transfers", headers=bearer(keys["admin"])).status_code == 200
    assert_problem(anonymous.get("/v1/transfers", headers=bearer(forged)), 401, "unauthorized")


def test_a_revoked_key_is_401(anonymous: Client, services: Services, keys: dict[str, str]) -> None:
    key = keys["write"]
    assert anonymous.get("/v1/transfers", headers=bearer(key)).status_code == 200
    key_id = key.split("_")[1]
    assert services.keys.revoke(key_id)
    assert_problem(anonymous.get("/v1/transfers", headers=bearer(key)), 401, "unauthorized")


def test_a_read_key_reads_but_may_not_write(
    client: Client, anonymous: Client, keys: dict[str, str]
) -> None:
    open_account(client, "a")
    position = open_account(client, "b")["position"]
    read = bearer(keys["read"])
    for method, path in READS:
        response = anonymous.request(method, path, headers=read, params={"min_position": position})
        assert response.status_code == 200, (path, response.text)
    for method, path, body in WRITES:
        response = anonymous.request(method, path, json=body, headers=read)
        assert_problem(response, 403, "forbidden")
    assert account(client, "a")["status"] == "open"
    assert_problem(client.get("/v1/accounts/new"), 404, "account_not_found")


def test_a_write_key_reads_and_writes(anonymous: Client, keys: dict[str, str]) -> None:
    write = bearer(keys["write"])
    response = anonymous.post("/v1/accounts", json={"id": "a", "unit": UNIT}, headers=write)
    assert response.status_code == 201
    after = {"min_position": response.json()["position"]}
    for path in ("/v1/accounts/a", "/v1/accounts/a/entries", "/v1/transfers"):
        assert anonymous.get(path, headers=write, params=after).status_code == 200, path


def test_operational_endpoints_need_no_key(anonymous: Client) -> None:
    assert ok(anonymous.get("/v1/health")) == {"status": "ok"}
    assert anonymous.get("/v1/ready").status_code == 200
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/schema/openapi.json").status_code == 200


# Problems everywhere ---------------------------------------------------------------------


JSON_PATHS = ("/v1/accounts", "/v1/transfers", "/v1/transfers/batch", "/v1/transfers/t/post")


MALFORMED = [b"{bad", b'{"id": }', b'{"id": "a",}', b"\x00", b"nulx", b"{'id': 'a'}"]
# Undecodable too, but answered with code bad_request today (see the report): only the
# status and the problem shape are pinned here.
UNDECODABLE = [b'{"id": "a"', b"[1, 2", b'{"id": "\\ud800"}', b'{"amount": 1e400}']


def test_malformed_json_is_400_malformed_json(client: Client) -> None:
    for raw in MALFORMED:
        for path in JSON_PATHS:
            headers = {"content-type": "application/json"}
            response = client.post(path, content=raw, headers=headers)
            assert_problem(response, 400, "malformed_json")


def test_other_undecodable_json_is_a_400_problem(client: Client) -> None:
    for raw in UNDECODABLE:
        for path in JSON_PATHS:
            headers = {"content-type": "application/json"}
            response = client.post(path, content=raw, headers=headers)
            assert response.status_code == 400, (raw, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] in {"malformed_json", "bad_request"}


def test_body_too_large_is_413(client: Client, settings: Settings) -> None:
    size = settings.request_body_bytes_max + 1
    padding = "x" * size
    body = json.dumps({"id": "a", "unit": UNIT, "metadata": {"pad": padding}})
    response = client.post(
        "/v1/accounts", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "body_too_large")
    assert_problem(client.get("/v1/accounts/a"), 404, "account_not_found")


def test_unknown_routes_and_methods_answer_problems(client: Client) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(client.delete("/v1/accounts/a"), 405, "method_not_allowed")
    assert_problem(client.put("/v1/transfers"), 405, "method_not_allowed")


def test_the_request_id_is_echoed_or_made(client: Client) -> None:
    given = client.get("/v1/health", headers={"X-Request-ID": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    made = client.get("/v1/health")
    assert len(made.headers["x-request-id"]) >= 16
    assert made.headers["x-request-id"] != client.get("/v1/health").headers["x-request-id"]


# Operations -----------------------------------------------------------------------------


def test_health_and_ready(client: Client) -> None:
    assert ok(client.get("/v1/health")) == {"status": "ok"}
    open_issuer(client)
    open_account(client, "a")
    written = fund(client, "a", 3)
    # A view read waits for the views (an account read comes from its stream and need not).
    ok(client.get("/v1/accounts/a/entries", params={"min_position": written["position"]}))
    ready = ok(client.get("/v1/ready"))
    assert ready["status"] == "ready"
    assert ready["store_reachable"] is True
    assert ready["head"] >= written["position"]
    assert ready["checkpoint"] >= written["position"]
    assert ready["lag_positions"] == 0
    assert ready["lag_seconds"] >= 0
    assert ready["generation"] >= 1


def test_metrics_expose_requests_transfers_rejections_and_lag(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    open_account(client, "b")
    fund(client, "a", 5, transfer_id="t1")
    fund(client, "a", 5, transfer_id="t2")
    send_transfer(client, "t1", ISSUER, "a", 5)  # a replay: not counted again
    assert_problem(send_transfer(client, "t3", "a", "b", 11), 422, "insufficient_funds")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples["ledger_transfers_recorded_total"] == 2.0
    assert samples['ledger_rejections_total{code="insufficient_funds"}'] == 1.0
    for gauge in (
        "ledger_projection_lag_positions",
        "ledger_projection_lag_seconds",
        "ledger_projection_checkpoint",
    ):
        assert gauge in samples, gauge
    assert (
        samples['ledger_http_requests_total{method="POST",route="/v1/transfers",status="201"}']
        == 2.0
    )
    assert (
        samples['ledger_http_requests_total{method="POST",route="/v1/transfers",status="200"}']
        == 1.0
    )
    assert any(name.startswith("ledger_http_request_duration_seconds_bucket") for name in samples)


SPEC_OPERATIONS = {
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts/{account_id}"),
    ("get", "/v1/accounts/{account_id}/entries"),
    ("post", "/v1/accounts/{account_id}/close"),
    ("post", "/v1/transfers"),
    ("post", "/v1/transfers/batch"),
    ("get", "/v1/transfers/{transfer_id}"),
    ("get", "/v1/transfers"),
    ("post", "/v1/transfers/{transfer_id}/post"),
    ("post", "/v1/transfers/{transfer_id}/void"),
    ("post", "/v1/transfers/{transfer_id}/reverse"),
    ("get", "/v1/health"),
    ("get", "/v1/ready"),
}


def test_the_openapi_schema_is_served_with_every_operation(client: Client) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    served = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert served >= SPEC_OPERATIONS
    assert "BearerAuth" in document["components"]["securitySchemes"]
    for name in ("AccountCreate", "AccountRead", "TransferCreate", "TransferRead", "BatchRead"):
        assert name in document["components"]["schemas"], name
    # The batch answer is encoded by hand, and still documented as its model.
    answered = document["paths"]["/v1/transfers/batch"]["post"]["responses"]["200"]
    assert answered["content"]["application/json"]["schema"]["$ref"].endswith("/BatchRead")


# Views that lag -------------------------------------------------------------------------


@pytest.fixture
def lagging_client(tmp_path: Path) -> Iterator[Client]:
    """An API process whose views are never fed (no projection workers anywhere)."""
    settings = Settings(
        data_dir=tmp_path / "lagging",
        read_wait_seconds=0.2,
        ready_lag_seconds_max=0.05,
        log_format="console",
    )
    services = build_services(settings, projections=False)
    try:
        with TestClient(app=create_app(services)) as test_client:
            test_client.headers.update(bearer(services.keys.create("admin")))
            yield test_client
    finally:
        shutdown(services)


def test_a_position_the_views_have_not_reached_is_409_and_not_ready(lagging_client: Client) -> None:
    written = open_account(lagging_client, "a")
    assert_problem(
        lagging_client.get("/v1/accounts/a/entries", params={"min_position": written["position"]}),
        409,
        "position_not_reached",
    )
    assert_problem(
        lagging_client.get("/v1/transfers", params={"min_position": written["position"]}),
        409,
        "position_not_reached",
    )
    time.sleep(0.1)
    response = lagging_client.get("/v1/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["lag_positions"] >= 1
