"""`ledger serve` as users run it: a real process on a real socket, configured only by
LEDGER_DATA_DIR. First start prints an admin key (and never again), `ledger keys`
creates, lists and revokes keys, SIGTERM drains and stops, read-your-writes holds
over the wire, and 16 client threads racing on one account spend exactly what it holds.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from tests.support import ports
from tests.support.ports import listened_on_by
from tests.support.threads import assert_all_end

pytestmark = pytest.mark.slow

KEY_PATTERN: Final = re.compile(r"lk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")
START_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 15.0
UNIT: Final = "CREDITS"
ISSUER: Final = "system:issuance"
# How long a read with min_position waits for the views (the default is 5 s): on a loaded
# machine the projections child, which runs niced, may take longer to reach a position
# than the default allows, and the read would answer 409 instead of waiting.
READ_WAIT_SECONDS: Final = "30"


def ledger_command() -> list[str]:
    """The installed console script beside this interpreter, else the same entry point."""
    script = Path(sys.executable).with_name("ledger")
    if script.exists():
        return [str(script)]
    found = shutil.which("ledger")
    if found:
        return [found]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_DATA_DIR"] = str(data_dir)
    env["LEDGER_LOG_FORMAT"] = "json"
    env["LEDGER_READ_WAIT_SECONDS"] = READ_WAIT_SECONDS
    return env


def run_ledger(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ledger_command(), *args],
        env=environment(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def last_line(text: str) -> str:
    lines = text.rstrip("\n").split("\n")
    return lines[-1] if lines else ""


# Other e2e modules (test_workers) import it from here.
free_port = ports.free_port
# What uvicorn says when the port was taken between our finding it free and its bind,
# and how many times a server is started on a fresh port for that reason.
PORT_TAKEN: Final = "address already in use"
STARTS_MAX: Final = 3


class Server:
    """One `ledger serve` process; stdout and stderr go to files in its data dir.

    Its port is found free just before it starts; another process may take it first.
    Healthy means answering on a port this process listens on (not whoever took it),
    and a start that found the port taken is made again on another port."""

    def __init__(self, data_dir: Path, run: int, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = {**environment(data_dir), **(extra_env or {})}
        self.stdout_path = data_dir / f"serve-{run}.out"
        self.stderr_path = data_dir / f"serve-{run}.err"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path.write_text("")
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # stdout appended: the admin key a first start printed stays its last line.
        with self.stdout_path.open("a") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [*ledger_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=err,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        starts = 1
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if PORT_TAKEN in self.stderr and starts < STARTS_MAX:
                    self._start()
                    starts += 1
                    continue
                pytest.fail(f"ledger serve exited with {self.process.returncode}:\n{self.stderr}")
            try:
                healthy = httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                healthy = False
            if healthy and listened_on_by(self.port, self.process.pid):
                return
            time.sleep(0.1)
        pytest.fail(f"ledger serve did not become healthy:\n{self.stderr}")

    def terminate(self) -> int:
        """SIGTERM; the exit code (the test fails if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"ledger serve ignored SIGTERM for {STOP_TIMEOUT_SECONDS}s")

    def client(self, key: str | None) -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


# After a graceful shutdown the process exits with status 0 (and flushed logs).
CLEAN_EXIT_CODES: Final = (0,)


def assert_stops_cleanly(server: Server) -> None:
    """SIGTERM: in-flight requests drain, the app shuts down, the process exits fast
    (``terminate`` fails the test past STOP_TIMEOUT_SECONDS: half the drain's bound, with
    a loaded machine's slack)."""
    code = server.terminate()
    assert code in CLEAN_EXIT_CODES, (code, server.stderr[-3000:])
    stderr = server.stderr
    assert "Shutting down" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


@contextmanager
def serving(
    data_dir: Path, run: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    server = Server(data_dir, run, extra_env)
    try:
        server.wait_until_healthy()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def admin_key_of(server: Server) -> str:
    key = last_line(server.stdout)
    assert KEY_PATTERN.fullmatch(key), server.stdout
    return key


def json_logs(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


# First start, keys ----------------------------------------------------------------------


class Impostor(BaseHTTPRequestHandler):
    """Another process's server on the port a test found free: healthy, but not ours."""

    asked: Final[list[str]] = []

    def do_GET(self) -> None:
        Impostor.asked.append(self.path)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_a_port_taken_between_finding_it_free_and_serving_on_it_is_never_taken_for_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), Impostor) as impostor:
        threading.Thread(target=impostor.serve_forever, daemon=True).start()
        taken = impostor.server_address[1]
        offered = iter([taken])
        monkeypatch.setattr(
            sys.modules[__name__], "free_port", lambda: next(offered, None) or ports.free_port()
        )
        try:
            with serving(tmp_path / "var") as server:
                assert server.port != taken
                with server.client(admin_key_of(server)) as client:
                    assert client.get("/v1/transfers").status_code == 200
                assert_stops_cleanly(server)
        finally:
            impostor.shutdown()
    assert "/v1/health" in Impostor.asked  # it answered healthy, and was not believed


def test_first_start_prints_an_admin_key_once_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serving(data_dir, run=1) as server:
        key = admin_key_of(server)
        # Alone on its line, and the only thing on stdout.
        assert server.stdout.strip() == key
        assert "admin key" in server.stderr
        with server.client(key) as client:
            assert client.get("/v1/transfers").status_code == 200
            opened = client.post("/v1/accounts", json={"id": "kept", "unit": UNIT})
            assert opened.status_code == 201
        with server.client(None) as anonymous:
            refused = anonymous.get("/v1/transfers")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].lower().startswith("bearer")
            assert refused.headers["content-type"].startswith("application/problem+json")
        assert_stops_cleanly(server)

    with serving(data_dir, run=2) as again:
        assert KEY_PATTERN.search(again.stdout) is None, again.stdout
        assert "admin key" not in again.stderr
        with again.client(key) as client:
            # The first key still works, and what it wrote survived the restart.
            kept = client.get(
                "/v1/accounts/kept", params={"min_position": opened.json()["position"]}
            )
            assert kept.status_code == 200, kept.text
        assert_stops_cleanly(again)


def test_the_first_admin_key_can_come_from_a_secret_file_and_is_never_printed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    secret = tmp_path / "ledger_admin_key"
    key = "lk_bootstrap_" + "s" * 40
    secret.write_text(key + "\n")
    with serving(data_dir, extra_env={"LEDGER_BOOTSTRAP_ADMIN_KEY_FILE": str(secret)}) as server:
        with server.client(key) as client:
            assert client.post("/v1/accounts", json={"id": "a", "unit": UNIT}).status_code == 201
        assert_stops_cleanly(server)
        assert key not in server.stdout + server.stderr
        assert KEY_PATTERN.search(server.stdout) is None
    rows, _ = key_rows(data_dir)
    assert rows == {"bootstrap": ("admin", "active")}


def key_rows(data_dir: Path) -> tuple[dict[str, tuple[str, str]], str]:
    """`ledger keys list` as {key id: (scope, state)}, and its raw output."""
    listed = run_ledger(data_dir, "keys", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["key_id"]: (row["scope"], row["state"]) for row in json.loads(listed.stdout)}
    return rows, listed.stdout


# The CPU ``ledger serve`` and its projections child may spend from SIGTERM to their exit
# when idle (about 0.1 s measured; the interpreters' own finalization had added 0.6 s,
# which a loaded machine stretched into seconds of wall time).
STOP_CPU_SECONDS_MAX: Final = 0.4


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


def test_sigterm_stops_serve_and_its_projections_child_for_little_cpu(tmp_path: Path) -> None:
    """Measured in CPU (the machine's load stretches wall time, not CPU): after the work
    of stopping, both processes end at once, and the child is gone with its parent."""
    with serving(tmp_path / "var") as server:
        pid = server.process.pid
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(children) == 1, "the projections child"
        before = process_cpu_seconds(pid) + process_cpu_seconds(children[0])
        server.process.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(pid, 0)  # its CPU, with the children it waited for
        server.process.returncode = os.waitstatus_to_exitcode(status)
        spent = usage.ru_utime + usage.ru_stime - before
        assert server.process.returncode == 0, server.stderr[-3000:]
        assert "Application shutdown complete" in server.stderr
        assert spent < STOP_CPU_SECONDS_MAX
        assert not Path(f"/proc/{children[0]}").exists(), "the child was stopped and reaped"


def test_keys_create_list_and_revoke(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serving(data_dir) as server:
        admin = admin_key_of(server)
        created = run_ledger(data_dir, "keys", "create", "--scope", "read")
        assert created.returncode == 0, created.stderr
        read_key = last_line(created.stdout)
        assert KEY_PATTERN.fullmatch(read_key), created.stdout
        unused_key = last_line(run_ledger(data_dir, "keys", "create", "--scope", "write").stdout)
        assert KEY_PATTERN.fullmatch(unused_key)
        assert len({admin, read_key, unused_key}) == 3

        bad_scope = run_ledger(data_dir, "keys", "create", "--scope", "root")
        assert bad_scope.returncode != 0
        assert KEY_PATTERN.search(bad_scope.stdout) is None

        rows, listing = key_rows(data_dir)
        ids = {key: key.split("_")[1] for key in (admin, read_key, unused_key)}
        assert rows[ids[admin]] == ("admin", "active")
        assert rows[ids[read_key]] == ("read", "active")
        assert rows[ids[unused_key]] == ("write", "active")
        assert len(rows) == 3
        # Secrets are stored hashed, so never listed.
        for key in (admin, read_key, unused_key):
            assert key.split("_", 2)[2] not in listing

        with server.client(read_key) as reader:
            assert reader.get("/v1/transfers").status_code == 200
            forbidden = reader.post("/v1/accounts", json={"id": "r", "unit": UNIT})
            assert forbidden.status_code == 403
            assert forbidden.json()["code"] == "forbidden"

        # A key the server has verified recently is refused within its cache period …
        assert run_ledger(data_dir, "keys", "revoke", ids[read_key]).returncode == 0
        # … and a key it never saw as soon as it is revoked.
        revoked = run_ledger(data_dir, "keys", "revoke", ids[unused_key])
        assert revoked.returncode == 0, revoked.stderr
        with server.client(unused_key) as client:
            assert client.get("/v1/transfers").status_code == 401
        rows, _ = key_rows(data_dir)
        assert rows[ids[read_key]][1] == "revoked"
        assert rows[ids[unused_key]][1] == "revoked"
        assert rows[ids[admin]][1] == "active"
        assert run_ledger(data_dir, "keys", "revoke", ids[read_key]).returncode == 1
        deadline = time.monotonic() + 15
        with server.client(read_key) as reader:
            while reader.get("/v1/transfers").status_code != 401:
                assert time.monotonic() < deadline, "a revoked key kept working"
                time.sleep(0.25)
        with server.client(admin) as client:
            assert client.get("/v1/transfers").status_code == 200
        assert_stops_cleanly(server)


# Over the wire -------------------------------------------------------------------------


def test_a_write_is_readable_at_its_position_over_http(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as server, server.client(admin_key_of(server)) as client:
        for body in (
            {"id": ISSUER, "unit": UNIT, "allow_negative": True},
            {"id": "alice", "unit": UNIT},
        ):
            assert client.post("/v1/accounts", json=body).status_code == 201
        sent = client.post(
            "/v1/transfers",
            json={
                "id": "t1",
                "debit_account_id": ISSUER,
                "credit_account_id": "alice",
                "amount": 42,
            },
            headers={"X-Request-ID": "e2e-write-1"},
        )
        assert sent.status_code == 201, sent.text
        assert sent.headers["x-request-id"] == "e2e-write-1"
        position = sent.json()["position"]
        alice = client.get("/v1/accounts/alice", params={"min_position": position})
        assert alice.status_code == 200, alice.text
        assert alice.json()["balance"] == 42
        assert alice.json()["position"] >= position
        read = client.get("/v1/transfers/t1", params={"min_position": position})
        assert read.json()["status"] == "posted"
        entries = client.get("/v1/accounts/alice/entries", params={"min_position": position})
        assert [e["transfer_id"] for e in entries.json()["items"]] == ["t1"]
        beyond = client.get("/v1/accounts/alice", params={"min_position": position + 10**6})
        assert beyond.status_code == 422
        assert beyond.json()["code"] == "position_out_of_range"
        metrics = client.get("/metrics").text
        assert "ledger_transfers_recorded_total 1.0" in metrics
        assert "ledger_projection_lag_positions" in metrics
        assert client.get("/v1/ready").json()["status"] == "ready"
        assert_stops_cleanly(server)
    # Structured JSON logs carry the request id.
    logged = [r for r in json_logs(server.stderr) if r.get("request_id") == "e2e-write-1"]
    assert logged, server.stderr[-2000:]
    assert logged[0]["status"] == 201


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def thread_niceness(pid: int) -> list[int]:
    """The nice value of each thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            values.append(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return sorted(values)


def test_the_projections_child_runs_below_the_api_priority_and_still_projects(
    tmp_path: Path,
) -> None:
    """Decision 0013: on the embedded default the views catch up beside the writes, not
    against them; every thread of the child but its writer runs at the lower priority."""
    with serving(tmp_path / "var", extra_env={"LEDGER_PROJECTIONS_NICE": "7"}) as server:
        own = os.getpriority(os.PRIO_PROCESS, server.process.pid)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (children := children_of(server.process.pid)):
            assert time.monotonic() < deadline, "serve started no projections child"
            time.sleep(0.1)
        with server.client(admin_key_of(server)) as client:
            opened = client.post("/v1/accounts", json={"id": "alice", "unit": UNIT})
            position = opened.json()["position"]
            listed = client.get("/v1/accounts", params={"min_position": position})
            assert [item["id"] for item in listed.json()["items"]] == ["alice"]
        assert set(thread_niceness(server.process.pid)) == {own}
        niceness = thread_niceness(children[0])
        # Its writer alone keeps the API's priority: it may hold the store's write lock.
        assert niceness.count(own) == 1
        assert set(niceness) == {own, own + 7}
        assert_stops_cleanly(server)


# Bytes the HTTP server cannot read as a request: uvicorn answers them before the app.
UNREADABLE_REQUESTS: Final = {
    "an over-long request line": b"GET /v1/health?" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n",
    "a NUL byte in a header": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    "a space in a header name": b"GET /v1/health HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "no HTTP at all": b"GARBAGE\r\n\r\n",
}
RAW_READ_TIMEOUT_SECONDS: Final = 10.0


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=RAW_READ_TIMEOUT_SECONDS) as raw:
        raw.sendall(request)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
        return answer


def test_requests_the_server_cannot_read_are_answered_as_problems(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as server:
        for what, request in UNREADABLE_REQUESTS.items():
            head, _, body = raw_exchange(server.port, request).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0] == "HTTP/1.1 400 Bad Request", (what, lines)
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            assert headers["content-type"] == "application/problem+json", (what, headers)
            assert int(headers["content-length"]) == len(body), what
            problem = json.loads(body)
            assert problem["code"] == "malformed_request", (what, problem)
            assert (problem["status"], problem["title"]) == (400, "Bad request"), what
        # The server goes on serving.
        assert httpx.get(f"{server.url}/v1/health", timeout=10).json() == {"status": "ok"}
        assert_stops_cleanly(server)


def test_sigterm_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as server, server.client(admin_key_of(server)) as client:
        for body in (
            {"id": ISSUER, "unit": UNIT, "allow_negative": True},
            {"id": "alice", "unit": UNIT},
        ):
            assert client.post("/v1/accounts", json=body).status_code == 201
        batch = {
            "atomic": True,
            "transfers": [
                {
                    "id": f"b{i}",
                    "debit_account_id": ISSUER,
                    "credit_account_id": "alice",
                    "amount": 1,
                }
                for i in range(1000)
            ],
        }
        answers: list[httpx.Response | BaseException] = []

        def send() -> None:
            try:
                answers.append(client.post("/v1/transfers/batch", json=batch))
            except BaseException as error:  # noqa: BLE001  # asserted below
                answers.append(error)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)  # the request is in flight (a 1,000-transfer batch takes a while)
        assert_stops_cleanly(server)
        sender.join(timeout=30)
        assert len(answers) == 1
        answer = answers[0]
        assert isinstance(answer, httpx.Response), answer
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 1000


# Concurrency -----------------------------------------------------------------------------

THREADS: Final = 16
CREDITS: Final = 40
ATTEMPTS_PER_THREAD: Final = 5  # 80 attempts for 40 credits
# How long the spenders may take in all to end (each failure is asserted).
SPENDERS_END_SECONDS: Final = 120.0


def test_16_client_threads_spend_exactly_the_affordable_credits(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as server:
        key = admin_key_of(server)
        with server.client(key) as client:
            for body in (
                {"id": ISSUER, "unit": UNIT, "allow_negative": True},
                {"id": "hot", "unit": UNIT},
                {"id": "sink", "unit": UNIT},
            ):
                assert client.post("/v1/accounts", json=body).status_code == 201
            funding = client.post(
                "/v1/transfers",
                json={
                    "id": "fund",
                    "debit_account_id": ISSUER,
                    "credit_account_id": "hot",
                    "amount": CREDITS,
                },
            )
            assert funding.status_code == 201

        start = threading.Barrier(THREADS)
        outcomes: list[tuple[int, str | None, int | None]] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def spend(thread: int) -> None:
            try:
                with server.client(key) as own:
                    start.wait(timeout=60)
                    for n in range(ATTEMPTS_PER_THREAD):
                        body = {
                            "id": f"spend:{thread}:{n}",
                            "debit_account_id": "hot",
                            "credit_account_id": "sink",
                            "amount": 1,
                        }
                        response = own.post("/v1/transfers", json=body)
                        answer = response.json()
                        outcome = (
                            response.status_code,
                            answer.get("code"),
                            answer.get("position") if response.status_code < 300 else None,
                        )
                        with lock:
                            outcomes.append(outcome)
            except BaseException as error:  # noqa: BLE001  # asserted below
                with lock:
                    failures.append(error)

        threads = [threading.Thread(target=spend, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        assert_all_end(threads, SPENDERS_END_SECONDS)
        assert not failures, failures
        assert len(outcomes) == THREADS * ATTEMPTS_PER_THREAD

        statuses = Counter(status for status, _, _ in outcomes)
        assert not [o for o in outcomes if o[0] >= 500], outcomes
        assert statuses[201] == CREDITS, statuses
        refused = {(status, code) for status, code, _ in outcomes if status != 201}
        assert refused == {(422, "insufficient_funds")}, refused

        last = max(p for _, _, p in outcomes if p is not None)
        with server.client(key) as client:
            balances = {
                name: client.get(f"/v1/accounts/{name}", params={"min_position": last}).json()[
                    "balance"
                ]
                for name in (ISSUER, "hot", "sink")
            }
        assert balances == {ISSUER: -CREDITS, "hot": 0, "sink": CREDITS}
        assert sum(balances.values()) == 0
        assert_stops_cleanly(server)
