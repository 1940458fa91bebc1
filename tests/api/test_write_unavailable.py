"""The write path's answers under load over HTTP: 503 problems with stable codes and a
Retry-After header; nothing written for write_timeout and overloaded."""

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from app.api.services import Services
from app.application.commands import RecordTransfer
from tests.api.helpers import (
    ISSUER,
    Client,
    assert_problem,
    open_account,
    open_issuer,
    transfer_body,
)
from tests.support.hung_store import HungStore

WAIT_SECONDS: Final = 30.0


def test_a_write_whose_outcome_is_unknown_is_503_with_retry_after_and_safe_to_resend(
    client: Client, services: Services
) -> None:
    open_issuer(client)
    open_account(client, "alice")
    services.ledger.committer.timeout_seconds = 0.3
    hung = HungStore(services.ledger)
    with hung.hanging():
        response = client.post("/v1/transfers", json=transfer_body("t1", ISSUER, "alice", 5))
        assert_problem(response, 503, "outcome_unknown")
        assert int(response.headers["Retry-After"]) >= 1
    services.ledger.committer.timeout_seconds = WAIT_SECONDS
    again = client.post("/v1/transfers", json=transfer_body("t1", ISSUER, "alice", 5))
    assert again.status_code in (200, 201)
    assert again.json()["amount"] == 5


def test_a_full_write_queue_is_503_overloaded_and_writes_nothing(
    client: Client, services: Services
) -> None:
    open_issuer(client)
    open_account(client, "alice")
    ledger = services.ledger
    ledger.committer.queue_units_max = 1
    hung = HungStore(ledger)
    with ThreadPoolExecutor(max_workers=2) as pool, hung.hanging():
        taken = pool.submit(ledger.record_transfer, RecordTransfer("taken", ISSUER, "alice", 1))
        hung.wait_until_entered()
        queued = pool.submit(ledger.record_transfer, RecordTransfer("queued", ISSUER, "alice", 1))
        deadline = time.monotonic() + WAIT_SECONDS
        while ledger.committer.queued_units < 1:
            assert time.monotonic() < deadline, "the second write never queued"
            time.sleep(0.001)
        response = client.post("/v1/transfers", json=transfer_body("refused", ISSUER, "alice", 1))
        assert_problem(response, 503, "overloaded")
        assert int(response.headers["Retry-After"]) >= 1
        hung.release()
        assert taken.result(WAIT_SECONDS).created
        assert queued.result(WAIT_SECONDS).created
    assert_problem(client.get("/v1/transfers/refused"), 404, "transfer_not_found")
