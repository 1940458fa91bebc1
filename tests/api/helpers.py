"""Small helpers shared by the API tests: requests with intent-revealing names and the
one assertion every error answer must pass (an RFC 9457 problem with a stable code)."""

from datetime import UTC, datetime
from typing import Any, Final

import httpx
from litestar import Litestar
from litestar.testing import TestClient

Client = TestClient[Litestar]
Json = dict[str, Any]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
ISSUER: Final = "system:issuance"
UNIT: Final = "CREDITS"
AMOUNT_MAX: Final = 2**63 - 1


def assert_problem(response: httpx.Response, status: int, code: str) -> Json:
    """The response is a problem document with this status and code; returns its body."""
    assert response.status_code == status, (response.status_code, response.text)
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type == PROBLEM_MEDIA_TYPE, response.headers["content-type"]
    body: Json = response.json()
    for field in ("type", "title", "status", "detail", "code"):
        assert field in body, (field, body)
    assert body["status"] == status, body
    assert body["code"] == code, body
    for field in ("type", "title", "detail"):
        assert isinstance(body[field], str), body
        assert body[field], body
    # Nothing internal leaks into an answer.
    assert "Traceback" not in response.text
    return body


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: Json = response.json()
    return body


def open_account(client: Client, account_id: str, unit: str = UNIT, **fields: Any) -> Json:
    return ok(client.post("/v1/accounts", json={"id": account_id, "unit": unit, **fields}), 201)


def open_issuer(client: Client, unit: str = UNIT) -> Json:
    return open_account(client, ISSUER, unit, allow_negative=True)


def transfer_body(transfer_id: str, debit: str, credit: str, amount: int, **fields: Any) -> Json:
    return {
        "id": transfer_id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        **fields,
    }


def send_transfer(
    client: Client, transfer_id: str, debit: str, credit: str, amount: Any, **fields: Any
) -> httpx.Response:
    return client.post(
        "/v1/transfers", json=transfer_body(transfer_id, debit, credit, amount, **fields)
    )


def record(
    client: Client, transfer_id: str, debit: str, credit: str, amount: int, **fields: Any
) -> Json:
    return ok(send_transfer(client, transfer_id, debit, credit, amount, **fields), 201)


def fund(client: Client, account_id: str, amount: int, transfer_id: str | None = None) -> Json:
    """Issue ``amount`` credits to an account (the issuer must be open)."""
    return record(client, transfer_id or f"fund:{account_id}:{amount}", ISSUER, account_id, amount)


def account(client: Client, account_id: str, min_position: int | None = None, **query: Any) -> Json:
    params = dict(query)
    if min_position is not None:
        params["min_position"] = min_position
    return ok(client.get(f"/v1/accounts/{account_id}", params=params))


def transfer(client: Client, transfer_id: str, min_position: int | None = None) -> Json:
    params = {} if min_position is None else {"min_position": min_position}
    return ok(client.get(f"/v1/transfers/{transfer_id}", params=params))


def head(client: Client) -> int:
    """The head of the log as the readiness probe reports it."""
    readiness = client.get("/v1/ready").json()
    return int(readiness["head"])


def now() -> datetime:
    return datetime.now(tz=UTC)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def balances_sum(client: Client, account_ids: list[str], min_position: int) -> int:
    return sum(account(client, a, min_position)["balance"] for a in account_ids)
