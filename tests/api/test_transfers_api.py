"""Transfers over HTTP: record (idempotent), every rejection, two-phase holds (post
whole or part, void, expiry), reversal, atomic and independent batches, reads and
lists with cursor pagination."""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.api.schemas import TransferRead, transfer_document
from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.stores import event_store_env
from app.settings import Settings
from tests.api.helpers import (
    AMOUNT_MAX,
    ISSUER,
    UNIT,
    Client,
    Json,
    account,
    assert_problem,
    fund,
    ok,
    open_account,
    open_issuer,
    record,
    send_transfer,
    transfer,
    transfer_body,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A generous wait for read-your-writes: a busy CI machine must not turn reads into 409s.
    return Settings(data_dir=tmp_path, read_wait_seconds=15.0, log_format="console")


@pytest.fixture
def funded(client: Client) -> Client:
    """An issuer, alice with 100 credits, and an empty bob."""
    open_issuer(client)
    open_account(client, "alice")
    open_account(client, "bob")
    fund(client, "alice", 100)
    return client


def balances(client: Client, position: int, *names: str) -> dict[str, int]:
    return {name: account(client, name, min_position=position)["balance"] for name in names}


def without_position(body: Json) -> Json:
    return {key: value for key, value in body.items() if key != "position"}


def last_position(client: Client) -> int:
    return int(client.get("/v1/ready").json()["head"])


# Record --------------------------------------------------------------------------------


def test_record_is_201_and_a_replay_is_200_with_the_identical_body(funded: Client) -> None:
    body = transfer_body("order:981", "alice", "bob", 30, metadata={"order": "981"})
    first = funded.post("/v1/transfers", json=body)
    created = ok(first, 201)
    assert created == {
        **body,
        "unit": UNIT,
        "pending": False,
        "timeout_seconds": None,
        "status": "posted",
        "amount_posted": 30,
        "recorded_at": created["recorded_at"],
        "expires_at": None,
        "reversal_of": None,
        "reversed_by": None,
        "position": created["position"],
        "grant": None,
        "allocations": [{"grant_id": None, "amount": 30}],
    }
    second = funded.post("/v1/transfers", json=body)
    assert second.status_code == 200
    assert second.content == first.content
    # Money moved once.
    assert balances(funded, created["position"], "alice", "bob") == {"alice": 70, "bob": 30}
    assert transfer(funded, "order:981", created["position"]) == created


def test_the_same_id_with_a_different_body_is_409_and_moves_nothing(funded: Client) -> None:
    body = transfer_body("t", "alice", "bob", 30, metadata={"k": "v"})
    created = ok(funded.post("/v1/transfers", json=body), 201)
    changes: list[Json] = [
        {"amount": 31},
        {"credit_account_id": ISSUER},
        {"debit_account_id": ISSUER},
        {"metadata": {"k": "w"}},
        {"metadata": {}},
        {"pending": True},
        {"pending": True, "timeout_seconds": 60},
    ]
    for change in changes:
        response = funded.post("/v1/transfers", json={**body, **change})
        assert_problem(response, 409, "idempotency_conflict")
    head = last_position(funded)
    assert head == created["position"]
    assert balances(funded, head, "alice", "bob") == {"alice": 70, "bob": 30}


def test_get_transfer_and_unknown_transfers(funded: Client) -> None:
    created = record(funded, "t", "alice", "bob", 1)
    assert transfer(funded, "t", created["position"]) == created
    assert_problem(funded.get("/v1/transfers/nope"), 404, "transfer_not_found")
    for verb, body in (("post", {}), ("void", {}), ("reverse", {"id": "r"})):
        assert_problem(
            funded.post(f"/v1/transfers/nope/{verb}", json=body), 404, "transfer_not_found"
        )
    assert_problem(funded.get(f"/v1/transfers/{'x' * 129}"), 422, "validation_error")
    assert_problem(funded.get("/v1/transfers/a%20b"), 422, "validation_error")


def test_rejections_name_their_reason_and_change_nothing(funded: Client) -> None:
    open_account(funded, "dollars", "USD")
    open_account(funded, "shut")
    ok(funded.post("/v1/accounts/shut/close"))
    head = last_position(funded)
    cases: list[tuple[Json, int, str]] = [
        (transfer_body("r1", "alice", "bob", 101), 422, "insufficient_funds"),
        (transfer_body("r2", "bob", "alice", 1), 422, "insufficient_funds"),
        (transfer_body("r3", "alice", "dollars", 1), 422, "unit_mismatch"),
        (transfer_body("r4", "alice", "alice", 1), 422, "same_account"),
        (transfer_body("r5", "alice", "shut", 1), 422, "account_closed"),
        (transfer_body("r6", "shut", "alice", 1), 422, "account_closed"),
        (transfer_body("r7", "alice", "ghost", 1), 404, "account_not_found"),
        (transfer_body("r8", "ghost", "alice", 1), 404, "account_not_found"),
        (transfer_body("r9", "alice", "bob", 101, pending=True), 422, "insufficient_funds"),
        (
            transfer_body("r10", "alice", "bob", 1, timeout_seconds=60),
            422,
            "validation_error",
        ),
    ]
    for body, status, code in cases:
        assert_problem(funded.post("/v1/transfers", json=body), status, code)
    assert last_position(funded) == head
    assert balances(funded, head, "alice", "bob") == {"alice": 100, "bob": 0}
    for body, _, _ in cases:
        assert_problem(funded.get(f"/v1/transfers/{body['id']}"), 404, "transfer_not_found")


INVALID_AMOUNTS: list[Any] = [0, -1, -(2**63), 2**63, 10**30, "5", 1.5, 5.0, True, None, [5], {}]


def test_amounts_outside_1_to_2_63_minus_1_or_not_integers_are_422(funded: Client) -> None:
    for amount in INVALID_AMOUNTS:
        response = send_transfer(funded, "bad", "alice", "bob", amount)
        body = assert_problem(response, 422, "validation_error")
        assert "amount" in body["detail"], body
    missing = transfer_body("bad", "alice", "bob", 1)
    del missing["amount"]
    assert_problem(funded.post("/v1/transfers", json=missing), 422, "validation_error")
    assert_problem(funded.get("/v1/transfers/bad"), 404, "transfer_not_found")


INVALID_CHANGES: list[Json] = [
    {"id": ""},
    {"id": "has space"},
    {"id": "x" * 129},
    {"id": None},
    {"debit_account_id": "é"},
    {"credit_account_id": 7},
    {"pending": "true"},
    {"pending": 1},
    {"pending": True, "timeout_seconds": 0},
    {"pending": True, "timeout_seconds": 366 * 24 * 3600 + 1},
    {"pending": True, "timeout_seconds": "60"},
    {"pending": True, "timeout_seconds": 1.5},
    {"metadata": {"k": 1}},
    {"metadata": "k=v"},
    {"metadata": {"": "v"}},
    {"metadata": {f"k{i}": "v" for i in range(33)}},
    {"memo": "unknown field"},
    {"position": 5},
]


def test_other_invalid_transfer_bodies_are_422(funded: Client) -> None:
    for change in INVALID_CHANGES:
        body = {**transfer_body("bad", "alice", "bob", 1), **change}
        response = funded.post("/v1/transfers", json=body)
        assert_problem(response, 422, "validation_error")
    not_objects: list[Any] = [[], "transfer", 5, None]
    for not_an_object in not_objects:
        response = funded.post("/v1/transfers", json=not_an_object)
        assert_problem(response, 422, "validation_error")
    assert_problem(funded.get("/v1/transfers/bad"), 404, "transfer_not_found")


def test_the_largest_amount_is_accepted_and_overflow_is_refused(client: Client) -> None:
    open_issuer(client)
    open_account(client, "mint", allow_negative=True)
    open_account(client, "whale")
    open_account(client, "sink")
    big = record(client, "big", ISSUER, "whale", AMOUNT_MAX)
    assert big["amount"] == AMOUNT_MAX
    # Crediting whale once more would overflow its credits (posted or pending).
    for pending in (False, True):
        response = send_transfer(client, "more", "mint", "whale", 1, pending=pending)
        body = assert_problem(response, 422, "balance_overflow")
        assert "whale" in body["detail"]
    # Debiting the issuer once more would overflow its debits (posted or pending).
    for pending in (False, True):
        response = send_transfer(client, "again", ISSUER, "sink", 1, pending=pending)
        body = assert_problem(response, 422, "balance_overflow")
        assert ISSUER in body["detail"]
    state = account(client, "whale", min_position=big["position"])
    assert state["balance"] == AMOUNT_MAX
    issuer = account(client, ISSUER, min_position=big["position"])
    assert issuer["balance"] == -AMOUNT_MAX
    # Money can still leave the whale.
    spent = record(client, "spend", "whale", "sink", AMOUNT_MAX)
    assert account(client, "sink", min_position=spent["position"])["balance"] == AMOUNT_MAX


def test_overdraft_limit_allows_down_to_minus_the_limit(client: Client) -> None:
    open_issuer(client)
    open_account(client, "credit-line", overdraft_limit=50)
    open_account(client, "shop")
    fund(client, "credit-line", 10)
    record(client, "spend1", "credit-line", "shop", 60)
    assert_problem(
        send_transfer(client, "spend2", "credit-line", "shop", 1), 422, "overdraft_limit_exceeded"
    )
    assert_problem(
        send_transfer(client, "hold", "credit-line", "shop", 1, pending=True),
        422,
        "overdraft_limit_exceeded",
    )
    head = last_position(client)
    state = account(client, "credit-line", min_position=head)
    assert state["balance"] == -50
    assert state["available"] == -50


def test_allow_negative_has_no_floor(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    written = record(client, "t", ISSUER, "a", 10**15)
    assert account(client, ISSUER, min_position=written["position"])["balance"] == -(10**15)


# Two-phase -----------------------------------------------------------------------------


def test_a_hold_reserves_then_posts_in_whole(funded: Client) -> None:
    hold = record(funded, "hold", "alice", "bob", 40, pending=True, timeout_seconds=3600)
    assert hold["status"] == "pending"
    assert hold["amount_posted"] == 0
    assert hold["expires_at"] is not None
    alice = account(funded, "alice", min_position=hold["position"])
    assert (alice["balance"], alice["available"], alice["debits_pending"]) == (100, 60, 40)
    bob = account(funded, "bob", min_position=hold["position"])
    assert (bob["balance"], bob["available"], bob["credits_pending"]) == (0, 0, 40)
    # The reservation counts against what else alice can spend.
    assert_problem(send_transfer(funded, "x", "alice", "bob", 61), 422, "insufficient_funds")

    posted = ok(funded.post("/v1/transfers/hold/post", json={}))
    assert posted["status"] == "posted"
    assert posted["amount_posted"] == 40
    assert posted["position"] > hold["position"]
    alice = account(funded, "alice", min_position=posted["position"])
    assert (alice["balance"], alice["available"], alice["debits_pending"]) == (60, 60, 0)
    bob = account(funded, "bob", min_position=posted["position"])
    assert (bob["balance"], bob["credits_pending"]) == (40, 0)
    assert transfer(funded, "hold", posted["position"])["status"] == "posted"

    # The same post again (a retry) is answered as that post left the transfer.
    assert ok(funded.post("/v1/transfers/hold/post", json={})) == posted
    assert ok(funded.post("/v1/transfers/hold/post", json={"amount": 40})) == posted
    assert ok(funded.post("/v1/transfers/hold/post")) == posted
    assert_problem(
        funded.post("/v1/transfers/hold/post", json={"amount": 39}), 409, "idempotency_conflict"
    )
    assert_problem(funded.post("/v1/transfers/hold/void", json={}), 422, "transfer_already_posted")
    assert last_position(funded) == posted["position"]


def test_a_hold_posts_a_smaller_amount_and_releases_the_rest(funded: Client) -> None:
    record(funded, "hold", "alice", "bob", 40, pending=True)
    posted = ok(funded.post("/v1/transfers/hold/post", json={"amount": 15}))
    assert posted["status"] == "posted"
    assert posted["amount"] == 40
    assert posted["amount_posted"] == 15
    alice = account(funded, "alice", min_position=posted["position"])
    assert (alice["balance"], alice["available"], alice["debits_pending"]) == (85, 85, 0)
    assert account(funded, "bob", min_position=posted["position"])["balance"] == 15


def test_posting_more_than_the_hold_is_refused(funded: Client) -> None:
    hold = record(funded, "hold", "alice", "bob", 40, pending=True)
    assert_problem(
        funded.post("/v1/transfers/hold/post", json={"amount": 41}),
        422,
        "post_amount_exceeds_pending",
    )
    for amount in (0, -1, "5", 1.5, 2**63):
        response = funded.post("/v1/transfers/hold/post", json={"amount": amount})
        assert_problem(response, 422, "validation_error")
    assert_problem(
        funded.post("/v1/transfers/hold/post", json={"amount": 1, "x": 1}), 422, "validation_error"
    )
    assert last_position(funded) == hold["position"]
    assert transfer(funded, "hold", hold["position"])["status"] == "pending"


def test_a_hold_voids_and_releases_everything(funded: Client) -> None:
    record(funded, "hold", "alice", "bob", 40, pending=True)
    voided = ok(funded.post("/v1/transfers/hold/void", json={}))
    assert voided["status"] == "voided"
    assert voided["amount_posted"] == 0
    alice = account(funded, "alice", min_position=voided["position"])
    assert (alice["balance"], alice["available"], alice["debits_pending"]) == (100, 100, 0)
    bob = account(funded, "bob", min_position=voided["position"])
    assert (bob["balance"], bob["credits_pending"]) == (0, 0)
    assert transfer(funded, "hold", voided["position"])["status"] == "voided"

    # The same void again (a retry) is answered as that void left the transfer.
    assert ok(funded.post("/v1/transfers/hold/void", json={})) == voided
    assert ok(funded.post("/v1/transfers/hold/void")) == voided
    assert last_position(funded) == voided["position"]
    assert_problem(funded.post("/v1/transfers/hold/post", json={}), 422, "transfer_already_voided")
    assert_problem(
        funded.post("/v1/transfers/hold/reverse", json={"id": "r"}), 422, "transfer_not_reversible"
    )
    assert_problem(funded.post("/v1/transfers/hold/void", json={"x": 1}), 422, "validation_error")


def test_post_and_void_take_an_empty_body(funded: Client) -> None:
    record(funded, "hold", "alice", "bob", 40, pending=True)
    record(funded, "other", "alice", "bob", 10, pending=True)
    posted = ok(funded.post("/v1/transfers/hold/post"))
    assert (posted["status"], posted["amount_posted"]) == ("posted", 40)
    assert ok(funded.post("/v1/transfers/other/void"))["status"] == "voided"


def test_a_retried_post_of_a_smaller_amount_answers_the_first_post(funded: Client) -> None:
    record(funded, "hold", "alice", "bob", 40, pending=True)
    posted = ok(funded.post("/v1/transfers/hold/post", json={"amount": 15}))
    assert ok(funded.post("/v1/transfers/hold/post", json={"amount": 15})) == posted
    assert ok(funded.post("/v1/transfers/hold/post", json={})) == posted
    assert_problem(
        funded.post("/v1/transfers/hold/post", json={"amount": 40}), 409, "idempotency_conflict"
    )
    alice = account(funded, "alice", min_position=posted["position"])
    assert (alice["balance"], alice["debits_pending"]) == (85, 0)


def test_post_and_void_of_a_plain_transfer_are_refused(funded: Client) -> None:
    record(funded, "plain", "alice", "bob", 1)
    assert_problem(funded.post("/v1/transfers/plain/post", json={}), 422, "transfer_not_pending")
    assert_problem(funded.post("/v1/transfers/plain/void", json={}), 422, "transfer_not_pending")


def test_an_unhandled_hold_expires_on_its_own(funded: Client) -> None:
    hold = record(funded, "hold", "alice", "bob", 40, pending=True, timeout_seconds=1)
    time.sleep(1.1)
    # Past its timeout a hold can no longer be posted, even before the expiry is written.
    assert_problem(funded.post("/v1/transfers/hold/post", json={}), 422, "transfer_expired")
    assert_problem(funded.post("/v1/transfers/hold/void", json={}), 422, "transfer_expired")
    deadline = time.monotonic() + 20
    while transfer(funded, "hold")["status"] != "expired":
        assert time.monotonic() < deadline, "the hold never expired"
        time.sleep(0.1)
    expired = transfer(funded, "hold")
    assert expired["amount_posted"] == 0
    assert expired["position"] >= hold["position"]
    head = last_position(funded)
    alice = account(funded, "alice", min_position=head)
    assert (alice["balance"], alice["available"], alice["debits_pending"]) == (100, 100, 0)
    assert account(funded, "bob", min_position=head)["credits_pending"] == 0


# Reversal ------------------------------------------------------------------------------


def test_reverse_refunds_with_a_new_linked_transfer(funded: Client) -> None:
    original = record(funded, "sale", "alice", "bob", 30, metadata={"order": "1"})
    first = funded.post("/v1/transfers/sale/reverse", json={"id": "refund", "metadata": {"r": "1"}})
    refund = ok(first, 201)
    assert refund["id"] == "refund"
    assert (refund["debit_account_id"], refund["credit_account_id"]) == ("bob", "alice")
    assert refund["amount"] == 30
    assert refund["reversal_of"] == "sale"
    assert refund["metadata"] == {"r": "1"}
    assert refund["status"] == "posted"
    assert refund["position"] > original["position"]
    # Replay: 200, the same body; moving nothing again.
    second = funded.post(
        "/v1/transfers/sale/reverse", json={"id": "refund", "metadata": {"r": "1"}}
    )
    assert second.status_code == 200
    assert second.content == first.content
    # The same reversal id with another body conflicts; another id is refused.
    assert_problem(
        funded.post("/v1/transfers/sale/reverse", json={"id": "refund"}),
        409,
        "idempotency_conflict",
    )
    assert_problem(
        funded.post("/v1/transfers/sale/reverse", json={"id": "refund-2"}),
        422,
        "transfer_already_reversed",
    )
    # A reversal id that names an unrelated existing transfer is a conflict.
    record(funded, "other", "alice", "bob", 1)
    assert_problem(
        funded.post("/v1/transfers/other/reverse", json={"id": "sale"}), 409, "idempotency_conflict"
    )
    head = last_position(funded)
    assert transfer(funded, "sale", head)["reversed_by"] == "refund"
    assert balances(funded, head, "alice", "bob") == {"alice": 99, "bob": 1}


def test_reversing_a_partly_posted_hold_refunds_what_was_posted(funded: Client) -> None:
    record(funded, "hold", "alice", "bob", 40, pending=True)
    ok(funded.post("/v1/transfers/hold/post", json={"amount": 25}))
    refund = ok(funded.post("/v1/transfers/hold/reverse", json={"id": "refund"}), 201)
    assert refund["amount"] == 25
    assert balances(funded, refund["position"], "alice", "bob") == {"alice": 100, "bob": 0}


def test_reversal_is_refused_when_the_refund_cannot_be_paid(funded: Client) -> None:
    open_account(funded, "carol")
    record(funded, "sale", "alice", "bob", 30)
    record(funded, "spent", "bob", "carol", 30)
    assert_problem(
        funded.post("/v1/transfers/sale/reverse", json={"id": "refund"}), 422, "insufficient_funds"
    )
    head = last_position(funded)
    assert transfer(funded, "sale", head)["reversed_by"] is None
    for body in ({}, {"id": ""}, {"id": "ok", "x": 1}, {"id": "ok", "metadata": {"k": 1}}):
        response = funded.post("/v1/transfers/sale/reverse", json=body)
        assert_problem(response, 422, "validation_error")


# Batches -------------------------------------------------------------------------------


def test_an_atomic_batch_records_every_item_in_order(funded: Client) -> None:
    open_account(funded, "carol")
    items = [
        transfer_body("leg1", "alice", "bob", 10),
        transfer_body("leg2", "bob", "carol", 10),
        transfer_body("leg3", "alice", "carol", 5, pending=True),
    ]
    first = funded.post("/v1/transfers/batch", json={"atomic": True, "transfers": items})
    results = ok(first)["results"]
    assert [r["status"] for r in results] == [201, 201, 201]
    assert [r["transfer"]["id"] for r in results] == ["leg1", "leg2", "leg3"]
    assert all(r["error"] is None for r in results)
    # One atomic write: each item answers its own record's position, in order; the
    # last one ends the commit, where every leg of the batch is visible.
    positions = [r["transfer"]["position"] for r in results]
    assert positions == sorted(set(positions))
    position = positions[-1]
    assert balances(funded, position, "alice", "bob", "carol") == {
        "alice": 90,
        "bob": 0,
        "carol": 10,
    }
    # A replay of the whole batch answers 200 per item with the same transfers.
    replay = ok(funded.post("/v1/transfers/batch", json={"atomic": True, "transfers": items}))
    assert [r["status"] for r in replay["results"]] == [200, 200, 200]
    # The same body, positions included: a transfer's position is its record's.
    assert [r["transfer"] for r in replay["results"]] == [r["transfer"] for r in results]


def test_an_atomic_batch_fails_as_a_whole_and_names_the_item(funded: Client) -> None:
    head = last_position(funded)
    cases: list[tuple[list[Json], int, str, int]] = [
        (
            [
                transfer_body("a1", "alice", "bob", 10),
                transfer_body("a2", "alice", "bob", 10),
                transfer_body("a3", "alice", "bob", 81),
            ],
            422,
            "insufficient_funds",
            2,
        ),
        (
            [transfer_body("b1", "alice", "bob", 10), transfer_body("b2", "bob", "ghost", 1)],
            404,
            "account_not_found",
            1,
        ),
        (
            [transfer_body("c1", "alice", "bob", 10), transfer_body("c2", "bob", "bob", 1)],
            422,
            "same_account",
            1,
        ),
        (
            [transfer_body("d1", "alice", "bob", 10), transfer_body("d1", "alice", "bob", 11)],
            409,
            "idempotency_conflict",
            1,
        ),
    ]
    for items, status, code, index in cases:
        response = funded.post("/v1/transfers/batch", json={"atomic": True, "transfers": items})
        problem = assert_problem(response, status, code)
        assert problem["index"] == index, problem
    # Nothing of any of them happened.
    assert last_position(funded) == head
    assert balances(funded, head, "alice", "bob") == {"alice": 100, "bob": 0}
    for item_id in ("a1", "a2", "b1", "c1", "d1"):
        assert_problem(funded.get(f"/v1/transfers/{item_id}"), 404, "transfer_not_found")


def test_an_independent_batch_answers_per_item_in_order(funded: Client) -> None:
    record(funded, "seen", "alice", "bob", 1)
    items = [
        transfer_body("i0", "alice", "bob", 10),
        transfer_body("i1", "alice", "bob", 1000),
        transfer_body("i2", "alice", "bob", 20),
        transfer_body("seen", "alice", "bob", 1),
        transfer_body("seen", "alice", "bob", 2),
        transfer_body("i5", "bob", "bob", 1),
        transfer_body("i0", "alice", "bob", 10),
    ]
    results = ok(funded.post("/v1/transfers/batch", json={"atomic": False, "transfers": items}))[
        "results"
    ]
    assert [r["status"] for r in results] == [201, 422, 201, 200, 409, 422, 200]
    codes = [r["error"]["code"] if r["error"] else None for r in results]
    assert codes == [
        None,
        "insufficient_funds",
        None,
        None,
        "idempotency_conflict",
        "same_account",
        None,
    ]
    for result in results:
        assert (result["transfer"] is None) != (result["error"] is None), result
        if result["error"]:
            problem = result["error"]
            assert {"type", "title", "status", "detail", "code"} <= problem.keys()
    assert without_position(results[0]["transfer"]) == without_position(results[6]["transfer"])
    position = max(r["transfer"]["position"] for r in results if r["transfer"])
    assert balances(funded, position, "alice", "bob") == {"alice": 69, "bob": 31}
    assert_problem(funded.get("/v1/transfers/i1"), 404, "transfer_not_found")


def test_batch_size_is_bounded(funded: Client) -> None:
    too_many = [transfer_body(f"b{i}", "alice", "bob", 1) for i in range(1001)]
    for atomic in (True, False):
        response = funded.post(
            "/v1/transfers/batch", json={"atomic": atomic, "transfers": too_many}
        )
        assert_problem(response, 413, "batch_too_large")
    assert_problem(funded.get("/v1/transfers/b0"), 404, "transfer_not_found")
    for body in (
        {"atomic": True, "transfers": []},
        {"transfers": [transfer_body("x", "alice", "bob", 1)]},
        {"atomic": "yes", "transfers": [transfer_body("x", "alice", "bob", 1)]},
        {"atomic": True},
        {"atomic": True, "transfers": {}},
        {"atomic": True, "transfers": [transfer_body("x", "alice", "bob", 0)]},
        {"atomic": True, "transfers": [{**transfer_body("x", "alice", "bob", 1), "memo": "m"}]},
        {"atomic": True, "transfers": [transfer_body("x", "alice", "bob", 1)], "memo": "m"},
    ):
        response = funded.post("/v1/transfers/batch", json=body)
        assert_problem(response, 422, "validation_error")


def test_a_batch_of_the_maximum_size_is_accepted(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    items = [transfer_body(f"m{i}", ISSUER, "a", 1) for i in range(1000)]
    results = ok(client.post("/v1/transfers/batch", json={"atomic": True, "transfers": items}))[
        "results"
    ]
    assert len(results) == 1000
    assert {r["status"] for r in results} == {201}


# Lists ---------------------------------------------------------------------------------


def all_transfers(client: Client, limit: int, **query: Any) -> list[Json]:
    items: list[Json] = []
    cursor: str | None = None
    for _ in range(100):
        params = {**query, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = ok(client.get("/v1/transfers", params=params))
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_transfers_of_an_account_newest_first_by_cursor(funded: Client) -> None:
    open_account(funded, "carol")
    for i in range(5):
        record(funded, f"ab{i}", "alice", "bob", 1)
        record(funded, f"ac{i}", "alice", "carol", 1)
    last = record(funded, "bc", "bob", "carol", 1)

    everything = ok(
        funded.get("/v1/transfers", params={"min_position": last["position"], "limit": 1000})
    )
    assert everything["next_cursor"] is None
    every_id = [t["id"] for t in everything["items"]]
    assert len(every_id) == 12
    assert every_id[0] == "bc"
    positions = [t["position"] for t in everything["items"]]
    assert positions == sorted(positions, reverse=True)

    of_bob = all_transfers(funded, limit=2, account_id="bob")
    assert [t["id"] for t in of_bob] == ["bc", *[f"ab{i}" for i in reversed(range(5))]]
    assert all("bob" in (t["debit_account_id"], t["credit_account_id"]) for t in of_bob)
    of_carol = all_transfers(funded, limit=4, account_id="carol")
    assert [t["id"] for t in of_carol] == ["bc", *[f"ac{i}" for i in reversed(range(5))]]
    assert all_transfers(funded, limit=5) == everything["items"]
    nobody = ok(funded.get("/v1/transfers", params={"account_id": "nobody"}))
    assert (nobody["items"], nobody["next_cursor"]) == ([], None)


def test_transfer_lists_refuse_bad_parameters(funded: Client) -> None:
    for cursor in ("garbage!", "e30", "eyJiZWZvcmUiOiAiMSJ9"):
        response = funded.get("/v1/transfers", params={"cursor": cursor})
        assert_problem(response, 400, "invalid_cursor")
    for query in (
        {"limit": 0},
        {"limit": 1001},
        {"account_id": "has space"},
        {"account_id": "x" * 129},
        {"cursor": "c" * 201},
    ):
        assert_problem(funded.get("/v1/transfers", params=query), 422, "validation_error")
    assert_problem(
        funded.get("/v1/transfers", params={"min_position": 10**12}), 422, "position_out_of_range"
    )
    assert_problem(
        funded.get("/v1/transfers/x", params={"min_position": 10**12}),
        422,
        "position_out_of_range",
    )


def test_a_batch_answer_says_exactly_what_the_transfer_model_says() -> None:
    # Batch answers are encoded from plain values (transfer_document), single answers
    # through TransferRead: the two must never drift apart.
    ledger = Ledger(event_store_env("memory://"))
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("ana", "CREDITS", metadata={"tier": "gold"}))
    ledger.open_account(OpenAccount("shop", "CREDITS"))
    expiry = datetime(2999, 1, 1, 12, tzinfo=UTC)
    outcomes = [
        ledger.record_transfer(
            RecordTransfer("grant", "bank", "ana", 50, grant=GrantTerms(expires_at=expiry))
        ),
        ledger.record_transfer(RecordTransfer("paid", "bank", "ana", 50, metadata={"ü": "ß"})),
        ledger.record_transfer(RecordTransfer("spend", "ana", "shop", 70)),
        ledger.record_transfer(
            RecordTransfer("hold", "ana", "shop", 5, pending=True, timeout_seconds=60)
        ),
        ledger.reverse_transfer("spend", "refund", amount=10),
    ]
    for outcome in outcomes:
        modelled = TransferRead.of(outcome.transfer, outcome.position).model_dump(mode="json")
        encoded = orjson.dumps(
            transfer_document(outcome.transfer, outcome.position), option=orjson.OPT_UTC_Z
        )
        assert orjson.loads(encoded) == modelled
    ledger.close()
