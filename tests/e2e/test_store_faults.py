"""A store that fills up, hangs or goes away: clear, bounded answers and recovery
without a restart.

The full disks are real: a 20 MB tmpfs (mounting one needs root, which these test
machines and CI have). The hanging store is the fake KurrentDB told to stall.
"""

import errno
import itertools
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.api.services import Services
from app.application.ledger import Ledger
from app.bootstrap import build_services, shutdown
from app.persistence.stores import event_store_env
from app.settings import Settings
from tests.api.helpers import (
    ISSUER,
    Client,
    assert_problem,
    open_account,
    open_issuer,
    send_transfer,
    transfer,
)
from tests.e2e.test_serve import Server, admin_key_of, serving
from tests.support.fake_kurrentdb import server_named
from tests.support.pgserver import running_postgres
from tests.support.threads import assert_all_end

DISK_SIZE: Final = "20m"
FILL_CHUNK_BYTES: Final = 1 << 20
RECOVERY_SECONDS: Final = 30.0
READY_BOUND_SECONDS: Final = 1.0
# What a loaded machine may add to a readiness probe's answer. A probe that waited for
# the store instead would wait out the stall (or the library's retries on a server that
# is down, some twelve seconds): longer than the bound and the slack together.
READY_SLACK_SECONDS: Final = 4.0
STALL_SECONDS: Final = 8.0
# Large metadata fills a disk in few transfers (32 entries of 1,000 characters).
BIG_METADATA: Final = {f"key{i}": "x" * 1000 for i in range(32)}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("a real full disk needs a tmpfs, and mounting one needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(disk)], check=True
    )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full (to the last byte); deleting it frees the
    space."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (FILL_CHUNK_BYTES, 4096, 1):
            while _wrote(descriptor, size):
                pass
    finally:
        os.close(descriptor)
    return filler


def _wrote(descriptor: int, size: int) -> bool:
    try:
        os.write(descriptor, b"\0" * size)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return False
    return True


def served(settings: Settings) -> tuple[Services, TestClient[Litestar]]:
    services = build_services(settings, projections=True)
    client = TestClient(app=create_app(services))
    client.headers["Authorization"] = f"Bearer {services.keys.create('admin')}"
    return services, client


def eventually_ready(client: Client) -> dict[str, object]:
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        response = client.get("/v1/ready")
        if response.status_code == 200:
            body: dict[str, object] = response.json()
            return body
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def worker(body: dict[str, object], name: str) -> dict[str, object]:
    workers = body["workers"]
    assert isinstance(workers, list)
    found: dict[str, object] = next(w for w in workers if w["name"] == name)
    return found


def test_a_full_disk_under_the_log_answers_507_and_writes_resume_once_space_is_freed(
    small_disk: Path, tmp_path: Path
) -> None:
    settings = Settings(
        event_store=f"sqlite:///{small_disk / 'events.sqlite'}",
        data_dir=tmp_path / "data",
        log_format="console",
    )
    services, client = served(settings)
    try:
        with client:
            open_issuer(client)
            open_account(client, "alice")
            filler = fill(small_disk)
            response = send_transfer(client, "t-full", ISSUER, "alice", 5, metadata=BIG_METADATA)
            body = assert_problem(response, 507, "storage_full")
            assert "nothing was written" in str(body["detail"])
            assert services.ledger.get_account("alice").balance == 0
            filler.unlink()
            accepted = send_transfer(client, "t-full", ISSUER, "alice", 5, metadata=BIG_METADATA)
            assert accepted.status_code == 201, accepted.text
            assert services.ledger.get_account("alice").balance == 5
            metrics = client.get("/metrics").text
            assert 'status="500"' not in metrics
    finally:
        shutdown(services)


def test_a_projection_worker_failing_on_a_full_disk_is_restarted_and_catches_up(
    small_disk: Path, tmp_path: Path
) -> None:
    """Finding 1: the views' disk fills up; the worker fails, is reported down, and
    once space is freed it catches up by itself: no restart of the process."""
    settings = Settings(
        read_model=f"sqlite:///{small_disk / 'views.sqlite'}",
        data_dir=tmp_path / "data",
        read_wait_seconds=RECOVERY_SECONDS,
        log_format="console",
    )
    services, client = served(settings)
    try:
        with client:
            open_issuer(client)
            open_account(client, "alice")
            filler = fill(small_disk)
            positions = []
            for number in range(20):
                response = send_transfer(
                    client, f"t{number}", ISSUER, "alice", 1, metadata=BIG_METADATA
                )
                assert response.status_code == 201, response.text
                positions.append(response.json()["position"])
            deadline = time.monotonic() + RECOVERY_SECONDS
            while all(state.up for state in services.worker_states()):
                assert time.monotonic() < deadline, "the projection worker never failed"
                time.sleep(0.1)
            not_ready = client.get("/v1/ready")
            assert not_ready.status_code == 503
            projections = worker(not_ready.json(), "projections")
            assert projections["up"] is False
            assert projections["since"]
            assert "full" in str(projections["last_error"]).lower()
            filler.unlink()
            assert transfer(client, "t19", min_position=positions[-1])["amount"] == 1
            ready = eventually_ready(client)
            assert ready["lag_positions"] == 0
            assert int(str(worker(ready, "projections")["failures"])) >= 1
            failures = re.search(
                r'ledger_worker_failures_total\{worker="projections"\} (\d+)',
                client.get("/metrics").text,
            )
            assert failures is not None
            assert int(failures.group(1)) >= 1
    finally:
        shutdown(services)


def test_ready_answers_within_a_second_while_the_store_hangs(tmp_path: Path) -> None:
    name = uuid.uuid4().hex
    settings = Settings(event_store=f"fake://{name}", data_dir=tmp_path, log_format="console")
    services, client = served(settings)
    try:
        with client:
            assert eventually_ready(client)["status"] == "ready"
            server_named(name).stall_seconds = STALL_SECONDS
            for _ in range(3):
                started = time.monotonic()
                response = client.get("/v1/ready")
                assert time.monotonic() - started < READY_BOUND_SECONDS + READY_SLACK_SECONDS
                assert response.status_code == 503
                assert "did not answer" in response.json()["reason"]
            server_named(name).stall_seconds = 0
            assert eventually_ready(client)["store_reachable"] is True
    finally:
        shutdown(services)


# PostgreSQL stopped and restarted under load, with `ledger serve` running ---------------

LOAD_THREADS: Final = 4
STORE_TIMEOUT_SECONDS: Final = 5
DOWN_SECONDS: Final = 12.0
LOAD_AFTER_RESTART_SECONDS: Final = 4.0
# A request may wait for the store's bound, twice at most (a read, then the write),
# each try of the library's ten a whole second at least, plus its 0.2 s pauses.
REQUEST_BOUND_SECONDS: Final = 2 * (10 * 1.2) + 3


@dataclass
class Answer:
    transfer_id: str
    status: int
    code: str | None
    seconds: float
    retry_after: str | None


def keep_sending(
    server: Server, key: str, worker_number: int, stop: threading.Event, answers: list[Answer]
) -> None:
    with server.client(key) as http:
        for number in itertools.count():
            if stop.is_set():
                return
            transfer_id = f"load-{worker_number}-{number}"
            started = time.monotonic()
            response = http.post(
                "/v1/transfers",
                json={
                    "id": transfer_id,
                    "debit_account_id": ISSUER,
                    "credit_account_id": "alice",
                    "amount": 1,
                },
            )
            code = response.json().get("code") if response.status_code >= 400 else None
            answers.append(
                Answer(
                    transfer_id,
                    response.status_code,
                    code,
                    time.monotonic() - started,
                    response.headers.get("retry-after"),
                )
            )
            if response.status_code >= 500:
                time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_postgresql_stopped_and_restarted_under_load_costs_503s_and_nothing_else(
    tmp_path: Path,
) -> None:
    with running_postgres() as postgres:
        url = postgres.create_database("ledger")
        env = {
            "LEDGER_EVENT_STORE": url,
            "LEDGER_READ_MODEL": url,
            "LEDGER_STORE_TIMEOUT_SECONDS": str(STORE_TIMEOUT_SECONDS),
        }
        with serving(tmp_path / "var", extra_env=env) as server:
            key = admin_key_of(server)
            with server.client(key) as http:
                assert (
                    http.post(
                        "/v1/accounts",
                        json={"id": ISSUER, "unit": "CREDITS", "allow_negative": True},
                    ).status_code
                    == 201
                )
                assert (
                    http.post("/v1/accounts", json={"id": "alice", "unit": "CREDITS"}).status_code
                    == 201
                )
                stop = threading.Event()
                answers: list[Answer] = []
                threads = [
                    threading.Thread(target=keep_sending, args=(server, key, n, stop, answers))
                    for n in range(LOAD_THREADS)
                ]
                for thread in threads:
                    thread.start()
                time.sleep(1.0)
                postgres.stop()
                stopped_at = time.monotonic()
                while time.monotonic() - stopped_at < DOWN_SECONDS:
                    started = time.monotonic()
                    ready = http.get("/v1/ready")
                    assert time.monotonic() - started < READY_BOUND_SECONDS + READY_SLACK_SECONDS
                    assert ready.status_code == 503, ready.text
                    time.sleep(0.5)
                postgres.start()
                restarted_at = time.monotonic()
                time.sleep(LOAD_AFTER_RESTART_SECONDS)
                stop.set()
                # A sender still waiting is a request the bound did not hold.
                assert_all_end(threads, REQUEST_BOUND_SECONDS * 3)

                # Every answer was a success or a named, bounded 503.
                assert answers
                for answer in answers:
                    assert answer.seconds < REQUEST_BOUND_SECONDS, answer
                    assert answer.status in (200, 201, 503), answer
                    if answer.status == 503:
                        assert answer.code in (
                            "store_unavailable",
                            "outcome_unknown",
                            "write_timeout",
                        ), answer
                        assert answer.retry_after is not None, answer
                assert any(a.status == 503 for a in answers), "the outage was never noticed"
                resumed = [a for a in answers if a.status == 201]
                assert resumed, "no write succeeded"

                # Writes resumed without a restart of the process.
                assert server.process.poll() is None
                final = http.post(
                    "/v1/transfers",
                    json={
                        "id": "after",
                        "debit_account_id": ISSUER,
                        "credit_account_id": "alice",
                        "amount": 1,
                    },
                )
                assert final.status_code == 201, final.text
                assert (
                    time.monotonic() - restarted_at < RECOVERY_SECONDS + LOAD_AFTER_RESTART_SECONDS
                )

                # Nothing acknowledged lost, nothing doubled: resending every id (safe)
                # leaves each transfer recorded exactly once.
                sent = sorted({a.transfer_id for a in answers} | {"after"})
                for transfer_id in sent:
                    again = http.post(
                        "/v1/transfers",
                        json={
                            "id": transfer_id,
                            "debit_account_id": ISSUER,
                            "credit_account_id": "alice",
                            "amount": 1,
                        },
                    )
                    acknowledged = transfer_id == "after" or any(
                        a.transfer_id == transfer_id and a.status in (200, 201) for a in answers
                    )
                    # An acknowledged one is a replay; one that was not may or may not
                    # have landed (outcome unknown), and is recorded now if it did not.
                    assert again.status_code in ((200,) if acknowledged else (200, 201)), (
                        transfer_id,
                        again.text,
                    )
                alice = http.get("/v1/accounts/alice").json()
                assert alice["balance"] == len(sent)

                # The views recover too, and the metrics never counted a 500.
                deadline = time.monotonic() + RECOVERY_SECONDS
                while http.get("/v1/ready").status_code != 200:
                    assert time.monotonic() < deadline, http.get("/v1/ready").text
                    time.sleep(0.5)
                assert 'status="500"' not in http.get("/metrics").text
        assert "Traceback" not in server.stderr, server.stderr[-3000:]


def test_every_postgresql_connection_of_the_ledger_has_its_timeouts(postgres_url: str) -> None:
    ledger = Ledger(event_store_env(postgres_url, timeout_seconds=7))
    try:
        recorder: Any = ledger.recorder
        with recorder.datastore.get_connection() as connection:
            statement = connection.execute("SHOW statement_timeout").fetchone()
            assert statement is not None
            assert next(iter(statement.values())) == "7s"
            assert connection.info.get_parameters()["connect_timeout"] == "1"
    finally:
        ledger.close()
