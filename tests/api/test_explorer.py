"""The explorer through the test client: signing in and out, sessions that end when
their key is revoked, CSRF, headers, escaping, and what each page shows compared with
what the API answers."""

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from markupsafe import escape

from app.api.services import Services
from app.explorer.pages import HistoryWindow, picker_value
from app.explorer.reads import STATEMENT_PAGE_SIZE
from app.explorer.sessions import CSRF_COOKIE, EXPIRED_KEY, SESSION_COOKIE, WRONG_KEY
from app.persistence.last_audit import LastAuditFile
from tests.api.helpers import (
    ISSUER,
    Client,
    account,
    fund,
    ok,
    open_account,
    open_issuer,
    record,
    rfc3339,
)

HOSTILE_KEY: Final = "<script>alert('key')</script>"
HOSTILE_VALUE: Final = '"><img src=x onerror=alert(1)>'
# Long enough to sign in on a loaded machine (a collector pass over a loaded test
# process's heap has taken three seconds), short enough to wait out.
KEY_LIFETIME_SECONDS: Final = 8.0
CSRF_FIELD: Final = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture
def browser(app: Litestar) -> Iterator[Client]:
    """A client with no API key: the explorer goes by its session cookie."""
    with TestClient(app=app) as test_client:
        yield test_client


def csrf_token(browser: Client) -> str:
    page = browser.get("/explorer/login")
    match = CSRF_FIELD.search(page.text)
    assert match is not None, page.text
    return match.group(1)


def sign_in(browser: Client, key: str, next_path: str = "/explorer/") -> httpx.Response:
    return browser.post(
        "/explorer/login",
        data={"key": key, "next": next_path, "_csrf_token": csrf_token(browser)},
        follow_redirects=False,
    )


def signed_in(browser: Client, key: str) -> Client:
    answer = sign_in(browser, key)
    assert answer.status_code == 303, answer.text
    return browser


def page(browser: Client, path: str, **params: str | int) -> str:
    answer = browser.get(path, params=params or None, follow_redirects=False)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith("text/html")
    return answer.text


def figure(text: str, name: str) -> int:
    match = re.search(rf'id="figure-{name}" data-value="(-?\d+)"', text)
    assert match is not None, text
    return int(match.group(1))


def wait_for_views(client: Client, position: int) -> None:
    # A view read (an account read comes from its stream and never waits for the views).
    ok(client.get(f"/v1/accounts/{ISSUER}/entries", params={"min_position": position}))


# Signing in and out --------------------------------------------------------------------


def test_pages_need_a_session_and_sign_in_leads_back_to_the_page_asked_for(
    browser: Client, keys: dict[str, str]
) -> None:
    asked = browser.get("/explorer/ledger", follow_redirects=False)
    assert asked.status_code == 303
    assert (
        asked.headers["location"] == "/explorer/login?reason=signed_out&next=%2Fexplorer%2Fledger"
    )
    # An API key in the Authorization header is not a session.
    bearer = browser.get(
        "/explorer/ledger",
        headers={"Authorization": f"Bearer {keys['admin']}"},
        follow_redirects=False,
    )
    assert bearer.status_code == 303
    answer = sign_in(browser, keys["read"], "/explorer/ledger")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/explorer/ledger"
    assert "The books" in page(browser, "/explorer/ledger")


def test_a_read_key_is_enough_for_every_page(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    funded = fund(client, "user:1", 10, "t:1")
    wait_for_views(client, funded["position"])
    signed_in(browser, keys["read"])
    for path in [
        "/explorer/",
        "/explorer/ledger",
        "/explorer/accounts/user:1",
        "/explorer/transfers/t:1",
    ]:
        assert "Sign out" in page(browser, path)
    assert f"key {keys['read'].split('_')[1]} (read)" in page(browser, "/explorer/")


def test_a_wrong_key_gets_a_clear_message_and_no_session(
    browser: Client, keys: dict[str, str]
) -> None:
    admin = keys["admin"]
    for wrong in [
        "nope",
        admin[:-1] + ("A" if admin[-1] != "A" else "B"),
        "lk_000000000000_x",
        HOSTILE_KEY,
    ]:
        answer = sign_in(browser, wrong)
        assert answer.status_code == 401
        assert html.escape(WRONG_KEY, quote=False) in answer.text
        assert browser.cookies.get(SESSION_COOKIE) in (None, "null")
        assert HOSTILE_KEY not in answer.text  # the key typed is never echoed
        assert browser.get("/explorer/", follow_redirects=False).status_code == 303
    empty = sign_in(browser, "   ")
    assert empty.status_code == 401
    assert "Enter an API key." in empty.text


def test_a_revoked_keys_session_stops_working_on_its_next_request(
    browser: Client, services: Services
) -> None:
    key = services.keys.create("read")
    signed_in(browser, key)
    assert "Sign out" in page(browser, "/explorer/")
    key_id = key.split("_")[1]
    assert services.keys.revoke(key_id)
    refused = browser.get("/explorer/", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/explorer/login?reason=revoked")
    notice = browser.get(refused.headers["location"])
    assert "no longer valid" in notice.text
    # The session itself is gone: a new key for the same person must sign in afresh.
    assert browser.get("/explorer/", follow_redirects=False).status_code == 303
    assert sign_in(browser, key).status_code == 401


def test_an_expired_keys_session_ends_and_it_cannot_sign_in_again(
    browser: Client, services: Services
) -> None:
    expires_at = datetime.now(tz=UTC) + timedelta(seconds=KEY_LIFETIME_SECONDS)
    key = services.keys.create("read", expires_at=expires_at)
    signed_in(browser, key)
    assert "Sign out" in page(browser, "/explorer/")
    time.sleep(max((expires_at - datetime.now(tz=UTC)).total_seconds(), 0) + 0.05)
    refused = browser.get("/explorer/", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/explorer/login?reason=expired")
    assert "has expired" in browser.get(refused.headers["location"]).text
    again = sign_in(browser, key)
    assert again.status_code == 401
    assert escape(EXPIRED_KEY) in again.text


def test_signing_in_never_keeps_the_session_id_the_browser_brought(
    browser: Client, keys: dict[str, str]
) -> None:
    planted = "0" * 64
    token = csrf_token(browser)
    browser.cookies.set(SESSION_COOKIE, planted, domain="testserver.local", path="/explorer")
    answer = browser.post(
        "/explorer/login",
        data={"key": keys["read"], "next": "/explorer/", "_csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    session_id = browser.cookies.get(SESSION_COOKIE, domain="testserver.local")
    assert session_id not in (None, "null", planted)
    assert "Sign out" in page(browser, "/explorer/")
    with TestClient(app=browser.app) as attacker:
        attacker.cookies.set(SESSION_COOKIE, planted, domain="testserver.local", path="/explorer")
        assert attacker.get("/explorer/", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(browser: Client, keys: dict[str, str]) -> None:
    signed_in(browser, keys["read"])
    session_id = browser.cookies.get(SESSION_COOKIE)
    assert session_id
    out = browser.post(
        "/explorer/logout", data={"_csrf_token": csrf_token(browser)}, follow_redirects=False
    )
    assert out.status_code == 303
    assert out.headers["location"] == "/explorer/login?reason=bye"
    assert browser.get("/explorer/", follow_redirects=False).status_code == 303
    # Replaying the old cookie does not bring the session back.
    browser.cookies.set(SESSION_COOKIE, session_id, path="/explorer")
    assert browser.get("/explorer/", follow_redirects=False).status_code == 303


def test_forms_without_the_csrf_token_are_refused_and_change_nothing(
    browser: Client, keys: dict[str, str]
) -> None:
    csrf_token(browser)  # the browser has the CSRF cookie, but the form lacks the token
    login = browser.post("/explorer/login", data={"key": keys["read"]}, follow_redirects=False)
    assert login.status_code == 403
    assert "form was refused" in login.text
    assert browser.get("/explorer/", follow_redirects=False).status_code == 303
    signed_in(browser, keys["read"])
    forged = browser.post(
        "/explorer/logout", data={"_csrf_token": "forged"}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert "Sign out" in page(browser, "/explorer/")  # still signed in


def test_cookies_are_httponly_strict_and_secure_when_served_over_tls(
    app: Litestar, keys: dict[str, str]
) -> None:
    with TestClient(app=app) as plain:
        cookies = sign_in(plain, keys["read"]).headers.get_list("set-cookie")
        session = next(cookie for cookie in cookies if cookie.startswith(SESSION_COOKIE))
        assert "HttpOnly" in session
        assert "SameSite=strict" in session
        assert "Path=/explorer" in session
        assert "Secure" not in session
    with TestClient(app=app, base_url="https://testserver.local") as tls:
        form = tls.get("/explorer/login")
        csrf = next(c for c in form.headers.get_list("set-cookie") if c.startswith(CSRF_COOKIE))
        assert "Secure" in csrf
        assert "HttpOnly" in csrf
        cookies = sign_in(tls, keys["read"]).headers.get_list("set-cookie")
        session = next(cookie for cookie in cookies if cookie.startswith(SESSION_COOKIE))
        assert session.endswith("; Secure") or "; Secure;" in session
        assert "HttpOnly" in session
        assert "SameSite=strict" in session


def test_every_page_forbids_inline_scripts_and_framing(
    browser: Client, keys: dict[str, str]
) -> None:
    login = browser.get("/explorer/login")
    signed_in(browser, keys["read"])
    for answer in [
        login,
        browser.get("/explorer/"),
        browser.get("/explorer/ledger"),
        browser.get("/explorer/accounts/missing"),
        browser.get("/explorer/static/explorer.css"),
    ]:
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in answer.text


# Escaping ------------------------------------------------------------------------------


def test_hostile_metadata_ids_and_search_text_are_shown_as_text(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    hostile = {HOSTILE_KEY: HOSTILE_VALUE, "note": "<b>bold</b>"}
    open_account(client, "user:x", metadata=hostile)
    written = record(client, "t:x", ISSUER, "user:x", 5, metadata=hostile)
    wait_for_views(client, written["position"])
    signed_in(browser, keys["read"])
    pages = [
        page(browser, "/explorer/accounts/user:x"),
        page(browser, "/explorer/transfers/t:x"),
        page(browser, "/explorer/", prefix="user:"),
        page(browser, "/explorer/", prefix=HOSTILE_VALUE, meta_key=HOSTILE_KEY, meta_value="<i>"),
        browser.get("/explorer/accounts/" + HOSTILE_VALUE).text,
        browser.get("/explorer/accounts/user:x", params={"as_of": HOSTILE_KEY}).text,
    ]
    for text in pages:
        assert "<script" not in text
        assert "<img" not in text
        assert "<b>" not in text
        assert "<i>" not in text
    for text in pages[:3]:
        assert escape(HOSTILE_KEY) in text
        assert escape(HOSTILE_VALUE) in text
    assert escape(HOSTILE_VALUE) in pages[3]  # the search box shows what was typed
    assert escape(HOSTILE_VALUE) in pages[4]  # the missing id, as text


# What the pages show -------------------------------------------------------------------


def test_search_finds_accounts_by_prefix_unit_status_and_metadata(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1", metadata={"plan": "pro"})
    open_account(client, "user:2", metadata={"plan": "free"})
    open_account(client, "user:3", unit="USD")
    open_account(client, "shop:1")
    closed = ok(client.post("/v1/accounts/user:2/close"))
    wait_for_views(client, closed["position"])
    signed_in(browser, keys["read"])

    def found(**params: str) -> list[str]:
        text = page(browser, "/explorer/", **params)
        return re.findall(r'<a class="id" href="/explorer/accounts/[^"]+">([^<]+)</a>', text)

    assert found(prefix="user:") == ["user:1", "user:2", "user:3"]
    assert found(prefix="user:", unit="USD") == ["user:3"]
    assert found(prefix="user:", status="closed") == ["user:2"]
    assert found(prefix="user:", status="open") == ["user:1", "user:3"]
    assert found(meta_key="plan", meta_value="pro") == ["user:1"]
    assert found(unit="CREDITS") == ["shop:1", ISSUER, "user:1", "user:2"]
    assert found(prefix="nobody") == []
    assert "Find an account" in page(browser, "/explorer/")


def test_the_account_page_shows_every_figure_as_of_the_picked_instant(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    fund(client, "user:1", 100, "t:1")
    # A whole second after the funding, so the picker's own format (to the second) can
    # name it exactly.
    time.sleep(1.01 - datetime.now(tz=UTC).microsecond / 1_000_000)
    between = datetime.now(tz=UTC).replace(microsecond=0)
    record(client, "t:hold", "user:1", ISSUER, 30, pending=True, timeout_seconds=3600)
    last = record(client, "t:2", "user:1", ISSUER, 25)
    wait_for_views(client, last["position"])
    signed_in(browser, keys["read"])

    now_page = page(browser, "/explorer/accounts/user:1")
    api_now = account(client, "user:1")
    assert figure(now_page, "balance") == api_now["balance"] == 75
    assert figure(now_page, "available") == api_now["available"] == 45
    assert "t:hold" in now_page.split('id="holds"')[1]  # the open hold is listed

    then_page = page(browser, "/explorer/accounts/user:1", as_of=rfc3339(between))
    api_then = account(client, "user:1", as_of=rfc3339(between))
    assert figure(then_page, "balance") == api_then["balance"] == 100
    assert figure(then_page, "available") == api_then["available"] == 100
    assert "No open holds." in then_page  # the hold came later
    assert 'id="holds-incomplete"' not in now_page
    statement = then_page.split('id="statement"')[1]
    assert "t:1" in statement
    assert "t:2" not in statement  # lines after the instant are not in its statement
    # The picker's own format (no zone, to the second) reads as UTC.
    picked = page(browser, "/explorer/accounts/user:1", as_of=picker_value(between))
    assert figure(picked, "balance") == api_then["balance"]
    future = page(browser, "/explorer/accounts/user:1", as_of="2999-01-01T00:00")
    assert "in the future" in future
    assert figure(future, "balance") == 75
    before_opening = browser.get("/explorer/accounts/user:1", params={"as_of": "2001-01-01T00:00"})
    assert before_opening.status_code == 404


def test_the_chart_has_a_point_per_whole_interval_then_the_instant(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    last = fund(client, "user:1", 42, "t:1")
    wait_for_views(client, last["position"])
    signed_in(browser, keys["read"])
    text = page(browser, "/explorer/accounts/user:1")
    svg = re.search(r'<svg id="balance-chart".*?</svg>', text, re.DOTALL)
    assert svg is not None
    chart = svg.group(0)
    interval = re.search(r'data-interval="([^"]+)"', chart)
    since = re.search(r'data-since="([^"]+)"', chart)
    until = re.search(r'data-until="([^"]+)"', chart)
    assert interval is not None
    assert since is not None
    assert until is not None
    window = HistoryWindow(interval.group(1), utc(since.group(1)), utc(until.group(1)))  # type: ignore[arg-type]
    buckets = re.findall(
        r'class="point bucket"[^>]*data-end="([^"]+)" data-balance="(-?\d+)"', chart
    )
    assert [utc(end) for end, _ in buckets] == window.bucket_ends()
    for end, balance in buckets:
        just_before = utc(end) - timedelta(microseconds=1)
        assert account(client, "user:1", as_of=rfc3339(just_before))["balance"] == int(balance)
    instant = re.findall(r'class="point instant"[^>]*data-balance="(-?\d+)"', chart)
    assert instant == ["42"]  # the figure shown now
    # The API's history up to the instant: the same buckets, then the one running now.
    shown_at = re.search(r'data-instant="([^"]+)"', chart)
    assert shown_at is not None
    history = ok(
        client.get(
            "/v1/accounts/user:1/history",
            params={
                "interval": interval.group(1),
                "since": since.group(1),
                "until": shown_at.group(1),
            },
        )
    )["items"]
    balances = re.findall(r'class="point (?:bucket|instant)"[^>]*data-balance="(-?\d+)"', chart)
    assert [int(balance) for balance in balances] == [item["balance"] for item in history]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_statement_paginates_newest_first_and_links_each_transfer(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    lines = STATEMENT_PAGE_SIZE + 5
    batch = ok(
        client.post(
            "/v1/transfers/batch",
            json={
                "atomic": True,
                "transfers": [
                    {
                        "id": f"t:{n:03d}",
                        "debit_account_id": ISSUER,
                        "credit_account_id": "user:1",
                        "amount": n + 1,
                    }
                    for n in range(lines)
                ],
            },
        )
    )
    wait_for_views(client, batch["results"][-1]["transfer"]["position"])
    signed_in(browser, keys["read"])
    first = page(browser, "/explorer/accounts/user:1")
    linked = re.findall(r'class="id transfer-link" href="/explorer/transfers/([^"]+)"', first)
    assert len(linked) == STATEMENT_PAGE_SIZE
    assert linked[0] == f"t%3A{lines - 1:03d}"
    older = re.search(r'href="([^"]+)" id="older-lines"', first)
    assert older is not None
    second = page(browser, html.unescape(older.group(1)))
    rest = re.findall(r'class="id transfer-link" href="/explorer/transfers/([^"]+)"', second)
    assert rest == [f"t%3A{n:03d}" for n in reversed(range(5))]
    assert 'id="older-lines"' not in second
    balances = [
        int(b) for b in re.findall(r'class="num balance-after" data-value="(-?\d+)"', first)
    ]
    assert balances[0] == sum(range(1, lines + 1))  # the running balance after the newest line


def test_the_transfer_page_shows_both_sides_its_history_and_reversals_both_ways(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    open_account(client, "shop:1")
    fund(client, "user:1", 100, "t:fund")
    record(
        client,
        "t:hold",
        "user:1",
        "shop:1",
        60,
        pending=True,
        timeout_seconds=600,
        metadata={"order": "o-1"},
    )
    ok(client.post("/v1/transfers/t:hold/post", json={"amount": 40}))
    reversed_ = ok(client.post("/v1/transfers/t:hold/reverse", json={"id": "t:refund"}), 201)
    wait_for_views(client, reversed_["position"])
    signed_in(browser, keys["read"])

    hold = page(browser, "/explorer/transfers/t:hold")
    history = hold.split('id="status-history"')[1].split("</ol>")[0]
    assert re.findall(r"<strong>(\w+)</strong>", history) == ["pending", "posted", "reversed"]
    assert 'id="reversed-by" href="/explorer/transfers/t%3Arefund"' in hold
    assert "/explorer/accounts/user%3A1" in hold
    assert "/explorer/accounts/shop%3A1" in hold
    assert "o-1" in hold
    assert f"at log position {transfer_position(client, 't:hold')}" in hold

    refund = page(browser, "/explorer/transfers/t:refund")
    assert 'id="reversal-of" href="/explorer/transfers/t%3Ahold"' in refund
    assert 'id="transfer-status">posted<' in refund
    missing = browser.get("/explorer/transfers/t:nope")
    assert missing.status_code == 404
    assert "No such transfer" in missing.text


def transfer_position(client: Client, transfer_id: str) -> int:
    return int(ok(client.get(f"/v1/transfers/{transfer_id}"))["position"])


def test_the_ledger_page_checks_the_books_and_shows_lag_recent_transfers_and_the_last_audit(
    browser: Client, client: Client, keys: dict[str, str], services: Services
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    last = fund(client, "user:1", 7, "t:1")
    wait_for_views(client, last["position"])
    signed_in(browser, keys["read"])
    text = page(browser, "/explorer/ledger")
    totals = text.split('id="totals"')[1].split("</table>")[0]
    assert "CREDITS" in totals
    assert "✓ zero" in totals
    assert "/explorer/transfers/t%3A1" in text.split('id="recent"')[1]
    assert "No audit has been run yet" in text
    assert f"of {last['position']}" in text.split('id="lag"')[1]

    LastAuditFile(services.settings.last_audit_path).save(
        {
            "ok": False,
            "instant": "the head",
            "events": 9,
            "accounts": 2,
            "transfers": 1,
            "unit_sums": {},
            "unit_sums_at_instant": {},
            "projections_checked": True,
            "violation_count": 1,
            "violations": [
                {"kind": "forged", "subject": HOSTILE_KEY, "detail": "x", "position": 3}
            ],
        },
        datetime.now(tz=UTC) - timedelta(minutes=5),
    )
    audited = page(browser, "/explorer/ledger")
    assert "✗ 1 violation" in audited
    assert escape(HOSTILE_KEY) in audited
    assert "<script" not in audited


def test_lots_show_what_a_balance_is_made_of_now_and_as_of_and_which_lots_each_spend_took(
    browser: Client, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, "user:1")
    open_account(client, "shop:1")
    fund(client, "user:1", 30, "t:paid")
    time.sleep(1.01 - datetime.now(tz=UTC).microsecond / 1_000_000)
    before_grant = datetime.now(tz=UTC).replace(microsecond=0)
    expires = rfc3339(datetime.now(tz=UTC) + timedelta(days=30))
    record(
        client,
        "grant:promo",
        ISSUER,
        "user:1",
        20,
        grant={"priority": 10, "category": "promotional", "expires_at": expires},
    )
    spent = record(client, "t:spend", "user:1", "shop:1", 15)
    wait_for_views(client, spent["position"])
    signed_in(browser, keys["read"])

    now = page(browser, "/explorer/accounts/user:1")
    lots = now.split('id="lots"')[1].split("</table>")[0]
    assert "grant%3Apromo" in lots
    # Priority 10, granted 20, 5 left after the spend, nothing on hold.
    assert re.findall(r'<td class="num">([\d,]+)</td>', lots)[:4] == ["10", "20", "5", "0"]
    assert 'id="general-lot">General lot (credit that came without a grant): <strong>30<' in now
    statement = now.split('id="statement"')[1]
    spend_row = statement.split('transfer-link" href="/explorer/transfers/t%3Aspend"')[1]
    spend_row = spend_row.split("</tr>")[0]
    assert "grant:promo</a> -15" in spend_row  # the promotional lot goes first
    assert "general" not in spend_row
    grant_row = statement.split('transfer-link" href="/explorer/transfers/grant%3Apromo"')[1]
    assert "new lot +20" in grant_row.split("</tr>")[0]

    then = page(browser, "/explorer/accounts/user:1", as_of=rfc3339(before_grant))
    assert "No grant lots at this time." in then
    assert 'id="general-lot">General lot (credit that came without a grant): <strong>30<' in then

    spend = page(browser, "/explorer/transfers/t:spend")
    rows = spend.split('id="allocations"')[1].split("</table>")[0]
    lots_taken = re.findall(r"<td>(.*?)</td>\s*<td class=\"num\">([\d,]+)</td>", rows, re.DOTALL)
    assert [(re.sub(r"<[^>]+>", "", lot).strip(), amount) for lot, amount in lots_taken] == [
        ("grant:promo", "15")
    ]
    # The rest of the promotional lot and then the general lot pay for a second spend.
    second = record(client, "t:spend2", "user:1", "shop:1", 10)
    wait_for_views(client, second["position"])
    after = page(browser, "/explorer/accounts/user:1")
    assert "No grant lots." in after  # the promotional lot is used up
    assert 'id="general-lot">General lot (credit that came without a grant): <strong>25<' in after
    spend2 = page(browser, "/explorer/transfers/t:spend2").split('id="allocations"')[1]
    assert re.findall(r'<td class="num">([\d,]+)</td>', spend2.split("</table>")[0]) == ["5", "5"]
    grant = page(browser, "/explorer/transfers/grant:promo")
    terms = grant.split('id="grant-terms"')[1].split("</dl>")[0]
    assert "promotional" in terms
    assert "<dd>10</dd>" in terms
