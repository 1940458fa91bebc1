"""The explorer in a real headless Chromium against a real `ledger serve` process: a
support person signs in with a read key, finds an account, moves the time picker, reads
the chart and the statement, opens a transfer and signs out. Hostile metadata stays
text; a revoked key's session ends; wrong keys are told so. Screenshots of every step
go to test-artifacts/explorer/ (ignored by git)."""

import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.explorer.pages import picker_value
from app.persistence.keys import VERIFIED_KEY_TTL_SECONDS
from tests.e2e.test_serve import (
    ISSUER,
    START_TIMEOUT_SECONDS,
    Server,
    admin_key_of,
    environment,
    last_line,
    ledger_command,
    run_ledger,
    serving,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts" / "explorer"
# Set to a path (e.g. docs/explorer.png) to also save the README's screenshot there.
DOCS_SCREENSHOT_ENV: Final = "LEDGER_EXPLORER_SCREENSHOT"
DESKTOP: Final = {"width": 1280, "height": 900}
PHONE: Final = {"width": 390, "height": 844}
HOSTILE_KEY: Final = "<script>window.__pwned = 1</script>"
HOSTILE_VALUE: Final = '"><img src=x onerror="window.__pwned = 2">'
UI_TIMEOUT_MS: Final = 15_000
REVOCATION_WAIT_SECONDS: Final = VERIFIED_KEY_TTL_SECONDS + 10


class Ledger:
    """The served ledger, its keys and an API client with the admin key."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.admin = admin_key_of(server)
        self.api = server.client(self.admin)
        self.read_key = self.create_key("read")

    def create_key(self, scope: str) -> str:
        created = run_ledger(self.server.data_dir, "keys", "create", "--scope", scope)
        assert created.returncode == 0, created.stderr
        return last_line(created.stdout)

    def post(self, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        answer = self.api.post(path, json=body)
        assert answer.status_code == status, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        answer = self.api.get(path, params=params)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    with serving(tmp_path_factory.mktemp("explorer") / "data") as server:
        served = Ledger(server)
        yield served
        served.api.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def new_page(browser: Browser, ledger: Ledger, viewport: dict[str, int] = DESKTOP) -> Page:
    context = browser.new_context(base_url=ledger.server.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: {dialog.message}"))
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto("/explorer/login")
    page.fill("#key", key)
    page.click("#sign-in")


def figure(page: Page, name: str) -> int:
    value = page.get_attribute(f"#figure-{name}", "data-value")
    assert value is not None
    return int(value)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_until_healthy(url: str, process: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ledger serve exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("ledger serve did not become healthy")


def next_whole_second() -> datetime:
    """Sleep into the next second and return its start (the picker names whole seconds)."""
    time.sleep(1.01 - datetime.now(tz=UTC).microsecond / 1_000_000)
    return datetime.now(tz=UTC).replace(microsecond=0)


def test_a_support_person_follows_a_balance_through_time_and_signs_out(
    ledger: Ledger, browser: Browser
) -> None:
    ledger.post("/v1/accounts", {"id": ISSUER, "unit": "CREDITS", "allow_negative": True})
    ledger.post(
        "/v1/accounts", {"id": "user:alice", "unit": "CREDITS", "metadata": {"plan": "pro"}}
    )
    ledger.post("/v1/accounts", {"id": "shop:books", "unit": "CREDITS"})
    transfer = {"debit_account_id": ISSUER, "credit_account_id": "user:alice"}
    ledger.post("/v1/transfers", {"id": "grant:1", **transfer, "amount": 500})
    picked = next_whole_second()
    spend = {"debit_account_id": "user:alice", "credit_account_id": "shop:books"}
    ledger.post(
        "/v1/transfers", {"id": "order:1", **spend, "amount": 120, "metadata": {"order": "o-1"}}
    )
    ledger.post(
        "/v1/transfers",
        {"id": "order:2", **spend, "amount": 80, "pending": True, "timeout_seconds": 3600},
    )
    ledger.post("/v1/transfers/order:2/post", {"amount": 60}, status=200)
    ledger.post("/v1/transfers/order:1/reverse", {"id": "refund:1"})
    promo = {"priority": 10, "category": "promotional"}
    last = ledger.post("/v1/transfers", {"id": "promo:1", **transfer, "amount": 50, "grant": promo})
    ledger.get("/v1/accounts/user:alice/entries", min_position=last["position"])  # views
    audit = run_ledger(ledger.server.data_dir, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr

    page = new_page(browser, ledger)
    page.goto("/explorer/accounts/user:alice")
    expect(page).to_have_url(re.compile(r"/explorer/login\?reason=signed_out"))
    shot(page, "01-sign-in")
    page.fill("#key", ledger.read_key)
    page.click("#sign-in")
    expect(page).to_have_url(re.compile(r"/explorer/accounts/user(:|%3A)alice$"))

    page.goto("/explorer/")
    page.fill("#prefix", "user:al")
    page.click("#search-button")
    expect(page.locator("#accounts a.id")).to_have_text(["user:alice"])
    shot(page, "02-search")
    page.click("#accounts a.id")
    expect(page.locator("#account-id")).to_have_text("user:alice")
    now = ledger.get("/v1/accounts/user:alice")
    assert figure(page, "balance") == now["balance"] == 500 - 60 + 50
    assert figure(page, "available") == now["available"]
    expect(page.locator("#lots a.id")).to_have_text(["promo:1"])
    expect(page.locator("#general-lot")).to_contain_text("440")
    shot(page, "03-account-now")
    docs_path = os.environ.get(DOCS_SCREENSHOT_ENV)
    if docs_path:
        page.screenshot(path=docs_path, full_page=True)

    # The chart: a point per bucket of the API's balance history up to now (whole
    # intervals, then the one running now), each at the API's balance.
    chart = page.locator("#balance-chart")
    interval, since = chart.get_attribute("data-interval"), chart.get_attribute("data-since")
    instant = chart.get_attribute("data-instant")
    assert interval in ("hour", "day", "month")
    assert since is not None
    assert instant is not None
    history = ledger.get(
        "/v1/accounts/user:alice/history", interval=interval, since=since, until=instant
    )["items"]
    points = page.locator("#balance-chart circle.point")
    expect(points).to_have_count(len(history))
    assert len(history) >= 1
    for index, bucket in enumerate(history):
        point = points.nth(index)
        assert int(point.get_attribute("data-balance") or "") == bucket["balance"]
        if index < len(history) - 1:  # whole intervals end where the API says
            assert utc(point.get_attribute("data-end") or "") == utc(bucket["end"])
    expect(page.locator("#balance-chart circle.point.instant")).to_have_attribute(
        "data-balance", str(now["balance"])
    )

    # The time picker: every figure as of the instant picked equals the API's answer.
    page.fill("#as_of", picker_value(picked))
    page.click("#show-as-of")
    expect(page.locator("#as-of-label")).to_contain_text("As of")
    then = ledger.get("/v1/accounts/user:alice", as_of=picked.isoformat())
    assert figure(page, "balance") == then["balance"] == 500
    assert figure(page, "available") == then["available"] == 500
    expect(page.locator("#statement a.transfer-link")).to_have_text(["grant:1"])
    shot(page, "04-account-as-of")
    expect(page.locator("#lots")).to_have_count(0)  # no grant yet at that time
    page.click("#show-now")
    expect(page.locator("#statement a.transfer-link").first).to_have_text("promo:1")

    # From the statement to a transfer: both sides, status history, reversal links.
    page.locator("#statement a.transfer-link", has_text="order:1").first.click()
    expect(page.locator("#transfer-id")).to_have_text("order:1")
    expect(page.locator("#reversed-by")).to_have_text("refund:1")
    shot(page, "05-transfer")
    page.click("#reversed-by")
    expect(page.locator("#reversal-of")).to_have_text("order:1")
    page.goto("/explorer/transfers/order:2")
    expect(page.locator("#status-history li strong")).to_have_text(["pending", "posted"])

    page.goto("/explorer/ledger")
    expect(page.locator("#totals")).to_contain_text("✓ zero")
    expect(page.locator("#audit-result")).to_contain_text("passed")
    shot(page, "06-ledger")

    page.click("#sign-out")
    expect(page.locator("#notice")).to_have_text("You are signed out.")
    page.goto("/explorer/accounts/user:alice")
    expect(page).to_have_url(re.compile(r"/explorer/login"))
    page.context.close()


def test_every_page_fits_a_phone_screen(ledger: Ledger, browser: Browser) -> None:
    ledger.post("/v1/accounts", {"id": "phone:issuer", "unit": "PHONE", "allow_negative": True})
    ledger.post(
        "/v1/accounts", {"id": "user:phone", "unit": "PHONE", "metadata": {"long": "x" * 300}}
    )
    moved = ledger.post(
        "/v1/transfers",
        {
            "id": "phone:t:" + "9" * 100,
            "debit_account_id": "phone:issuer",
            "credit_account_id": "user:phone",
            "amount": 123_456_789,
            "metadata": {"why": "a long reason " * 20},
        },
    )
    ledger.get("/v1/accounts/user:phone/entries", min_position=moved["position"])  # views
    page = new_page(browser, ledger, PHONE)
    sign_in(page, ledger.read_key)
    for name, path in [
        ("search", "/explorer/?prefix=user:"),
        ("account", "/explorer/accounts/user:phone"),
        ("transfer", f"/explorer/transfers/{moved['id']}"),
        ("ledger", "/explorer/ledger"),
    ]:
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
        shot(page, f"07-phone-{name}")
    page.context.close()


def test_hostile_metadata_and_typed_text_are_shown_as_text(
    ledger: Ledger, browser: Browser
) -> None:
    hostile = {HOSTILE_KEY: HOSTILE_VALUE}
    ledger.post("/v1/accounts", {"id": "user:mallory", "unit": "CREDITS", "metadata": hostile})
    ledger.post("/v1/accounts", {"id": "user:mallory2", "unit": "CREDITS", "allow_negative": True})
    done = ledger.post(
        "/v1/transfers",
        {
            "id": "t:mallory",
            "debit_account_id": "user:mallory2",
            "credit_account_id": "user:mallory",
            "amount": 1,
            "metadata": hostile,
        },
    )
    ledger.get("/v1/accounts/user:mallory/entries", min_position=done["position"])  # views
    page = new_page(browser, ledger)
    sign_in(page, ledger.read_key)
    for path in [
        "/explorer/accounts/user:mallory",
        "/explorer/transfers/t:mallory",
        "/explorer/?prefix=user:mallory",
    ]:
        page.goto(path)
        shown = page.locator("main").inner_text()
        assert HOSTILE_KEY in shown, path
        assert HOSTILE_VALUE in shown, path
        assert page.locator("main img").count() == 0
        assert page.evaluate("window.__pwned === undefined")
    page.goto(
        "/explorer/?"
        + httpx.QueryParams({"prefix": HOSTILE_VALUE, "meta_key": HOSTILE_KEY}).__str__()
    )
    assert page.input_value("#prefix") == HOSTILE_VALUE
    assert page.input_value("#meta_key") == HOSTILE_KEY
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__pwned === undefined")
    shot(page, "08-hostile-text")
    page.context.close()


def test_sessions_wrong_keys_are_told_and_a_revoked_keys_session_ends(
    ledger: Ledger, browser: Browser
) -> None:
    page = new_page(browser, ledger)
    sign_in(page, "lk_000000000000_not-a-key")
    expect(page.locator("#problem")).to_contain_text("That key was not accepted")
    shot(page, "09-wrong-key")
    doomed = ledger.create_key("read")
    sign_in(page, doomed)
    expect(page.locator("#sign-out")).to_be_visible()
    revoked = run_ledger(ledger.server.data_dir, "keys", "revoke", doomed.split("_")[1])
    assert revoked.returncode == 0, revoked.stderr
    # Another process revoked it: the server notices within its key cache period.
    deadline = time.monotonic() + REVOCATION_WAIT_SECONDS
    while time.monotonic() < deadline:
        page.goto("/explorer/ledger")
        if "/explorer/login" in page.url:
            break
        time.sleep(0.5)
    expect(page).to_have_url(re.compile(r"/explorer/login\?reason=revoked"))
    expect(page.locator("#notice")).to_contain_text("no longer valid")
    shot(page, "10-revoked")
    page.goto("/explorer/ledger")
    expect(page).to_have_url(re.compile(r"/explorer/login"))
    page.context.close()


def test_a_session_holds_across_api_processes_sharing_a_data_directory(tmp_path: Path) -> None:
    """Two API processes on one data directory (as behind a load balancer): signed in at
    one, the session works at the other, and signing out at either ends it at both."""
    data_dir = tmp_path / "data"
    created = run_ledger(data_dir, "keys", "create", "--scope", "read")
    assert created.returncode == 0, created.stderr
    key = last_line(created.stdout)
    processes, urls = [], []
    try:
        for index in range(2):
            port = free_port()
            urls.append(f"http://127.0.0.1:{port}")
            with (tmp_path / f"serve-{index}.err").open("w") as errors:
                processes.append(
                    subprocess.Popen(
                        [*ledger_command(), "serve", "--no-projections", "--port", str(port)],
                        env=environment(data_dir),
                        stdout=subprocess.DEVNULL,
                        stderr=errors,
                    )
                )
        for url, process in zip(urls, processes, strict=True):
            wait_until_healthy(url, process)
        cookies = httpx.Cookies()
        first, second = (httpx.Client(base_url=url, cookies=cookies, timeout=30) for url in urls)
        with first, second:
            form = first.get("/explorer/login")
            token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
            assert token is not None
            second.cookies = first.cookies
            # The CSRF token made by one process is accepted by the other.
            signed = second.post(
                "/explorer/login", data={"key": key, "_csrf_token": token.group(1)}
            )
            assert signed.status_code == 303, signed.text
            first.cookies = second.cookies
            answer = first.get("/explorer/ledger")
            assert answer.status_code == 200, answer.status_code
            assert "Sign out" in answer.text
            out = first.post("/explorer/logout", data={"_csrf_token": token.group(1)})
            assert out.status_code == 303
            second.cookies = first.cookies
            assert second.get("/explorer/ledger").status_code == 303
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
