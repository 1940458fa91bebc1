"""`ledger serve --no-projections --workers 2` on PostgreSQL: two API processes, one
hot account that every client spends from. Every acknowledged transfer is in the log
once, the account never goes below its floor, no request fails for a reason other than
the money running out, and the log passes `ledger audit`."""

import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.e2e.test_serve import free_port, last_line, ledger_command

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WORKERS: Final = 2
CLIENTS: Final = 8
FUNDS: Final = 300
ATTEMPTS_PER_CLIENT: Final = 50  # 400 attempts for 300 credits: the last ones are refused
START_TIMEOUT_SECONDS: Final = 120.0
UNIT: Final = "CREDITS"
HOT: Final = "user:hot"
ISSUANCE: Final = "system:issuance"


def test_two_api_processes_spend_one_hot_account_exactly_and_never_fail_otherwise(
    postgres_url: str, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LEDGER_EVENT_STORE": postgres_url,
        "LEDGER_READ_MODEL": postgres_url,
        "LEDGER_DATA_DIR": str(tmp_path / "var"),
        "LEDGER_LOG_FORMAT": "json",
    }
    created = subprocess.run(
        [*ledger_command(), "keys", "create", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key = last_line(created.stdout)
    port = free_port()
    stderr_path = tmp_path / "serve.err"
    with stderr_path.open("w") as stderr:
        serve = subprocess.Popen(
            [
                *ledger_command(),
                "serve",
                "--no-projections",
                "--workers",
                str(WORKERS),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for_workers(stderr_path, serve)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            fund(client)
            statuses = spend_concurrently(port, key)
            hot = client.get(f"/v1/accounts/{HOT}").json()
            spenders = [
                client.get(f"/v1/accounts/user:{number}").json()["balance"]
                for number in range(CLIENTS)
            ]
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    log = stderr_path.read_text()
    assert "died" not in log, "the supervisor replaced a worker"
    # Spent exactly what it held, never more; every other attempt refused for funds.
    assert statuses[201] == FUNDS, statuses
    assert statuses[422] == CLIENTS * ATTEMPTS_PER_CLIENT - FUNDS, statuses
    assert hot["balance"] == 0
    assert hot["debits_posted"] == FUNDS
    assert sum(spenders) == FUNDS
    audit = subprocess.run(
        [*ledger_command(), "audit", "--no-projections"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]


def wait_for_workers(stderr_path: Path, serve: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while stderr_path.read_text().count("Application startup complete") < WORKERS:
        assert serve.poll() is None, stderr_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)


def fund(client: httpx.Client) -> None:
    for account in (
        {"id": ISSUANCE, "unit": UNIT, "allow_negative": True},
        {"id": HOT, "unit": UNIT},
        *({"id": f"user:{number}", "unit": UNIT} for number in range(CLIENTS)),
    ):
        assert client.post("/v1/accounts", json=account).status_code == 201
    funding = {"id": "fund", "debit_account_id": ISSUANCE, "credit_account_id": HOT}
    assert client.post("/v1/transfers", json={**funding, "amount": FUNDS}).status_code == 201


def spend_concurrently(port: int, key: str) -> Counter[int]:
    """Each client on its own connection (the kernel spreads them over the workers)."""

    def spend(number: int) -> Counter[int]:
        seen: Counter[int] = Counter()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            for attempt in range(ATTEMPTS_PER_CLIENT):
                body = {
                    "id": f"spend:{number}:{attempt}",
                    "debit_account_id": HOT,
                    "credit_account_id": f"user:{number}",
                    "amount": 1,
                }
                seen[client.post("/v1/transfers", json=body).status_code] += 1
        return seen

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return sum(pool.map(spend, range(CLIENTS)), Counter())
