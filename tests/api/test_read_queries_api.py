"""The read queries over HTTP: account list and search, transfer filters, balance
history, ledger totals, metadata updates, statement actions, unknown parameters, and
the position every answer says it reflects (body and ``Ledger-Position`` header)."""

from datetime import timedelta

from tests.api.helpers import (
    ISSUER,
    Client,
    Json,
    assert_problem,
    fund,
    now,
    ok,
    open_account,
    open_issuer,
    record,
    rfc3339,
    transfer_body,
)


def search(client: Client, **params: str | int) -> Json:
    return ok(client.get("/v1/accounts", params=params))


def accounts_with(client: Client, count: int) -> int:
    """``count`` user accounts with metadata; the position of the last write."""
    open_issuer(client)
    last = 0
    for number in range(count):
        plan = "pro" if number % 2 else "free"
        last = open_account(client, f"user:{number:02}", metadata={"plan": plan})["position"]
    return int(last)


def test_unknown_query_parameters_are_refused_by_name(client: Client) -> None:
    open_issuer(client)
    body = assert_problem(
        client.get("/v1/transfers", params={"stauts": "pending", "limit": 5}),
        400,
        "unknown_parameter",
    )
    assert "stauts" in body["detail"]
    assert "limit" not in body["detail"].split(";")[0]
    for path in ("/v1/accounts", f"/v1/accounts/{ISSUER}", "/v1/ledger/totals"):
        problem = assert_problem(client.get(path, params={"bogus": "1"}), 400, "unknown_parameter")
        assert "bogus" in problem["detail"]
    # metadata.KEY is a filter only where lists take it
    assert_problem(
        client.get(f"/v1/accounts/{ISSUER}", params={"metadata.plan": "pro"}),
        400,
        "unknown_parameter",
    )


def test_accounts_are_searched_by_prefix_unit_status_and_metadata(client: Client) -> None:
    written = accounts_with(client, 6)
    page = search(client, prefix="user:", min_position=written)
    assert [a["id"] for a in page["items"]] == [f"user:{n:02}" for n in range(6)]
    assert page["position"] >= written
    pro = search(client, **{"metadata.plan": "pro"})
    assert [a["id"] for a in pro["items"]] == ["user:01", "user:03", "user:05"]
    assert search(client, unit="USD")["items"] == []
    assert [a["id"] for a in search(client, status="open", prefix="system:")["items"]] == [ISSUER]


def test_account_pages_follow_by_cursor_in_id_order(client: Client) -> None:
    written = accounts_with(client, 5)
    seen: list[str] = []
    params: dict[str, str | int] = {"prefix": "user:", "limit": 2, "min_position": written}
    for _ in range(10):
        page = search(client, **params)
        seen += [a["id"] for a in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [f"user:{n:02}" for n in range(5)]
    assert_problem(client.get("/v1/accounts", params={"cursor": "nonsense"}), 400, "invalid_cursor")


def test_a_read_answers_its_position_in_the_body_and_the_header(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    written = fund(client, "a", 5)
    read = client.get("/v1/accounts/a")
    assert read.status_code == 200
    assert int(read.headers["ledger-position"]) == read.json()["position"]
    assert read.json()["position"] >= written["position"]
    listed = client.get("/v1/transfers", headers={"Ledger-Min-Position": str(written["position"])})
    assert int(listed.headers["ledger-position"]) == listed.json()["position"]
    assert listed.json()["position"] >= written["position"]
    beyond = client.get("/v1/transfers", headers={"Ledger-Min-Position": str(10**12)})
    assert_problem(beyond, 422, "position_out_of_range")


def test_a_balance_read_right_after_a_write_sees_it_without_waiting(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    for amount in range(1, 31):
        written = fund(client, "a", amount, transfer_id=f"t{amount}")
        read = ok(client.get("/v1/accounts/a"))
        assert read["balance"] == amount * (amount + 1) // 2
        assert read["position"] >= written["position"]


def test_the_status_filter_of_transfers_is_applied(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    fund(client, "a", 50)
    last = record(client, "hold", "a", ISSUER, 10, pending=True, timeout_seconds=60)
    pending = ok(
        client.get("/v1/transfers", params={"status": "pending", "min_position": last["position"]})
    )
    assert [t["id"] for t in pending["items"]] == ["hold"]
    posted = ok(client.get("/v1/transfers", params={"status": "posted"}))
    assert "hold" not in [t["id"] for t in posted["items"]]
    assert posted["items"]
    ascending = ok(client.get("/v1/transfers", params={"order": "asc"}))
    positions = [t["position"] for t in ascending["items"]]
    assert positions == sorted(positions)
    assert len(positions) == 2


def test_transfers_are_filtered_by_metadata_and_time(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    record(client, "early", ISSUER, "a", 1, metadata={"order": "o-1"})
    middle = now()
    last = record(client, "late", ISSUER, "a", 2, metadata={"order": "o-2"})
    by_order = ok(
        client.get(
            "/v1/transfers", params={"metadata.order": "o-2", "min_position": last["position"]}
        )
    )
    assert [t["id"] for t in by_order["items"]] == ["late"]
    since = ok(client.get("/v1/transfers", params={"since": rfc3339(middle)}))
    assert [t["id"] for t in since["items"]] == ["late"]
    until = ok(client.get("/v1/transfers", params={"until": rfc3339(middle)}))
    assert [t["id"] for t in until["items"]] == ["early"]


def test_metadata_is_updated_by_a_merge_patch_and_read_at_once(client: Client) -> None:
    open_account(client, "a", metadata={"plan": "free", "team": "x"})
    updated = ok(client.patch("/v1/accounts/a", json={"metadata": {"plan": "pro", "team": None}}))
    assert updated["metadata"] == {"plan": "pro"}
    assert ok(client.get("/v1/accounts/a"))["metadata"] == {"plan": "pro"}
    found = search(client, **{"metadata.plan": "pro", "min_position": updated["position"]})
    assert [a["id"] for a in found["items"]] == ["a"]
    assert_problem(
        client.patch("/v1/accounts/a", json={"metadata": {"": "x"}}), 422, "validation_error"
    )
    assert_problem(
        client.patch("/v1/accounts/nobody", json={"metadata": {}}), 404, "account_not_found"
    )
    assert ok(client.get("/v1/accounts/a"))["metadata"] == {"plan": "pro"}


def test_resending_the_opening_after_a_metadata_update_is_still_a_replay(client: Client) -> None:
    """The opening's body is the idempotency key's body: a later PATCH does not turn
    the same POST into a conflict, and the metadata of the PATCH is not the opening's."""
    opening = {"id": "a", "unit": "CREDITS", "metadata": {"plan": "free"}}
    assert client.post("/v1/accounts", json=opening).status_code == 201
    updated = ok(client.patch("/v1/accounts/a", json={"metadata": {"plan": "pro"}}))
    replay = client.post("/v1/accounts", json=opening)
    assert replay.status_code == 200, replay.text
    assert replay.json()["metadata"] == {"plan": "pro"}  # the account as it stands
    assert replay.json()["position"] >= updated["position"]
    changed = {**opening, "metadata": {"plan": "pro"}}
    assert_problem(client.post("/v1/accounts", json=changed), 409, "idempotency_conflict")
    assert ok(client.get("/v1/accounts/a"))["metadata"] == {"plan": "pro"}


def test_past_reads_show_the_metadata_of_then(client: Client) -> None:
    opened = open_account(client, "a", metadata={"plan": "free"})
    updated = ok(client.patch("/v1/accounts/a", json={"metadata": {"plan": "pro"}}))
    wait = {"min_position": updated["position"]}
    then = ok(client.get("/v1/accounts/a", params={"at_position": opened["position"], **wait}))
    assert then["metadata"] == {"plan": "free"}
    later = ok(client.get("/v1/accounts/a", params={"at_position": updated["position"]}))
    assert later["metadata"] == {"plan": "pro"}


def test_statement_lines_name_what_happened(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    fund(client, "a", 50)
    record(client, "hold", "a", ISSUER, 10, pending=True, timeout_seconds=60)
    last = ok(client.post("/v1/transfers/hold/post", json={"amount": 4}))
    lines = ok(client.get("/v1/accounts/a/entries", params={"min_position": last["position"]}))[
        "items"
    ]
    assert [
        (line["action"], line["balance_change"], line["available_change"]) for line in lines
    ] == [
        ("hold_captured", -4, 6),
        ("hold_placed", 0, -10),
        ("credit", 50, 50),
    ]


def test_history_and_totals_answer_over_http(client: Client) -> None:
    open_issuer(client)
    open_account(client, "a")
    written = fund(client, "a", 7)
    since = rfc3339(now() - timedelta(days=2))
    history = ok(
        client.get(
            "/v1/accounts/a/history",
            params={"interval": "day", "since": since, "min_position": written["position"]},
        )
    )
    assert history["items"][-1]["balance"] == 7
    assert [point["balance"] for point in history["items"][:-1]] == [0] * (
        len(history["items"]) - 1
    )
    assert_problem(client.get("/v1/accounts/a/history"), 422, "validation_error")
    totals = ok(client.get("/v1/ledger/totals"))
    assert totals["units"] == [
        {
            "unit": "CREDITS",
            "debits_posted": 7,
            "credits_posted": 7,
            "balance_sum": 0,
            "account_count": 2,
        }
    ]
    before = ok(client.get("/v1/ledger/totals", params={"at_position": written["position"] - 1}))
    assert all(unit["balance_sum"] == 0 for unit in before["units"])


def test_totals_as_of_a_time_say_the_position_they_reflect(client: Client) -> None:
    """As of a time the totals are those at the position where it cuts the log (decision
    0036), and that is the position they say: read at it, they are the same."""
    open_issuer(client)
    open_account(client, "a")
    first = fund(client, "a", 7)
    fund(client, "a", 5)
    as_of = ok(client.get("/v1/ledger/totals", params={"as_of": first["recorded_at"]}))
    assert [unit["credits_posted"] for unit in as_of["units"]] == [7]
    assert as_of["position"] == first["position"]
    at = ok(client.get("/v1/ledger/totals", params={"at_position": as_of["position"]}))
    assert at["units"] == as_of["units"]


def test_a_transfers_answer_says_its_position_in_the_header_too(client: Client) -> None:
    """Written now (201) or replayed (200): the write's position, body and header alike."""
    open_issuer(client)
    open_account(client, "a")
    body = transfer_body("t-position", ISSUER, "a", 5)
    for status in (201, 200):
        answer = client.post("/v1/transfers", json=body)
        assert answer.status_code == status, answer.text
        assert int(answer.headers["ledger-position"]) == answer.json()["position"]
