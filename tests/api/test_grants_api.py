"""Credit grants over HTTP: the grant body, allocations in every transfer answer, the
grants endpoint (statuses, paging, time travel) and each new problem code."""

import time
from datetime import UTC, datetime, timedelta
from typing import Final

from app.api.services import Services
from app.domain.lots import LIVE_LOTS_MAX
from tests.api.helpers import (
    ISSUER,
    Client,
    Json,
    assert_problem,
    ok,
    open_account,
    open_issuer,
    transfer_body,
)

ALICE = "user:alice"
SHOP = "shop"
# A grant that expires during the test: long enough for its requests on a loaded machine
# (a collector pass over a loaded test process's heap has taken three seconds).
SHORT_GRANT_SECONDS: Final = 6.0
# A grant that expires only on the ledger's clock, moved past it.
LATER_GRANT_SECONDS: Final = 3600.0


def setup_accounts(client: Client) -> int:
    """Opens the accounts; returns the position of the last opening."""
    open_issuer(client)
    open_account(client, ALICE)
    return int(open_account(client, SHOP)["position"])


def grant(client: Client, grant_id: str, amount: int, **terms: object) -> Json:
    body = transfer_body(grant_id, ISSUER, ALICE, amount, grant=terms)
    return ok(client.post("/v1/transfers", json=body), 201)


def spend(client: Client, transfer_id: str, amount: int, **fields: object) -> Json:
    body = transfer_body(transfer_id, ALICE, SHOP, amount, **fields)
    return ok(client.post("/v1/transfers", json=body), 201)


def grants(client: Client, account_id: str = ALICE, **params: object) -> Json:
    query = {"min_position": client.get("/v1/ready").json()["head"], **params}
    return ok(client.get(f"/v1/accounts/{account_id}/grants", params=query))


def in_seconds(seconds: float) -> str:
    return (datetime.now(tz=UTC) + timedelta(seconds=seconds)).isoformat()


def test_a_grant_answers_its_terms_and_a_spend_answers_its_allocations(client: Client) -> None:
    setup_accounts(client)
    granted = grant(client, "promo", 10, category="promotional", expires_at=in_seconds(3600))
    assert granted["grant"]["category"] == "promotional"
    assert granted["grant"]["priority"] == 50
    grant(client, "pack", 10)
    spent = spend(client, "s1", 12)
    assert spent["allocations"] == [
        {"grant_id": "promo", "amount": 10},
        {"grant_id": "pack", "amount": 2},
    ]
    read = ok(client.get("/v1/transfers/s1", params={"min_position": spent["position"]}))
    assert read["allocations"] == spent["allocations"]
    account = ok(client.get(f"/v1/accounts/{ALICE}"))
    assert (account["balance"], account["available"]) == (8, 8)


def test_a_hold_its_post_and_a_reversal_answer_their_allocations(client: Client) -> None:
    setup_accounts(client)
    grant(client, "pack", 10)
    hold = spend(client, "h1", 6, pending=True)
    assert hold["allocations"] == [{"grant_id": "pack", "amount": 6}]
    posted = ok(client.post("/v1/transfers/h1/post", json={"amount": 4}))
    assert posted["allocations"] == [{"grant_id": "pack", "amount": 4}]
    reversal = ok(client.post("/v1/transfers/pack/reverse", json={"id": "r1", "amount": 2}), 201)
    assert reversal["amount"] == 2
    assert reversal["allocations"] == [{"grant_id": "pack", "amount": 2}]


def test_the_grants_endpoint_lists_lots_by_status(client: Client) -> None:
    setup_accounts(client)
    grant(client, "used", 5)
    grant(client, "kept", 5, priority=90)
    spend(client, "s1", 5)
    live = grants(client)
    assert [lot["grant_id"] for lot in live["items"]] == ["kept"]
    lot = live["items"][0]
    assert (lot["amount"], lot["remaining"], lot["reserved"], lot["status"]) == (5, 5, 0, "live")
    assert lot["priority"] == 90
    consumed = grants(client, status="consumed")
    assert [lot["grant_id"] for lot in consumed["items"]] == ["used"]
    every = grants(client, status="all", limit=1)
    assert len(every["items"]) == 1
    assert every["next_cursor"] is not None
    rest = grants(client, status="all", cursor=every["next_cursor"])
    assert [lot["grant_id"] for lot in rest["items"]] == ["kept"]


def test_a_page_of_grants_by_status_is_full_and_its_cursor_reaches_the_rest(
    client: Client,
) -> None:
    setup_accounts(client)
    for n in range(3):  # consumed and live lots alternate in grant order
        grant(client, f"used{n}", 5, priority=0)
        granted = grant(client, f"kept{n}", 5, priority=90)
    spent = spend(client, "s1", 15)

    def pages(**params: object) -> list[list[str]]:
        found: list[list[str]] = []
        cursor = None
        while True:
            query = dict(params) if cursor is None else {**params, "cursor": cursor}
            page = grants(client, ALICE, limit=2, **query)
            found.append([lot["grant_id"] for lot in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    assert pages(status="live") == [["kept0", "kept1"], ["kept2"]]
    assert pages(status="consumed") == [["used0", "used1"], ["used2"]]
    assert pages(status="expired") == [[]]
    # As the lots stood before the spend: every lot live, none consumed.
    before = {"at_position": granted["position"]}
    assert pages(status="live", **before) == [
        ["used0", "kept0"],
        ["used1", "kept1"],
        ["used2", "kept2"],
    ]
    assert pages(status="consumed", **before) == [[]]
    assert spent["position"] > granted["position"]


def test_the_grants_of_an_account_travel_in_time(client: Client) -> None:
    opened = setup_accounts(client)
    granted = grant(client, "g1", 10)
    spent = spend(client, "s1", 10)
    now = grants(client, status="all")
    assert now["items"][0]["status"] == "consumed"
    then = grants(client, status="all", at_position=granted["position"])
    assert (then["items"][0]["remaining"], then["items"][0]["status"]) == (10, "live")
    assert then["position"] >= granted["position"]
    assert then["position"] < spent["position"]
    before = grants(client, status="all", at_position=opened)
    assert before["items"] == []
    at_time = grants(client, status="all", as_of=datetime.now(tz=UTC).isoformat())
    assert at_time["items"][0]["remaining"] == 0


def test_an_expired_grant_is_listed_as_expired_and_its_remainder_reaches_breakage(
    client: Client, services: Services
) -> None:
    setup_accounts(client)
    grant(client, "short", 10, expires_at=in_seconds(LATER_GRANT_SECONDS))
    spend(client, "s1", 3)
    services.ledger.clock = lambda: (
        datetime.now(tz=UTC) + timedelta(seconds=LATER_GRANT_SECONDS + 1)
    )
    moved = services.ledger.expire_grant("short")
    assert moved is not None
    lots = grants(client, status="expired")
    assert [(lot["grant_id"], lot["breakage"]) for lot in lots["items"]] == [("short", 7)]
    at_expiry = {"min_position": moved.position}
    breakage = ok(client.get("/v1/accounts/breakage:CREDITS", params=at_expiry))
    assert breakage["balance"] == 7


def test_grant_bodies_out_of_range_are_refused(client: Client) -> None:
    setup_accounts(client)
    cases: list[object] = [
        {"priority": 101},
        {"priority": -1},
        {"category": "gift"},
        {"expires_at": "2026-01-01T00:00:00"},  # no offset
        {"unknown": 1},
    ]
    for terms in cases:
        body = transfer_body("g1", ISSUER, ALICE, 1, grant=terms)
        assert_problem(client.post("/v1/transfers", json=body), 422, "validation_error")
    pending = transfer_body("g1", ISSUER, ALICE, 1, grant={}, pending=True)
    assert_problem(client.post("/v1/transfers", json=pending), 422, "validation_error")
    reserved = transfer_body("expiry:g1", ISSUER, ALICE, 1)
    assert_problem(client.post("/v1/transfers", json=reserved), 422, "validation_error")


def test_a_grant_is_part_of_the_idempotent_body(client: Client) -> None:
    setup_accounts(client)
    grant(client, "g1", 10, priority=10)
    again = transfer_body("g1", ISSUER, ALICE, 10, grant={"priority": 10})
    assert ok(client.post("/v1/transfers", json=again))["grant"]["priority"] == 10
    other = transfer_body("g1", ISSUER, ALICE, 10, grant={"priority": 20})
    assert_problem(client.post("/v1/transfers", json=other), 409, "idempotency_conflict")


def test_grant_reversal_codes(client: Client) -> None:
    setup_accounts(client)
    grant(client, "g1", 10)
    spend(client, "s1", 10)
    consumed = client.post("/v1/transfers/g1/reverse", json={"id": "r1"})
    assert_problem(consumed, 422, "grant_consumed")
    grant(client, "g2", 10)
    too_much = client.post("/v1/transfers/g2/reverse", json={"id": "r2", "amount": 11})
    assert_problem(too_much, 422, "validation_error")
    spend(client, "h1", 4, pending=True)
    past_free = client.post("/v1/transfers/g2/reverse", json={"id": "r2", "amount": 7})
    assert_problem(past_free, 422, "grant_remaining_exceeded")
    spend(client, "h2", 6, pending=True)
    reserved = client.post("/v1/transfers/g2/reverse", json={"id": "r2"})
    assert_problem(reserved, 422, "grant_reserved")


def test_one_grant_past_the_live_lot_limit_is_refused(client: Client) -> None:
    setup_accounts(client)
    items = [transfer_body(f"g{n}", ISSUER, ALICE, 1, grant={}) for n in range(LIVE_LOTS_MAX)]
    ok(client.post("/v1/transfers/batch", json={"atomic": True, "transfers": items}))
    body = transfer_body("one-more", ISSUER, ALICE, 1, grant={})
    assert_problem(client.post("/v1/transfers", json=body), 422, "live_lot_limit_exceeded")


def test_the_grants_of_an_unknown_account_are_not_found(client: Client) -> None:
    response = client.get("/v1/accounts/nobody/grants")
    assert_problem(response, 404, "account_not_found")
    setup_accounts(client)
    bad = client.get(f"/v1/accounts/{ALICE}/grants", params={"status": "gone"})
    assert_problem(bad, 422, "validation_error")


def test_statement_lines_show_the_lots_they_moved(client: Client) -> None:
    setup_accounts(client)
    grant(client, "promo", 10, category="promotional")
    spent = spend(client, "s1", 4)
    lines = ok(
        client.get(f"/v1/accounts/{ALICE}/entries", params={"min_position": spent["position"]})
    )["items"]
    by_transfer = {line["transfer_id"]: line for line in lines}
    assert by_transfer["s1"]["allocations"] == [{"grant_id": "promo", "amount": -4}]
    assert by_transfer["promo"]["allocations"] == [{"grant_id": "promo", "amount": 10}]
    shop_lines = ok(
        client.get(f"/v1/accounts/{SHOP}/entries", params={"min_position": spent["position"]})
    )["items"]
    assert shop_lines[0]["allocations"] == []  # the general lot alone


def test_available_leaves_out_future_and_expired_lots_now_and_as_they_stood(
    client: Client,
) -> None:
    setup_accounts(client)
    grant(client, "later", 10, effective_at=in_seconds(3600))
    expires_at = datetime.now(tz=UTC) + timedelta(seconds=SHORT_GRANT_SECONDS)
    short = grant(client, "short", 5, expires_at=expires_at.isoformat())
    read = ok(client.get(f"/v1/accounts/{ALICE}", params={"min_position": short["position"]}))
    assert (read["balance"], read["available"]) == (15, 5)
    time.sleep(max((expires_at - datetime.now(tz=UTC)).total_seconds(), 0) + 0.05)
    expired = ok(client.get(f"/v1/accounts/{ALICE}"))
    # Nothing of the lot is available past its expiry, whether the expiry worker has
    # already moved its remainder to breakage (balance 10) or not yet (balance 15).
    assert expired["available"] == 0
    if expired["balance"] != 15:
        assert expired["balance"] == 10
        breakage = ok(client.get("/v1/accounts/breakage:CREDITS"))
        assert breakage["balance"] == 5
    then = ok(client.get(f"/v1/accounts/{ALICE}", params={"at_position": short["position"]}))
    assert (then["balance"], then["available"]) == (15, 5)
