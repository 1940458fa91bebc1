"""`ledger serve --no-projections --workers 2` on PostgreSQL: two API processes, one
hot account that every client spends from. Every acknowledged transfer is in the log
once, the account never goes below its floor, no request fails for a reason other than
the money running out, and the log passes `ledger audit`. And the supervisor (decision
0029): each worker accepts from a listening socket of its own, a killed worker is
replaced on the same socket, and SIGTERM or SIGINT drains the workers and exits 0."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, NamedTuple

import httpx
import pytest

from tests.e2e.test_serve import children_of, free_port, last_line, ledger_command

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WORKERS: Final = 2
CLIENTS: Final = 8
FUNDS: Final = 300
ATTEMPTS_PER_CLIENT: Final = 50  # 400 attempts for 300 credits: the last ones are refused
START_TIMEOUT_SECONDS: Final = 120.0
UNIT: Final = "CREDITS"
HOT: Final = "user:hot"
ISSUANCE: Final = "system:issuance"


CONNECTIONS: Final = 32
STOP_TIMEOUT_SECONDS: Final = 120.0  # a bound against hanging, not a measure of speed


def environment(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LEDGER_EVENT_STORE": postgres_url,
        "LEDGER_READ_MODEL": postgres_url,
        "LEDGER_DATA_DIR": str(tmp_path / "var"),
        "LEDGER_LOG_FORMAT": "json",
    }


def test_two_api_processes_spend_one_hot_account_exactly_and_never_fail_otherwise(
    postgres_url: str, tmp_path: Path
) -> None:
    env = environment(postgres_url, tmp_path)
    key = admin_key(env)
    port = free_port()
    stderr_path = tmp_path / "serve.err"
    serve = start_serve(env, port, stderr_path)
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
    assert_audit_passes(env)


def assert_audit_passes(env: dict[str, str]) -> None:
    audit = subprocess.run(
        [*ledger_command(), "audit", "--no-projections"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]


def admin_key(env: dict[str, str]) -> str:
    """A new admin key, made by ``ledger keys create`` before the server starts."""
    created = subprocess.run(
        [*ledger_command(), "keys", "create", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return last_line(created.stdout)


def start_serve(env: dict[str, str], port: int, stderr_path: Path) -> "subprocess.Popen[bytes]":
    """``ledger serve --workers 2`` in a process group of its own, as a terminal's job."""
    with stderr_path.open("w") as stderr:
        return subprocess.Popen(
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
            start_new_session=True,
        )


def wait_for_workers(
    stderr_path: Path, serve: "subprocess.Popen[bytes]", started: int = WORKERS
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while stderr_path.read_text().count("Application startup complete") < started:
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


@pytest.mark.parametrize(
    ("stop_signal", "to_the_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["TERM to the supervisor", "INT to the group as Ctrl+C does"],
)
def test_each_worker_serves_its_own_socket_a_killed_one_is_replaced_and_a_signal_stops_all(
    postgres_url: str, tmp_path: Path, stop_signal: signal.Signals, to_the_group: bool
) -> None:
    env = environment(postgres_url, tmp_path)
    port = free_port()
    stderr_path = tmp_path / "serve.err"
    serve = start_serve(env, port, stderr_path)
    try:
        wait_for_workers(stderr_path, serve)
        first = listeners_of_children(serve.pid, port)
        # Each worker listens on a socket of its own (SO_REUSEPORT), not on one shared.
        assert len(first) == WORKERS
        assert len({worker.socket for worker in first}) == WORKERS
        assert answered_by(port, first) == {worker.pid for worker in first}

        killed = first[0]
        os.kill(killed.pid, signal.SIGKILL)
        wait_for_workers(stderr_path, serve, started=WORKERS + 1)
        again = listeners_of_children(serve.pid, port)
        replacement = next(worker for worker in again if worker.pid not in {w.pid for w in first})
        # The replacement took over the dead worker's socket, kept by the supervisor.
        assert replacement.socket == killed.socket
        assert answered_by(port, again) == {worker.pid for worker in again}
        assert f"Child process [{killed.pid}] died" in stderr_path.read_text()

        if to_the_group:
            os.killpg(serve.pid, stop_signal)
        else:
            serve.send_signal(stop_signal)
        assert serve.wait(timeout=STOP_TIMEOUT_SECONDS) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    log = stderr_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    # Each worker drained and shut its app down (uvicorn's graceful shutdown).
    assert log.count("Application shutdown complete") == WORKERS, log[-3000:]
    assert not any(pid_alive(worker.pid) for worker in again)


class Listener(NamedTuple):
    pid: int
    socket: int  # the listening socket's inode


def listeners_of_children(parent: int, port: int) -> list[Listener]:
    """The parent's API worker processes and the socket each listens on at ``port``
    (its writer process listens on none)."""
    listening = tcp_inodes(port, LISTEN_STATE)
    found = []
    for pid in children_of(parent):
        if is_writer(pid):
            continue
        held = socket_inodes(pid) & listening
        assert len(held) == 1, (pid, held)
        found.append(Listener(pid, held.pop()))
    return found


def is_writer(pid: int) -> bool:
    """Whether ``pid`` is the writer process of ``serve --workers N`` (decision 0035)."""
    return b"serve-writer" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            matched = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
            if matched:
                inodes.add(int(matched[1]))
    return inodes


# /proc/net/tcp's codes of the states
ESTABLISHED_STATE: Final = "01"
LISTEN_STATE: Final = "0A"


def tcp_inodes(port: int, state: str) -> set[int]:
    """The inodes of the IPv4 sockets in ``state`` whose local port is ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            inodes.add(int(fields[9]))
    return inodes


def answered_by(port: int, workers: list[Listener]) -> set[int]:
    """Which of the workers hold the server side of ``CONNECTIONS`` clients' connections,
    each client having made a request (so its connection was accepted)."""
    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) for _ in range(CONNECTIONS)
    ]
    try:
        for client in clients:
            assert client.get("/v1/health").status_code == 200
        established = tcp_inodes(port, ESTABLISHED_STATE)
        return {worker.pid for worker in workers if socket_inodes(worker.pid) & established}
    finally:
        for client in clients:
            client.close()


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_an_address_already_listened_on_is_one_line_and_status_2_before_anything_starts(
    postgres_url: str, tmp_path: Path
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        refused = refused_serve(environment(postgres_url, tmp_path), port)
    assert last_line(refused) == (
        f"ledger: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_a_writer_socket_path_too_long_is_one_line_and_status_2_before_anything_starts(
    postgres_url: str, tmp_path: Path
) -> None:
    """A long TMPDIR: said as the writer's socket path, not as a worker that failed."""
    long_directory = tmp_path / ("t" * 100)
    long_directory.mkdir()
    env = {**environment(postgres_url, tmp_path), "TMPDIR": str(long_directory)}
    said = last_line(refused_serve(env, free_port()))
    assert said.startswith("ledger: error: the writer process's socket path "), said
    assert said.endswith("set TMPDIR to a shorter directory"), said


def refused_serve(env: dict[str, str], port: int) -> str:
    """``serve --workers N`` refused before anything starts (status 2): its stderr."""
    refused = subprocess.run(
        [
            *ledger_command(),
            "serve",
            "--no-projections",
            *("--workers", str(WORKERS), "--port", str(port)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    assert "workers.started" not in refused.stderr
    assert "No API key existed" not in refused.stderr  # no first key made for nothing
    return refused.stderr
