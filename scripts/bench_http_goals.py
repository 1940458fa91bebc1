"""The HTTP goals of the write path (issue 9), each against a baseline measured in the same
run, alternating sides phase by phase:

* ``ledger serve`` on the embedded default (SQLite, projections in the process) against
  a naive Litestar service this script starts: one ``balances(id, credits_remaining)``
  table in a SQLite file (WAL, the library's synchronous setting), each transfer two
  ``UPDATE`` statements in one transaction, served by uvicorn the same way;
  single transfers spread over accounts at 1, 8 and 64 clients (goal at 8: at least
  1.0 times the naive service, p99 at most 30 ms, max at most 250 ms); 8 clients all
  spending from one hot account (goal: at least 2 times naive); atomic batches of
  1,000 from 1 client (goal: at least 8,000 transfers/s; ``--shapes batch2``: from 2
  clients, for the overlap of one batch's write with the next one's parsing).
* ``ledger serve --workers N --no-projections`` on PostgreSQL with the projections in a
  separate ``ledger project``: 8 clients on one hot account with ``--workers 2`` against
  ``--workers 1``, then ``ledger audit`` must pass and the hot account must show every
  acknowledged transfer exactly once.
* ``ledger serve --no-projections`` on PostgreSQL (``ledger project`` beside it) against a
  naive Litestar service on a database of the same PostgreSQL server (``--parts pg``): one
  ``balances`` row per account, two ``UPDATE`` statements and one commit per transfer, so
  a hot account's row lock is held to each commit's flush; 8 clients on one hot account
  and 8 spread, sides in turn, ratio printed (an additional report beside the embedded
  goal line).
* Where the projection workers run on the embedded default: as threads of
  ``ledger serve`` against a separate ``ledger project`` process (``serve
  --no-projections``), 8 clients, counting the time until the views have caught up.

Run from the repository root::

    .venv/bin/python scripts/bench_http_goals.py --seconds 5
"""

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import psycopg
import uvicorn
import uvloop
from litestar import Litestar, post
from litestar.exceptions import HTTPException

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_http import (
    HOST,
    REPO,
    Server,
    admin_key,
    ledger_argv,
    percentile,
    read_response,
    running,
    wait_for_projections,
)
from benchlib import (
    in_turn,
    machine,
    machine_busy_seconds,
    main_and_other_threads_cpu_seconds,
    postgres_server_cpu_seconds,
    tcp_counters,
    tcp_stall_counters_moved,
    tree_cpu_seconds,
)

from tests.support.pgserver import PostgresServer, running_postgres

UNIT: Final = "CREDITS"
HOT: Final = "bench:hot"
PREFIX: Final = "bench:acct:"
FUNDING: Final = 10**15
ACCOUNTS: Final = 1_000
BATCH: Final = 1_000
GOAL_SPREAD_RATIO: Final = 1.0
GOAL_P99_MS: Final = 30.0
GOAL_MAX_MS: Final = 250.0
GOAL_HOT_RATIO: Final = 2.0
GOAL_BATCH_PER_S: Final = 8_000.0
PHASE_GRACE_SECONDS: Final = 60.0


# The naive service -------------------------------------------------------------------------


def serve_naive(port: int, path: Path) -> None:
    local = threading.local()

    def connection() -> sqlite3.Connection:
        if not hasattr(local, "connection"):
            opened = sqlite3.connect(path, isolation_level=None, timeout=30)
            opened.execute("PRAGMA journal_mode=WAL")
            local.connection = opened
        found: sqlite3.Connection = local.connection
        return found

    def move(cursor: sqlite3.Cursor, item: dict[str, Any]) -> None:
        amount = int(item["amount"])
        cursor.execute(
            "UPDATE balances SET credits_remaining = credits_remaining - ? "
            "WHERE id = ? AND credits_remaining >= ?",
            (amount, item["debit_account_id"], amount),
        )
        if cursor.rowcount != 1:
            raise HTTPException(status_code=422, detail="insufficient_funds")
        cursor.execute(
            "UPDATE balances SET credits_remaining = credits_remaining + ? WHERE id = ?",
            (amount, item["credit_account_id"]),
        )

    def transaction(items: Sequence[dict[str, Any]]) -> None:
        cursor = connection().cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            for item in items:
                move(cursor, item)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    @post("/v1/accounts", status_code=201, sync_to_thread=True)
    def open_account(data: dict[str, Any]) -> dict[str, Any]:
        connection().execute("INSERT OR IGNORE INTO balances VALUES (?, ?)", (data["id"], FUNDING))
        return data

    @post("/v1/transfers", status_code=201, sync_to_thread=True)
    def transfer(data: dict[str, Any]) -> dict[str, Any]:
        transaction([data])
        return data

    @post("/v1/transfers/batch", status_code=200, sync_to_thread=True)
    def batch(data: dict[str, Any]) -> dict[str, Any]:
        transaction(data["transfers"])
        return {"results": len(data["transfers"])}

    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute(
            "CREATE TABLE IF NOT EXISTS balances (id TEXT PRIMARY KEY, credits_remaining INTEGER)"
        )
    app = Litestar(route_handlers=[open_account, transfer, batch], debug=False)
    uvicorn.run(app, host=HOST, port=port, log_config=None, access_log=False)


def naive_argv(path: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve-naive", str(path)]


# The naive service on PostgreSQL: one ``balances`` row per account, a transfer two
# ``UPDATE`` statements and one commit on the calling thread's own connection (the row
# lock of a hot account is held from the first UPDATE to the commit's flush: the ADR's
# complaint about the column).
NAIVE_PG_DEBIT: Final = (
    "UPDATE balances SET credits_remaining = credits_remaining - %s "
    "WHERE id = %s AND credits_remaining >= %s"
)
NAIVE_PG_CREDIT: Final = (
    "UPDATE balances SET credits_remaining = credits_remaining + %s WHERE id = %s"
)


def serve_naive_postgres(port: int, url: str) -> None:
    local = threading.local()

    def connection() -> psycopg.Connection[Any]:
        if not hasattr(local, "connection"):
            local.connection = psycopg.connect(url)
        found: psycopg.Connection[Any] = local.connection
        return found

    def move(cursor: psycopg.Cursor[Any], item: dict[str, Any]) -> None:
        amount = int(item["amount"])
        cursor.execute(NAIVE_PG_DEBIT, (amount, item["debit_account_id"], amount), prepare=True)
        if cursor.rowcount != 1:
            raise HTTPException(status_code=422, detail="insufficient_funds")
        cursor.execute(NAIVE_PG_CREDIT, (amount, item["credit_account_id"]), prepare=True)

    def transaction(items: Sequence[dict[str, Any]]) -> None:
        opened = connection()
        try:
            with opened.cursor() as cursor:
                for item in items:
                    move(cursor, item)
        except BaseException:
            opened.rollback()
            raise
        opened.commit()

    @post("/v1/accounts", status_code=201, sync_to_thread=True)
    def open_account(data: dict[str, Any]) -> dict[str, Any]:
        with connection().transaction():
            connection().execute(
                "INSERT INTO balances VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (data["id"], FUNDING),
            )
        return data

    @post("/v1/transfers", status_code=201, sync_to_thread=True)
    def transfer(data: dict[str, Any]) -> dict[str, Any]:
        transaction([data])
        return data

    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(
            "CREATE TABLE IF NOT EXISTS balances (id TEXT PRIMARY KEY, credits_remaining BIGINT)"
        )
    app = Litestar(route_handlers=[open_account, transfer], debug=False)
    uvicorn.run(app, host=HOST, port=port, log_config=None, access_log=False)


def naive_postgres_argv(url: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve-naive-postgres", url]


# Load ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    clients: int
    batch: int  # 0: single transfers
    hot: bool

    @property
    def path(self) -> str:
        return "/v1/transfers/batch" if self.batch else "/v1/transfers"


@dataclass(frozen=True)
class Request:
    """One request of a phase, where a stall can be matched to what else happened."""

    sent_at: float  # wall clock (time.time()) when its first byte was written
    after_s: float  # since the phase's start
    ms: float
    client: int
    on_connection: int  # its number on the client's connection (1: the first)

    def __str__(self) -> str:
        clock = time.strftime("%H:%M:%S", time.gmtime(self.sent_at))
        return (
            f"{self.ms:,.0f} ms, sent {self.after_s:.3f} s into the phase "
            f"({clock}.{int(self.sent_at % 1 * 1000):03d} UTC) by client {self.client} as "
            f"request {self.on_connection} on its connection"
        )


@dataclass(frozen=True)
class Result:
    transfers_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    created: int
    errors: int
    # CPU time per created transfer of the server process and of its children (the
    # ledger's projections child), in µs: what each side pays, whatever the machine's load.
    cpu_us: float = float("nan")
    children_cpu_us: float = float("nan")
    # Of ``cpu_us``: the server's main thread (``ledger serve``'s event loop).
    loop_cpu_us: float = float("nan")
    # This script's own CPU (the clients' side) per created transfer: with the server's,
    # what the two cores were asked for.
    client_cpu_us: float = float("nan")
    # The machine's cores kept busy during the phase (by every process, this one and the
    # naive service included): how near the two cores the phase ran.
    cores_busy: float = float("nan")
    # The phase's slowest request, and the connections its clients opened (one each, at
    # the start: a client never opens another) with the longest wait for one.
    slowest: Request | None = None
    connections: int = 0
    connect_max_ms: float = float("nan")


def bodies(prefix: str, shape: Shape, client: int) -> Callable[[], bytes]:
    counter = 0

    def item() -> str:
        nonlocal counter
        counter += 1
        spot = (counter * 7 + client * 131) % ACCOUNTS
        debit = HOT if shape.hot else f"{PREFIX}{spot}"
        credit = f"{PREFIX}{(spot + 1) % ACCOUNTS}"
        return (
            f'{{"id":"{prefix}-{client}-{counter}","debit_account_id":"{debit}",'
            f'"credit_account_id":"{credit}","amount":1}}'
        )

    def make() -> bytes:
        if not shape.batch:
            return item().encode()
        items = ",".join(item() for _ in range(shape.batch))
        return ('{"atomic":true,"transfers":[' + items + "]}").encode()

    return make


async def load(port: int, key: str, shape: Shape, prefix: str, seconds: float) -> Result:
    head = (
        f"POST {shape.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()
    latencies: list[float] = []
    created = errors = connections = 0
    connect_max = 0.0
    slowest: Request | None = None
    started = time.perf_counter()
    wall_offset = time.time() - started
    deadline = started + seconds

    async def client(number: int) -> None:
        nonlocal created, errors, connections, connect_max, slowest
        make = bodies(prefix, shape, number)
        connecting = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, port)
        connections += 1
        connect_max = max(connect_max, time.perf_counter() - connecting)
        sent_on_connection = 0
        try:
            while time.perf_counter() < deadline:
                body = make()
                sent = time.perf_counter()
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                sent_on_connection += 1
                status = await read_response(reader)
                latency = time.perf_counter() - sent
                latencies.append(latency)
                if slowest is None or latency * 1000 > slowest.ms:
                    slowest = Request(
                        sent + wall_offset,
                        sent - started,
                        latency * 1000,
                        number,
                        sent_on_connection,
                    )
                if 200 <= status < 300:
                    created += shape.batch or 1
                else:
                    errors += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    tasks = [asyncio.create_task(client(n)) for n in range(shape.clients)]
    await asyncio.wait(tasks, timeout=seconds + PHASE_GRACE_SECONDS)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Result(
        transfers_per_s=created / elapsed,
        p50_ms=percentile(ordered, 0.5) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        max_ms=(ordered[-1] if ordered else float("nan")) * 1000,
        created=created,
        errors=errors,
        slowest=slowest,
        connections=connections,
        connect_max_ms=connect_max * 1000,
    )


def measure(server: Server, key: str, shape: Shape, tag: str, seconds: float) -> Result:
    pid = server.process.pid
    children = child_pids(pid)
    own, theirs = cpu_seconds(pid), sum(map(cpu_seconds, children))
    main_thread = cpu_seconds(pid, f"/proc/{pid}/task/{pid}/stat")
    client = time.process_time()
    busy, started = machine_busy_seconds(), time.monotonic()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(load(server.port, key, shape, f"{tag}-{server.name}", seconds))
    busy, elapsed = machine_busy_seconds() - busy, time.monotonic() - started
    client = time.process_time() - client
    own, theirs = cpu_seconds(pid) - own, sum(map(cpu_seconds, children)) - theirs
    main_thread = cpu_seconds(pid, f"/proc/{pid}/task/{pid}/stat") - main_thread
    per_transfer = 1e6 / max(1, result.created)
    return replace(
        result,
        cpu_us=own * per_transfer,
        children_cpu_us=theirs * per_transfer,
        loop_cpu_us=main_thread * per_transfer,
        client_cpu_us=client * per_transfer,
        cores_busy=busy / elapsed,
    )


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_seconds(pid: int, stat: str = "") -> float:
    """User + system CPU of process ``pid`` (all its threads) so far, or of the one thread
    whose ``stat`` file is given; 0 once it is gone."""
    try:
        fields = Path(stat or f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_accounts(base_url: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    ids = [HOT, *(f"{PREFIX}{n}" for n in range(ACCOUNTS))]
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        for account_id in ids:
            body = {"id": account_id, "unit": UNIT, "allow_negative": True}
            response = client.post("/v1/accounts", json=body)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"open {account_id}: {response.status_code} {response.text}")


# What the server process and its children are, for the CPU figures: ``ledger serve``
# and its projections child on the embedded default; with ``--workers N`` the
# supervisor and its child processes: the API workers and, from decision 0035 on, their
# writer process (the projections run in ``ledger project``).
EMBEDDED_PROCESSES: Final = ("serve", "projections child")
WORKERS_PROCESSES: Final = ("supervisor", "API workers and writer")


def line(
    shape: Shape,
    ledger: Result,
    naive: Result | None,
    processes: tuple[str, str] = EMBEDDED_PROCESSES,
) -> str:
    ratio = ""
    if naive is not None:
        ratio = (
            f", naive {naive.transfers_per_s:,.0f}/s (p99 {naive.p99_ms:.1f} ms, max "
            f"{naive.max_ms:.0f} ms), ratio {ledger.transfers_per_s / naive.transfers_per_s:.2f}"
        )
    parent, children = processes
    cpu = f"; CPU µs/transfer: {parent} {ledger.cpu_us:,.0f}"
    if ledger.loop_cpu_us == ledger.loop_cpu_us and processes == EMBEDDED_PROCESSES:
        cpu += f" (event loop {ledger.loop_cpu_us:,.0f})"
    if ledger.children_cpu_us == ledger.children_cpu_us and ledger.children_cpu_us > 0:
        cpu += f" + {children} {ledger.children_cpu_us:,.0f}"
    if naive is not None:
        cpu += f", naive {naive.cpu_us:,.0f}"
    if ledger.client_cpu_us == ledger.client_cpu_us:
        cpu += f"; clients {ledger.client_cpu_us:,.0f}"
        if naive is not None:
            cpu += f" (naive's {naive.client_cpu_us:,.0f})"
    if ledger.cores_busy == ledger.cores_busy:
        cpu += f"; cores busy {ledger.cores_busy:.2f}"
        if naive is not None:
            cpu += f" (naive's {naive.cores_busy:.2f})"
        cpu += f" of {os.cpu_count()}"
    return (
        f"{shape.name}: ledger {ledger.transfers_per_s:,.0f}/s (p50 {ledger.p50_ms:.1f} ms, "
        f"p99 {ledger.p99_ms:.1f} ms, max {ledger.max_ms:.0f} ms, errors {ledger.errors})"
        + ratio
        + cpu
    )


def versus(pairs: Iterable[tuple[float, float]]) -> str:
    """Rates side by side, round by round: "a vs b = a/b", comma-separated."""
    return ", ".join(f"{a:,.0f} vs {b:,.0f} = {a / b:.2f}" for a, b in pairs)


# The embedded default ------------------------------------------------------------------------


# By the key ``--shapes`` names them.
EMBEDDED_SHAPES: Final = {
    "1": Shape("single, spread, 1 client", 1, 0, hot=False),
    "8": Shape("single, spread, 8 clients", 8, 0, hot=False),
    "64": Shape("single, spread, 64 clients", 64, 0, hot=False),
    "hot": Shape("single, 1 hot account, 8 clients", 8, 0, hot=True),
    "batch": Shape("atomic batches of 1,000, 1 client", 1, BATCH, hot=False),
    # Not a goal line: what a second client's batch overlapping the first's write gives
    # (the goal is the 1-client line, where parsing, writing and answering take turns).
    "batch2": Shape("atomic batches of 1,000, 2 clients", 2, BATCH, hot=False),
}


def labelled(shape: Shape, server: str) -> Shape:
    """The shape as a line names it: marked when the baseline's code served it."""
    return shape if server == "ledger" else replace(shape, name=f"{shape.name} [baseline]")


def embedded(
    seconds: float,
    warmup: float,
    shapes: Sequence[Shape],
    rounds: int,
    baseline: Path | None = None,
) -> list[str]:
    """Each shape against the naive service, naive first; with ``baseline`` (a checkout of
    an older commit, run through ``PYTHONPATH``) a third server runs that code, and it and
    this code take turns going second."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-goals-") as temp:
        workdir = Path(temp)
        env = {**os.environ, "LEDGER_DATA_DIR": str(workdir / "data"), "PYTHONUNBUFFERED": "1"}
        for name in ("LEDGER_EVENT_STORE", "LEDGER_READ_MODEL"):
            env.pop(name, None)
        with contextlib.ExitStack() as stack:
            naive = stack.enter_context(
                running("naive", naive_argv(workdir / "naive.sqlite"), env, workdir)
            )
            ledgers = [stack.enter_context(running("ledger", ledger_argv(), env, workdir))]
            if baseline is not None:
                old_env = {
                    **env,
                    "LEDGER_DATA_DIR": str(workdir / "baseline-data"),
                    "PYTHONPATH": str(baseline.resolve()),
                }
                # Run from the checkout: a child started with ``python -c`` imports from
                # its working directory first.
                ledgers.append(
                    stack.enter_context(
                        running("baseline", ledger_argv(), old_env, workdir, baseline.resolve())
                    )
                )
            keys = {ledger.name: admin_key(ledger) for ledger in ledgers}
            for ledger in ledgers:
                open_accounts(ledger.base_url, keys[ledger.name])
                wait_for_projections(ledger.base_url)
            open_accounts(naive.base_url, keys["ledger"])
            rounds_of_shapes = [shape for _ in range(rounds) for shape in shapes]
            for number, shape in enumerate(rounds_of_shapes):
                turn = ledgers if number % 2 == 0 else ledgers[::-1]
                results: dict[str, Result] = {}
                for server in (naive, *turn):  # alternating, naive first each time
                    key = keys.get(server.name, keys["ledger"])
                    measure(server, key, shape, f"w{number}", warmup)
                    results[server.name] = measure(server, key, shape, f"m{number}", seconds)
                    if server is not naive:
                        wait_for_projections(server.base_url)
                for ledger in turn:
                    label = labelled(shape, ledger.name)
                    lines.append(line(label, results[ledger.name], results["naive"]))
                    print(lines[-1], flush=True)
    return lines


# Where the projections run on the embedded default ----------------------------------------------


def projections_placement(seconds: float, warmup: float, rounds: int) -> list[str]:
    """8 clients of single transfers on ``ledger serve`` with the projection workers as
    threads of the API process, against ``ledger serve --no-projections`` beside a
    ``ledger project`` process (what a child process of ``serve`` would be), alternating;
    each phase ends when the views have caught up, so both sides pay for projecting."""
    shape = Shape("single, spread, 8 clients", 8, 0, hot=False)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as temp:
        workdir = Path(temp)
        env = {**os.environ, "LEDGER_DATA_DIR": str(workdir / "data"), "PYTHONUNBUFFERED": "1"}
        for name in ("LEDGER_EVENT_STORE", "LEDGER_READ_MODEL"):
            env.pop(name, None)
        key = keys_create(env)
        rates: dict[str, list[float]] = {"threads": [], "process": []}
        for round_number in range(rounds):
            for placement in ("threads", "process"):
                argv = (
                    ledger_argv()
                    if placement == "threads"
                    else [*ledger_argv(), "--no-projections"]
                )
                with contextlib.ExitStack() as stack:
                    if placement == "process":
                        stack.enter_context(projector(env, workdir))
                    api = stack.enter_context(running(f"serve-{placement}", argv, env, workdir))
                    if round_number == 0 and placement == "threads":
                        open_accounts(api.base_url, key)
                    measure(api, key, shape, f"pw{round_number}{placement}", warmup)
                    started = time.perf_counter()
                    result = measure(api, key, shape, f"pm{round_number}{placement}", seconds)
                    caught_up = wait_for_projections(api.base_url)
                    elapsed = time.perf_counter() - started
                    # Writes per second of wall time until the views hold them all.
                    rates[placement].append(result.created / elapsed)
                    print(
                        f"projections as {placement}: {line(shape, result, None)}; views "
                        f"caught up {caught_up if caught_up is None else round(caught_up, 2)}s "
                        "after the phase",
                        flush=True,
                    )
        lines.append(
            "embedded default, 8 clients, transfers/s until the views caught up: projections "
            "in a separate process vs as threads of serve: "
            + versus(zip(rates["process"], rates["threads"], strict=True))
        )
    return lines


# Several processes on PostgreSQL ------------------------------------------------------------


def keys_create(env: dict[str, str], cwd: Path = REPO) -> str:
    argv = [ledger_argv()[0], "keys", "create", "--scope", "admin"]
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def projector(
    env: dict[str, str], workdir: Path, name: str = "", cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    with (workdir / f"project{name and '-' + name}.log").open("wb") as log:
        process = subprocess.Popen(
            [ledger_argv()[0], "project"], env=env, cwd=cwd, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


# By the key ``--workers-shapes`` names them.
WORKERS_SHAPES: Final = {
    "8": Shape("single, spread, 8 clients", 8, 0, hot=False),
    "64": Shape("single, spread, 64 clients", 64, 0, hot=False),
    "hot": Shape("single, 1 hot account, 8 clients", 8, 0, hot=True),
}


WORKERS_START_SECONDS: Final = 120.0
# Each side's warm-up runs on this many connections (at least): the kernel hands a few
# connections to the worker processes unevenly (7 of 8 to one was common), and a worker
# that warmed up on one connection met most accounts for the first time inside the
# measured window, reading each from the store (about 1.7 ms of CPU each at 1,000
# accounts). With many connections every worker's cache holds the accounts, as in a
# server that has run a while.
WORKERS_WARM_CLIENTS: Final = 64


def wait_for_workers(server: Server, count: int) -> None:
    """Until every worker process has started (the port answers as soon as one has)."""
    deadline = time.monotonic() + WORKERS_START_SECONDS
    while server.stderr.read_text(errors="replace").count("Application startup complete") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: not all {count} workers started\n{server.tail()}")
        time.sleep(0.1)


WORKERS_SPLIT_AFTER: Final = 1.0


def clients_per_worker(api: Server, after_seconds: float) -> str:
    """How the kernel spread the clients' connections over the worker processes (each
    has a listening socket of its own, hashed over: decision 0029), as seen
    ``after_seconds`` into the measurement."""
    time.sleep(after_seconds)
    listed = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"sport = :{api.port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    counts = Counter(re.findall(r"pid=(\d+)", listed))
    return "/".join(str(count) for _, count in counts.most_common()) or "?"


def postgres_cpu_seconds(server: PostgresServer) -> float:
    """User + system CPU of the PostgreSQL server so far (``benchlib``)."""
    assert server.datadir is not None, "a server running_postgres started"
    return postgres_server_cpu_seconds(server.datadir)


def postgres_env(url: str, workdir: Path) -> dict[str, str]:
    """The environment of ``ledger`` commands on the database at ``url``."""
    return {
        **os.environ,
        "LEDGER_EVENT_STORE": url,
        "LEDGER_READ_MODEL": url,
        "LEDGER_DATA_DIR": str(workdir / "data"),
        "PYTHONUNBUFFERED": "1",
    }


def ledger_audit(env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``ledger audit`` run to its end (exit 0: the log and the views agree)."""
    argv = [ledger_argv()[0], "audit"]
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)


def correctness(
    base_url: str, key: str, env: dict[str, str], acknowledged: int, cwd: Path = REPO
) -> str:
    """After the phases, of the ledger served at ``base_url``: its views caught up, its
    ``ledger audit``, and its hot account's debits against the transfers acknowledged on
    it (the projector still runs: the views catch up before the audit compares them)."""
    caught_up = wait_for_projections(base_url)
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        hot = client.get(f"{base_url}/v1/accounts/{HOT}").json()
    audit = ledger_audit(env, cwd)
    if audit.returncode != 0:
        print(audit.stdout[-4000:], audit.stderr[-2000:], flush=True)
    return (
        f"views caught up {caught_up is not None}; ledger audit exit {audit.returncode}; "
        f"hot account debits_posted {hot['debits_posted']:,} for {acknowledged:,} "
        "acknowledged transfers"
    )


@dataclass
class PgLedger:
    """A ledger side of the PostgreSQL part: its own database, key, API and projector."""

    name: str
    env: dict[str, str]
    cwd: Path
    key: str = ""
    acknowledged: int = 0  # on the hot account


def pg_ledgers(
    server: PostgresServer, workdir: Path, baseline: Path | None, database: str
) -> list[PgLedger]:
    """This code's ledger side on a new database named ``database``; with ``baseline``
    (a checkout of an older commit, run through ``PYTHONPATH``) that code's, on a
    database of its own."""
    ledgers = [PgLedger("ledger", postgres_env(server.create_database(database), workdir), REPO)]
    if baseline is not None:
        env = postgres_env(server.create_database("baseline"), workdir / "baseline")
        env["PYTHONPATH"] = str(baseline.resolve())
        ledgers.append(PgLedger("baseline", env, baseline.resolve()))
    return ledgers


def workers(
    seconds: float,
    warmup: float,
    rounds: int,
    baseline: Path | None = None,
    shapes: Sequence[Shape] = tuple(WORKERS_SHAPES.values()),
) -> list[str]:
    """Each shape with ``--workers 1`` and ``--workers 2``, in turn: one first in even
    rounds, two first in odd ones (``benchlib.in_turn``). With ``baseline`` (a checkout of
    an older commit, run through ``PYTHONPATH``) that code too, on a database of its own
    with its own projector, its phases in turn with this code's."""
    lines: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as temp,
        running_postgres(fsync=True) as server,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(temp)
        ledgers = pg_ledgers(server, workdir, baseline, "workers")
        for side in ledgers:
            side.key = keys_create(side.env, side.cwd)
            stack.enter_context(projector(side.env, workdir, side.name, side.cwd))
        results: dict[tuple[str, str, int], list[Result]] = {}
        opened: set[str] = set()
        for round_number in range(rounds):
            for number, shape in enumerate(shapes):
                turns = [(side, count) for side in ledgers for count in (1, 2)]
                for side, count in in_turn(turns, round_number):
                    result, created = workers_phase(
                        side,
                        count,
                        shape,
                        f"{round_number}{number}",
                        seconds,
                        warmup,
                        server,
                        workdir,
                        first=side.name not in opened,
                    )
                    opened.add(side.name)
                    results.setdefault((side.name, shape.name, count), []).append(result)
                    side.acknowledged += created if shape.hot else 0
        for side in ledgers:
            argv = [*ledger_argv(), "--no-projections"]
            with running(f"check-{side.name}", argv, side.env, workdir, side.cwd) as api:
                checked = correctness(api.base_url, side.key, side.env, side.acknowledged, side.cwd)
            for shape in shapes:
                ones, twos = results[side.name, shape.name, 1], results[side.name, shape.name, 2]
                lines.append(
                    f"PostgreSQL, {side.name}, --workers 2 vs --workers 1, {shape.name}: "
                    + versus(
                        (two.transfers_per_s, one.transfers_per_s)
                        for one, two in zip(ones, twos, strict=True)
                    )
                )
            lines.append(f"correctness, {side.name}: {checked}")
        if baseline is not None:
            for shape in shapes:
                for count in (1, 2):
                    mine, theirs = (
                        results["ledger", shape.name, count],
                        results["baseline", shape.name, count],
                    )
                    lines.append(
                        f"PostgreSQL, --workers {count}, ledger vs baseline, {shape.name}: "
                        + versus(
                            (a.transfers_per_s, b.transfers_per_s)
                            for a, b in zip(mine, theirs, strict=True)
                        )
                    )
    return lines


def workers_phase(
    side: PgLedger,
    count: int,
    shape: Shape,
    tag: str,
    seconds: float,
    warmup: float,
    server: PostgresServer,
    workdir: Path,
    *,
    first: bool,
) -> tuple[Result, int]:
    """One side's ``serve --workers count`` started, warmed up and measured; its line
    printed. Returns the measured result and the transfers created (warm-up included).
    ``first``: the side's accounts are opened first."""
    argv = [*ledger_argv(), "--no-projections", "--workers", str(count)]
    name = f"{side.name}-workers{count}"
    with running(name, argv, side.env, workdir, side.cwd) as api:
        wait_for_workers(api, count)
        if first:
            open_accounts(api.base_url, side.key)
        warming = replace(shape, clients=max(shape.clients, WORKERS_WARM_CLIENTS))
        warm = measure(api, side.key, warming, f"wu{tag}{count}", warmup)
        # With one worker the API process is serve itself; with more, its children.
        api_pids = [api.process.pid] if count == 1 else child_pids(api.process.pid)
        cpu_before = tree_cpu_seconds(api.process.pid)
        threads_before = main_and_other_threads_cpu_seconds(api_pids)
        server_before = postgres_cpu_seconds(server)
        load_before = os.getloadavg()[0]
        tcp_before = tcp_counters()
        window = time.time()
        database = urlsplit(side.env["LEDGER_EVENT_STORE"]).path.lstrip("/")
        sessions_before = postgres_sessions(server, database)
        with ThreadPoolExecutor(max_workers=1) as pool:
            split = pool.submit(clients_per_worker, api, WORKERS_SPLIT_AFTER)
            result = measure(api, side.key, shape, f"wm{tag}{count}", seconds)
        cpu = tree_cpu_seconds(api.process.pid) - cpu_before
        loops, others = (
            after - before
            for after, before in zip(
                main_and_other_threads_cpu_seconds(api_pids), threads_before, strict=True
            )
        )
        server_cpu = postgres_cpu_seconds(server) - server_before
        tcp_moved = tcp_stall_counters_moved(tcp_before, tcp_counters())
        opened_in_phase = postgres_backends_since(server, database, window)
        sessions = postgres_sessions(server, database) - sessions_before
        slow_lines = slow_access_lines(api, window)
    per_transfer_ms = 1000 / max(1, result.created)
    print(
        f"{side.name}, workers {count}: {line(shape, result, None, WORKERS_PROCESSES)}; "
        "serve CPU (all its processes) "
        f"{cpu * per_transfer_ms:.2f} ms per transfer (the API workers' event loops "
        f"{loops * per_transfer_ms:.2f}, their other threads: committers and helpers "
        f"{others * per_transfer_ms:.2f}), PostgreSQL server "
        f"{server_cpu * per_transfer_ms:.2f} ms; cores busy: serve "
        f"{cpu / seconds:.2f}, PostgreSQL {server_cpu / seconds:.2f} of "
        f"{os.cpu_count()}; clients per worker {split.result()}; load "
        f"average {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(f"  {stall_line(result, tcp_moved, opened_in_phase, sessions, slow_lines)}", flush=True)
    return result, warm.created + result.created


# A request this slow is a stall: the phase's line says where it may have come from.
STALL_MS: Final = 500.0


def stall_line(
    result: Result, tcp_moved: str, opened_in_phase: int, sessions: int, slow_lines: list[str]
) -> str:
    """What a phase tells about its slowest request: when and on which connection it was
    sent; the TCP counters that moved (``benchlib.TCP_STALL_COUNTERS``); the connections
    the clients opened (all at the start) and the new ones on the side's database (still
    open at the end, and every session begun meanwhile, closed ones included: serve's and
    its projector's); the server's access
    lines of requests over ``STALL_MS`` (its own time: a request the server answered fast
    but the client waited long for was held up between them)."""
    server_side = "; ".join(slow_lines) or "none"
    return (
        f"slowest request {result.slowest}; TCP counters {tcp_moved}; client connections "
        f"{result.connections} (longest connect {result.connect_max_ms:.0f} ms); PostgreSQL "
        f"connections to the side's database opened during the phase {opened_in_phase} "
        f"still open, {sessions} sessions begun; server's access lines over "
        f"{STALL_MS:.0f} ms: {server_side}"
    )


def postgres_backends_since(server: PostgresServer, database: str, since: float) -> int:
    """Client backends on ``database`` that began at or after ``since`` (wall clock) and
    are still open."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND datname = %s AND backend_start >= to_timestamp(%s)",
            (database, since),
        ).fetchone()
    assert row is not None, "count(*) returns a row"
    return int(row[0])


def postgres_sessions(server: PostgresServer, database: str) -> int:
    """Sessions begun so far on ``database`` (``pg_stat_database``): a session counts
    once its backend has reported, at the latest when it ends."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        row = connection.execute(
            "SELECT sum(sessions) FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    assert row is not None, "sum() returns a row"
    return int(row[0] or 0)


ACCESS_MS = re.compile(r'"ms": ?([0-9.]+)')
ACCESS_TIMESTAMP = re.compile(r'"timestamp": ?"([^"]+)"')


def slow_access_lines(server: Server, since: float) -> list[str]:
    """The server's access lines (its stderr) written at or after ``since`` (wall clock)
    of requests that took it ``STALL_MS`` or more."""
    found = []
    for text in server.stderr.read_text(errors="replace").splitlines():
        took, stamp = ACCESS_MS.search(text), ACCESS_TIMESTAMP.search(text)
        if took is None or stamp is None or float(took.group(1)) < STALL_MS:
            continue
        if datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00")).timestamp() >= since:
            found.append(text.strip())
    return found


# The hot account on PostgreSQL, against the column's row lock ---------------------------------


# By the key ``--pg-shapes`` names them.
PG_SHAPES: Final = {
    "hot": Shape("PostgreSQL, single, 1 hot account, 8 clients", 8, 0, hot=True),
    "8": Shape("PostgreSQL, single, spread, 8 clients", 8, 0, hot=False),
}


@dataclass(frozen=True)
class PgPhase:
    """One side's measured phase on PostgreSQL, with the CPU it cost per transfer (ms)."""

    result: Result
    serve_ms: float
    server_ms: float
    projector_ms: float = float("nan")
    warm_created: int = 0


def pg_line(shape: Shape, ledger: PgPhase, naive: PgPhase) -> str:
    def cpu(phase: PgPhase) -> str:
        projector = (
            f" + ledger project {phase.projector_ms:.2f}"
            if phase.projector_ms == phase.projector_ms
            else ""
        )
        return f"serve {phase.serve_ms:.2f}{projector}, PostgreSQL server {phase.server_ms:.2f}"

    mine, theirs = ledger.result, naive.result
    return (
        f"{shape.name}: ledger {mine.transfers_per_s:,.0f}/s (p50 {mine.p50_ms:.1f} ms, p99 "
        f"{mine.p99_ms:.1f} ms, max {mine.max_ms:.0f} ms, errors {mine.errors}), naive "
        f"{theirs.transfers_per_s:,.0f}/s (p99 {theirs.p99_ms:.1f} ms, max "
        f"{theirs.max_ms:.0f} ms, errors {theirs.errors}), ratio "
        f"{mine.transfers_per_s / theirs.transfers_per_s:.2f}; CPU ms/transfer: ledger "
        f"{cpu(ledger)}; naive {cpu(naive)}"
    )


def pg_phase(
    api: Server,
    key: str,
    shape: Shape,
    tag: str,
    server: PostgresServer,
    project: subprocess.Popen[bytes] | None,
    seconds: float,
    warmup: float,
    *,
    paused: bool = False,
) -> PgPhase:
    """One side's warm-up and measured phase; with ``project`` (a ledger's projector),
    each ends when the views have caught up. ``paused``: the projector is stopped
    (SIGSTOP) during the measured phase and catches up after it, its CPU still counted:
    what the write path does with both cores to itself."""
    warm = measure(api, key, shape, f"pw{tag}", warmup)
    if project is not None:
        wait_for_projections(api.base_url)
    serve_before = tree_cpu_seconds(api.process.pid)
    server_before = postgres_cpu_seconds(server)
    project_before = cpu_seconds(project.pid) if project else 0.0
    if paused and project is not None:
        project.send_signal(signal.SIGSTOP)
    try:
        result = measure(api, key, shape, f"pm{tag}", seconds)
    finally:
        if paused and project is not None:
            project.send_signal(signal.SIGCONT)
    serve_cpu = tree_cpu_seconds(api.process.pid) - serve_before
    if project is not None:
        wait_for_projections(api.base_url)
    per_transfer_ms = 1000 / max(1, result.created)
    return PgPhase(
        result,
        serve_cpu * per_transfer_ms,
        (postgres_cpu_seconds(server) - server_before) * per_transfer_ms,
        (cpu_seconds(project.pid) - project_before) * per_transfer_ms if project else float("nan"),
        warm.created,
    )


def pg_checks(
    ledgers: Sequence[PgLedger], apis: dict[str, Server], naive_url: str, naive_acknowledged: int
) -> list[str]:
    """After the phases: each ledger's views caught up, its audit, its hot account against
    the transfers acknowledged on it; the naive hot row against its acknowledged ones."""
    lines: list[str] = []
    for side in ledgers:
        checked = correctness(
            apis[side.name].base_url, side.key, side.env, side.acknowledged, side.cwd
        )
        lines.append(f"PostgreSQL correctness, {side.name}: {checked}")
    with psycopg.connect(naive_url) as connection:
        row = connection.execute(
            "SELECT credits_remaining FROM balances WHERE id = %s", (HOT,)
        ).fetchone()
    naive_debits = FUNDING - int(row[0]) if row is not None else -1
    lines.append(
        f"PostgreSQL correctness, naive: hot row down by {naive_debits:,} for "
        f"{naive_acknowledged:,} acknowledged transfers"
    )
    return lines


def postgres_part(
    seconds: float,
    warmup: float,
    shapes: Sequence[Shape],
    rounds: int,
    baseline: Path | None = None,
    *,
    paused: bool = False,
) -> list[str]:
    """``ledger serve --no-projections`` (a ``ledger project`` beside it) against the naive
    service, each on its own database of the same PostgreSQL server (fsync on, the
    server's ``synchronous_commit``), sides in turn (``benchlib.in_turn``). A ledger's
    phase ends when its views have caught up, so that its projector's CPU is counted with
    it and does not run into the next side's phase. With ``baseline`` (a checkout of an
    older commit, run through ``PYTHONPATH``) a second ledger runs that code beside."""
    lines: list[str] = []
    naive_acknowledged = 0
    with (
        tempfile.TemporaryDirectory(prefix="bench-pg-") as temp,
        running_postgres(fsync=True) as server,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(temp)
        ledgers = pg_ledgers(server, workdir, baseline, "ledger")
        naive_url = server.create_database("naive")
        apis: dict[str, Server] = {}
        projectors: dict[str, subprocess.Popen[bytes]] = {}
        for side in ledgers:
            side.key = keys_create(side.env, side.cwd)
            projectors[side.name] = stack.enter_context(
                projector(side.env, workdir, side.name, side.cwd)
            )
            argv = [*ledger_argv(), "--no-projections"]
            apis[side.name] = stack.enter_context(
                running(side.name, argv, side.env, workdir, side.cwd)
            )
            open_accounts(apis[side.name].base_url, side.key)
            wait_for_projections(apis[side.name].base_url)
        naive = stack.enter_context(
            running("naive", naive_postgres_argv(naive_url), ledgers[0].env, workdir)
        )
        open_accounts(naive.base_url, ledgers[0].key)
        by_name = {side.name: side for side in ledgers}
        for number, shape in enumerate(s for _ in range(rounds) for s in shapes):
            phases: dict[str, PgPhase] = {}
            # In even rounds the naive service first, then this code, then the baseline's;
            # in odd rounds the other way round.
            sides = [naive, *(apis[side.name] for side in ledgers)]
            turn = in_turn(sides, number // len(shapes))
            for api in turn:
                mine = by_name.get(api.name)
                project = projectors.get(api.name)
                phase = pg_phase(
                    api,
                    (mine or ledgers[0]).key,
                    shape,
                    f"{number}",
                    server,
                    project,
                    seconds,
                    warmup,
                    paused=paused,
                )
                phases[api.name] = phase
                acknowledged = phase.warm_created + phase.result.created
                if shape.hot and mine is not None:
                    mine.acknowledged += acknowledged
                elif shape.hot:
                    naive_acknowledged += acknowledged
            for side in ledgers:
                label = labelled(shape, side.name)
                if paused:
                    label = replace(label, name=f"{label.name} [projector paused]")
                lines.append(pg_line(label, phases[side.name], phases["naive"]))
                print(f"{lines[-1]}; load average {os.getloadavg()[0]:.1f}", flush=True)
        lines += pg_checks(ledgers, apis, naive_url, naive_acknowledged)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="workers rounds (1 and 2 workers, in turn)"
    )
    parser.add_argument("--parts", default="embedded,workers,placement")
    parser.add_argument(
        "--shapes",
        default=",".join(EMBEDDED_SHAPES),
        help=f"embedded shapes, of {','.join(EMBEDDED_SHAPES)}",
    )
    parser.add_argument(
        "--embedded-rounds", type=int, default=1, help="embedded: the shapes this many times"
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="embedded, workers and pg: also run the ledger from this checkout (e.g. `git "
        "archive` of an older commit), through PYTHONPATH, alternating with this code",
    )
    parser.add_argument(
        "--pg-shapes",
        default=",".join(PG_SHAPES),
        help=f"pg: the shapes, of {','.join(PG_SHAPES)}",
    )
    parser.add_argument(
        "--workers-shapes",
        default=",".join(WORKERS_SHAPES),
        help=f"workers: the shapes, of {','.join(WORKERS_SHAPES)}",
    )
    parser.add_argument(
        "--pg-pause-projector",
        action="store_true",
        help="pg: stop each ledger's projector during its measured phases (it catches up "
        "after, its CPU still counted): the write path with both cores to itself",
    )
    parser.add_argument("--serve-naive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-naive-postgres", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_naive is not None:
        serve_naive(args.port, args.serve_naive)
        return 0
    if args.serve_naive_postgres is not None:
        serve_naive_postgres(args.port, args.serve_naive_postgres)
        return 0
    parts = {part.strip() for part in str(args.parts).split(",")}
    lines: list[str] = []
    if "embedded" in parts:
        shapes = [EMBEDDED_SHAPES[key.strip()] for key in str(args.shapes).split(",")]
        lines += embedded(
            args.seconds, args.warmup, shapes, args.embedded_rounds, args.baseline_tree
        )
    if "workers" in parts:
        chosen = [WORKERS_SHAPES[key.strip()] for key in str(args.workers_shapes).split(",")]
        lines += workers(args.seconds, args.warmup, args.rounds, args.baseline_tree, chosen)
    if "pg" in parts:
        pg_shapes = [PG_SHAPES[key.strip()] for key in str(args.pg_shapes).split(",")]
        lines += postgres_part(
            args.seconds,
            args.warmup,
            pg_shapes,
            args.rounds,
            args.baseline_tree,
            paused=args.pg_pause_projector,
        )
    if "placement" in parts:
        lines += projections_placement(args.seconds, args.warmup, args.rounds)
    print("\n".join(lines))
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
