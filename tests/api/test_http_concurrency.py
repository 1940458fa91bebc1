"""Concurrency over HTTP, in process: 16 client threads, each with its own test client
(its own event loops) on one app, race to spend one account's credits and to record one
transfer id. The floor holds, every credit moves once, the books balance, and nothing
answers 5xx. (tests/e2e/test_serve.py runs the same race against a real server.)"""

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.settings import Settings
from tests.api.helpers import (
    ISSUER,
    Client,
    account,
    fund,
    open_account,
    open_issuer,
    transfer_body,
)

THREADS: Final = 16
CREDITS: Final = 40
ATTEMPTS_PER_THREAD: Final = 5  # 80 attempts for 40 credits
SOURCE: Final = "user:hot"
SINK: Final = "merchant:sink"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, read_wait_seconds=30.0, log_format="console")


Outcome = tuple[int, str | None, int | None]  # status, problem code, position


def race(app: Litestar, key: str, attempt: Callable[[Client, int, int], Outcome]) -> list[Outcome]:
    """Run ``attempt(client, thread, n)`` ATTEMPTS_PER_THREAD times on THREADS threads that
    start together, each with its own client."""
    start = threading.Barrier(THREADS)
    outcomes: list[Outcome] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(thread: int) -> None:
        try:
            # Not entered: the app's lifespan belongs to the fixture's client; each request
            # of this one runs on a portal (an event loop thread) of its own.
            client = TestClient(app=app, timeout=60)
            client.headers["Authorization"] = f"Bearer {key}"
            start.wait(timeout=60)
            mine = [attempt(client, thread, n) for n in range(ATTEMPTS_PER_THREAD)]
            with lock:
                outcomes.extend(mine)
        except BaseException as error:  # noqa: BLE001  # reported below, in the test thread
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    assert not failures, failures
    return outcomes


def spend_one(client: Client, thread: int, n: int) -> Outcome:
    response = client.post(
        "/v1/transfers", json=transfer_body(f"spend:{thread}:{n}", SOURCE, SINK, 1)
    )
    body = response.json()
    if response.status_code < 300:
        return response.status_code, None, int(body["position"])
    return response.status_code, body.get("code"), None


def test_16_threads_spend_exactly_the_affordable_credits(
    app: Litestar, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, SOURCE)
    open_account(client, SINK)
    funding = fund(client, SOURCE, CREDITS)

    outcomes = race(app, keys["write"], spend_one)

    statuses = Counter(status for status, _, _ in outcomes)
    assert len(outcomes) == THREADS * ATTEMPTS_PER_THREAD
    assert not [o for o in outcomes if o[0] >= 500], outcomes
    assert statuses[201] == CREDITS, statuses
    refusals = [o for o in outcomes if o[0] != 201]
    assert len(refusals) == THREADS * ATTEMPTS_PER_THREAD - CREDITS
    assert {(status, code) for status, code, _ in refusals} == {(422, "insufficient_funds")}

    last = max([funding["position"], *(p for _, _, p in outcomes if p is not None)])
    balances = {
        name: account(client, name, min_position=last)["balance"] for name in (ISSUER, SOURCE, SINK)
    }
    assert balances == {ISSUER: -CREDITS, SOURCE: 0, SINK: CREDITS}
    assert sum(balances.values()) == 0
    assert account(client, SOURCE, min_position=last)["available"] == 0
    # Statements come from the views: wait for them (account reads come from the stream).
    page = client.get(
        f"/v1/accounts/{SOURCE}/entries", params={"limit": 1000, "min_position": last}
    ).json()
    debits = [e for e in page["items"] if e["kind"] == "Debited"]
    assert len(debits) == CREDITS
    assert len({e["transfer_id"] for e in debits}) == CREDITS


def test_16_threads_recording_one_transfer_id_move_money_once(
    app: Litestar, client: Client, keys: dict[str, str]
) -> None:
    open_issuer(client)
    open_account(client, SOURCE)
    open_account(client, SINK)
    funding = fund(client, SOURCE, 10)
    bodies: list[bytes] = []
    lock = threading.Lock()

    def same_id(client: Client, thread: int, n: int) -> Outcome:
        response = client.post("/v1/transfers", json=transfer_body("once", SOURCE, SINK, 3))
        if response.status_code < 300:
            with lock:
                bodies.append(response.content)
            return response.status_code, None, int(response.json()["position"])
        return response.status_code, response.json().get("code"), None

    outcomes = race(app, keys["write"], same_id)

    statuses = Counter(status for status, _, _ in outcomes)
    assert statuses == {201: 1, 200: THREADS * ATTEMPTS_PER_THREAD - 1}, outcomes
    assert len(set(bodies)) == 1
    last = max(funding["position"], *(p for _, _, p in outcomes if p is not None))
    assert account(client, SOURCE, min_position=last)["balance"] == 7
    assert account(client, SINK, min_position=last)["balance"] == 3
