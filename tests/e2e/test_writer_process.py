"""`ledger serve --no-projections --workers 2` on PostgreSQL with its writer process
(decision 0035) killed while writes are in flight: every caller is answered within its
deadline and a bound (acknowledged, or 503 ``outcome_unknown``, ``write_timeout`` or
``store_unavailable``, never a hang or a 500); the supervisor starts the writer again and
writes succeed; each unknown one sent again with its id is recorded exactly once; what
was acknowledged is in the log, nothing is there twice, and the log passes the audit."""

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import httpx
import pytest

from app.application.ledger import Ledger
from app.domain.errors import TransferNotFoundError
from tests.conftest import store_env
from tests.e2e.test_serve import children_of, free_port, ledger_command
from tests.e2e.test_workers import (
    admin_key,
    assert_audit_passes,
    environment,
    is_writer,
    start_serve,
    wait_for_workers,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CLIENTS: Final = 8
UNIT: Final = "CREDITS"
HOT: Final = "user:hot"
ISSUANCE: Final = "system:issuance"
FUNDS: Final = 1_000_000
# The write deadline (LEDGER_WRITE_TIMEOUT_SECONDS's default, 10 s) and the hop's grace
# (1 s), with room for a busy machine: a bound against hanging, not a measure of speed.
ANSWER_BOUND_SECONDS: Final = 30.0
RESTART_BOUND_SECONDS: Final = 60.0
READS: Final = 20
UNAVAILABLE_CODES: Final = {"outcome_unknown", "write_timeout", "store_unavailable"}
# The answers that say nothing was written (not sent, or dropped at the deadline).
UNWRITTEN: Final = {"write_timeout", "store_unavailable"}


def writer_of(serve: "subprocess.Popen[bytes]") -> int | None:
    found = [pid for pid in children_of(serve.pid) if is_writer(pid)]
    return found[0] if found else None


def test_a_killed_writer_leaves_every_caller_answered_and_nothing_lost_or_doubled(
    postgres_url: str, tmp_path: Path
) -> None:
    env = environment(postgres_url, tmp_path)
    key = admin_key(env)
    port = free_port()
    stderr_path = tmp_path / "serve.err"
    serve = start_serve(env, port, stderr_path)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_for_workers(stderr_path, serve)
        with httpx.Client(base_url=base, headers=headers, timeout=ANSWER_BOUND_SECONDS) as client:
            for account in (
                {"id": ISSUANCE, "unit": UNIT, "allow_negative": True},
                {"id": HOT, "unit": UNIT},
                *({"id": f"user:{n}", "unit": UNIT} for n in range(CLIENTS)),
            ):
                assert client.post("/v1/accounts", json=account).status_code == 201
            funding = {"id": "fund", "debit_account_id": ISSUANCE, "credit_account_id": HOT}
            assert (
                client.post("/v1/transfers", json={**funding, "amount": FUNDS}).status_code == 201
            )
            first_writer = writer_of(serve)
            assert first_writer is not None

            answers: dict[str, tuple[int, str | None]] = {}
            killed = threading.Event()

            def spend(number: int) -> None:
                with httpx.Client(
                    base_url=base, headers=headers, timeout=ANSWER_BOUND_SECONDS
                ) as mine:
                    attempt = 0
                    # Until the writer was killed and a while after (its restart included).
                    while not killed.is_set() or attempt < 400:
                        transfer_id = f"spend:{number}:{attempt}"
                        response = mine.post("/v1/transfers", json=body(transfer_id, number))
                        code = None if response.status_code < 300 else response.json()["code"]
                        answers[transfer_id] = (response.status_code, code)
                        attempt += 1

            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                spending = [pool.submit(spend, n) for n in range(CLIENTS)]
                time.sleep(1.0)  # writes in flight
                os.kill(first_writer, signal.SIGKILL)
                killed.set()
                for future in spending:
                    future.result()  # no client's request timed out (httpx would raise)

            statuses = Counter(status for status, _ in answers.values())
            assert set(statuses) <= {201, 503}, statuses
            codes = Counter(code for _, code in answers.values() if code is not None)
            assert set(codes) <= UNAVAILABLE_CODES, codes
            assert codes, "the kill met no write in flight or waiting"
            # The supervisor started a writer again; writes succeed through it.
            wait_for_restarted_writer(serve, first_writer)
            # What was answered "nothing was written" is not in the log.
            assert_never_written(
                postgres_url, [tid for tid, (_, code) in answers.items() if code in UNWRITTEN]
            )
            unknown = [tid for tid, (status, _) in answers.items() if status == 503]
            for transfer_id in unknown:
                number = int(transfer_id.split(":")[1])
                resent = send_until_answered(client, transfer_id, number)
                assert resent in (200, 201), (transfer_id, resent)
            hot = client.get(f"/v1/accounts/{HOT}").json()
    finally:
        serve.terminate()
        serve.wait(timeout=120)
    log = stderr_path.read_text()
    assert f"Child process [{first_writer}] died" in log
    assert '"status":500' not in log
    acknowledged = [tid for tid, (status, _) in answers.items() if status == 201]
    ledger = Ledger(store_env(postgres_url))
    try:
        # Every acknowledged transfer is in the log, and every unknown one too once sent
        # again; the hot account moved once per transfer, none twice.
        for transfer_id in [*acknowledged, *unknown]:
            assert ledger.get_transfer(transfer_id).amount == 1
        assert hot["debits_posted"] == len(answers)
        assert hot["balance"] == FUNDS - len(answers)
    finally:
        ledger.close()
    assert_audit_passes(env)


def assert_never_written(postgres_url: str, transfer_ids: list[str]) -> None:
    ledger = Ledger(store_env(postgres_url))
    try:
        for transfer_id in transfer_ids:
            with pytest.raises(TransferNotFoundError):
                ledger.get_transfer(transfer_id)
    finally:
        ledger.close()


def body(transfer_id: str, number: int) -> dict[str, object]:
    return {
        "id": transfer_id,
        "debit_account_id": HOT,
        "credit_account_id": f"user:{number}",
        "amount": 1,
    }


def wait_for_restarted_writer(serve: "subprocess.Popen[bytes]", killed: int) -> None:
    deadline = time.monotonic() + RESTART_BOUND_SECONDS
    while writer_of(serve) in (None, killed):
        assert serve.poll() is None
        assert time.monotonic() < deadline, "the writer was never started again"
        time.sleep(0.1)


def send_until_answered(client: httpx.Client, transfer_id: str, number: int) -> int:
    """Send the same transfer again until the writer (restarting) answers it."""
    deadline = time.monotonic() + RESTART_BOUND_SECONDS
    while True:
        response = client.post("/v1/transfers", json=body(transfer_id, number))
        if response.status_code != 503 or time.monotonic() > deadline:
            return response.status_code
        time.sleep(0.1)


def test_a_read_right_after_a_write_through_the_writer_sees_it_on_either_worker(
    postgres_url: str, tmp_path: Path
) -> None:
    """The position a write answers is the writer's commit in the log, the same for
    every process: a read that asks for it (``Ledger-Min-Position``), on a connection of
    its own (either worker), waits for the views (``ledger project``) and finds it."""
    env = environment(postgres_url, tmp_path)
    key = admin_key(env)
    port = free_port()
    project = subprocess.Popen(
        [*ledger_command(), "project"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    serve = start_serve(env, port, tmp_path / "serve.err")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_for_workers(tmp_path / "serve.err", serve)
        with httpx.Client(base_url=base, headers=headers, timeout=ANSWER_BOUND_SECONDS) as client:
            for account in (
                {"id": ISSUANCE, "unit": UNIT, "allow_negative": True},
                {"id": HOT, "unit": UNIT},
            ):
                assert client.post("/v1/accounts", json=account).status_code == 201
            for number in range(READS):
                body = {
                    "id": f"read:{number}",
                    "debit_account_id": ISSUANCE,
                    "credit_account_id": HOT,
                    "amount": number + 1,
                }
                written = client.post("/v1/transfers", json=body)
                assert written.status_code == 201
                position = written.headers["Ledger-Position"]
                # A new connection each time: the kernel spreads them over both workers.
                with httpx.Client(base_url=base, headers=headers, timeout=60) as reader:
                    read = reader.get(
                        f"/v1/transfers/read:{number}",
                        headers={"Ledger-Min-Position": position},
                    )
                assert read.status_code == 200, read.text
                assert read.json()["amount"] == number + 1
                assert int(read.headers["Ledger-Position"]) >= int(position)
    finally:
        serve.terminate()
        serve.wait(timeout=120)
        project.terminate()
        project.wait(timeout=120)
