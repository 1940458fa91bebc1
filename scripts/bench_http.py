"""HTTP benchmark of ``ledger serve`` against the framework's ceiling.

One run starts two servers on free loopback ports, each a single uvicorn process:

* ``ledger serve`` on the embedded default (SQLite files in a temp ``LEDGER_DATA_DIR``,
  projection workers in the same process), whose first-start admin key is read from
  its stdout;
* a minimal Litestar app, served by ``uvicorn.run`` exactly as ``ledger serve`` serves
  the ledger (one process, ``access_log=False``), whose one endpoint does nothing: it
  answers ``POST /v1/transfers`` and ``POST /v1/transfers/batch`` with ``{}`` without
  reading the body. That is the ceiling: what Litestar + uvicorn can do on this machine.

Then it opens a source account with ``allow_negative`` and many destination accounts,
and for each load shape (single transfers at 1, 8 and 64 concurrent clients; atomic
batches of 100 transfers at 1 and 8) runs the same load on the ceiling, then on the
ledger, each for a fixed duration after a short warm-up, and prints transfers/s, p50/p99
latency, server CPU per transfer and the ratio ledger / ceiling. After every ledger
phase it waits (bounded) for the projections to catch up, so one phase's backlog does not
slow the next. Every transfer debits the one source account: the hot-account case.

The load generator is built in: one asyncio process (uvloop) holding N keep-alive
connections that speak plain HTTP/1.1 (much lighter than an HTTP client library, which
matters when client and server share a small machine). It counts every response,
including those still in flight when the phase's time is up, so slow phases are not
under-counted. ``--client wrk`` uses ``wrk`` (Debian package ``wrk``) with a generated Lua
script instead (``--client auto``: wrk when it is on PATH); wrk drops the requests still
in flight at the end, which under-counts phases whose latency nears their duration.
``--tmp-root /dev/shm`` puts the data on tmpfs, which shows what fsync costs.

The write path's HTTP goals (against a naive column service, hot account, batches of
1,000, ``--workers 2`` vs ``1`` on PostgreSQL, where the projections run) are measured by
``scripts/bench_http_goals.py``, also run by ``bench_http.py --goals``.

Run from the repository root::

    .venv/bin/python scripts/bench_http.py --quick
    .venv/bin/python scripts/bench_http.py --seconds 5 --json var/bench_http.json
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any, Final

import httpx
import uvicorn
import uvloop

# Reserved until the server binds it: no other process's server can take it meanwhile.
from benchlib import free_port
from litestar import Litestar, post
from rich.console import Console
from rich.table import Table

HOST: Final = "127.0.0.1"
UNIT: Final = "CREDITS"
SOURCE: Final = "bench:src"
DESTINATION_PREFIX: Final = "bench:dst:"
SINGLE_PATH: Final = "/v1/transfers"
BATCH_PATH: Final = "/v1/transfers/batch"
START_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 20.0
CATCH_UP_TIMEOUT_SECONDS: Final = 120.0
# A phase that overruns its duration by this much is cut (a stuck server cannot hang us).
PHASE_GRACE_SECONDS: Final = 60.0
SAFE_TOKEN: Final = re.compile(r"^[A-Za-z0-9_:.\-]+$")
REPO: Final = Path(__file__).resolve().parent.parent

console = Console(width=max(180, Console().width))
log = Console(stderr=True)


# The ceiling: a Litestar app that does nothing ------------------------------------------


def serve_ceiling(port: int) -> None:
    """Serve the no-op app the way ``ledger serve`` serves the ledger (one process)."""

    @post([SINGLE_PATH, BATCH_PATH], status_code=201, sync_to_thread=False)
    async def nothing() -> dict[str, str]:
        return {}

    app = Litestar(route_handlers=[nothing], debug=False)
    uvicorn.run(
        app, host=HOST, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=30
    )


# Parameters and results -----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    seconds: float
    warmup_seconds: float
    single_concurrency: tuple[int, ...]
    batch_concurrency: tuple[int, ...]
    batch_size: int
    destinations: int
    client: str
    tmp_root: str | None


@dataclass(frozen=True)
class Shape:
    kind: str  # "single" | "batch"
    concurrency: int
    transfers_per_request: int

    @property
    def path(self) -> str:
        return SINGLE_PATH if self.kind == "single" else BATCH_PATH

    @property
    def label(self) -> str:
        if self.kind == "single":
            return "single"
        return f"batch of {self.transfers_per_request}"


@dataclass(frozen=True)
class Measured:
    """What a load generator saw in one phase."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Phase:
    target: str  # "ledger" | "ceiling"
    kind: str
    concurrency: int
    transfers_per_request: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    transfers_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_percent: float | None
    server_cpu_us_per_transfer: float | None
    client_cpu_percent: float | None
    statuses: dict[str, int]
    projection_catch_up_s: float | None = None


@dataclass
class Report:
    plan: dict[str, Any]
    machine: dict[str, Any]
    phases: list[Phase] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)


# Servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def tail(self, lines: int = 20) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server process (all its threads), from /proc."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(
    name: str, argv: Sequence[str], env: dict[str, str], workdir: Path, cwd: Path = REPO
) -> Iterator[Server]:
    """Start a server on a free port; SIGTERM it (then SIGKILL) on the way out, always."""
    port = free_port()
    stdout, stderr = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*argv, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    server = Server(name, process, port, stdout, stderr)
    try:
        wait_until_up(server)
        yield server
    finally:
        stop(server)


def stop(server: Server) -> None:
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        log.print(f"[yellow]{server.name} ignored SIGTERM for {STOP_TIMEOUT_SECONDS}s; killing")
        server.process.kill()
        server.process.wait()


def wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.tail()}"
            )
        try:
            with socket.create_connection((HOST, server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not listen within {START_TIMEOUT_SECONDS}s")


def admin_key(server: Server) -> str:
    """The key ``ledger serve`` prints on first start, alone on a line of its stdout."""
    lines = [line.strip() for line in server.stdout.read_text().splitlines() if line.strip()]
    keys = [line for line in lines if line.startswith("lk_")]
    if not keys:
        raise RuntimeError(f"ledger serve printed no API key; stdout was {lines!r}")
    return keys[-1]


def ledger_argv() -> list[str]:
    beside = Path(sys.executable).parent / "ledger"
    found = str(beside) if beside.exists() else shutil.which("ledger")
    if found is None:
        raise RuntimeError("the `ledger` command is not installed (pip install -e .)")
    return [found, "serve", "--host", HOST]


def ceiling_argv() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve-ceiling"]


# Setup and projections ------------------------------------------------------------------


def open_accounts(base_url: str, key: str, destinations: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [{"id": SOURCE, "unit": UNIT, "allow_negative": True}]
    bodies += [{"id": f"{DESTINATION_PREFIX}{n}", "unit": UNIT} for n in range(destinations)]

    async def open_all() -> None:
        limit = asyncio.Semaphore(8)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:

            async def open_one(body: dict[str, Any]) -> None:
                async with limit:
                    response = await client.post("/v1/accounts", json=body)
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"open {body['id']}: {response.status_code} {response.text}")

            await asyncio.gather(*(open_one(body) for body in bodies))

    asyncio.run(open_all())


def projection_lag(base_url: str) -> int | None:
    try:
        response = httpx.get(f"{base_url}/v1/ready", timeout=10)
        lag: int = response.json()["lag_positions"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return lag


def wait_for_projections(base_url: str) -> float | None:
    """Seconds until the views have caught up with the log (None: not within the bound)."""
    started = time.perf_counter()
    while time.perf_counter() - started < CATCH_UP_TIMEOUT_SECONDS:
        if projection_lag(base_url) == 0:
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


# Request bodies ---------------------------------------------------------------------------


class Bodies:
    """Request bodies with fresh transfer ids: ``<phase>-<connection>-<n>``."""

    def __init__(self, prefix: str, shape: Shape, destinations: int) -> None:
        self.prefix = prefix
        self.shape = shape
        self.destinations = destinations

    def item(self, connection: int, n: int) -> str:
        destination = (n * 7 + connection) % self.destinations
        return (
            f'{{"id":"{self.prefix}-{connection}-{n}","debit_account_id":"{SOURCE}",'
            f'"credit_account_id":"{DESTINATION_PREFIX}{destination}","amount":1}}'
        )

    def maker(self, connection: int) -> Callable[[], bytes]:
        counter = 0
        size = self.shape.transfers_per_request

        def make() -> bytes:
            nonlocal counter
            if self.shape.kind == "single":
                counter += 1
                return self.item(connection, counter).encode()
            items = []
            for _ in range(size):
                counter += 1
                items.append(self.item(connection, counter))
            return ('{"atomic":true,"transfers":[' + ",".join(items) + "]}").encode()

        return make


# The built-in load generator --------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def python_load(
    port: int, key: str, shape: Shape, bodies: Bodies, seconds: float
) -> Measured:
    head = (
        f"POST {shape.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def connection(number: int) -> None:
        nonlocal errors
        make = bodies.maker(number)
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < deadline:
                body = make()
                sent = time.perf_counter()
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - sent)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if not 200 <= status < 300:
                    errors += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    tasks = [asyncio.create_task(connection(n)) for n in range(shape.concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=seconds + PHASE_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            errors += 1
            statuses["socket_error"] = statuses.get("socket_error", 0) + 1
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Measured(
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        statuses=statuses,
    )


def run_python_load(port: int, key: str, shape: Shape, bodies: Bodies, seconds: float) -> Measured:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(python_load(port, key, shape, bodies, seconds))


# wrk --------------------------------------------------------------------------------------

WRK_SCRIPT: Final = """
local prefix = "{prefix}"
local destinations = {destinations}
local batch = {batch}
local counter = 0
local threads = {{}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local function item()
  counter = counter + 1
  local destination = (counter * 7 + tid) % destinations
  return '{{"id":"' .. prefix .. '-' .. tid .. '-' .. counter ..
    '","debit_account_id":"{source}","credit_account_id":"{dst}' .. destination ..
    '","amount":1}}'
end

function request()
  local body
  if batch == 0 then
    body = item()
  else
    local items = {{}}
    for i = 1, batch do items[i] = item() end
    body = '{{"atomic":true,"transfers":[' .. table.concat(items, ",") .. ']}}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
"""


def run_wrk(
    port: int, key: str, shape: Shape, prefix: str, destinations: int, seconds: float, workdir: Path
) -> Measured:
    for token in (prefix, key):
        if not SAFE_TOKEN.match(token):
            raise ValueError(f"unexpected characters in {token!r}")
    script = workdir / f"{prefix}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            prefix=prefix,
            destinations=destinations,
            batch=0 if shape.kind == "single" else shape.transfers_per_request,
            key=key,
            source=SOURCE,
            dst=DESTINATION_PREFIX,
        )
    )
    threads = min(shape.concurrency, os.cpu_count() or 1, 4)
    duration = max(1, round(seconds))
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{shape.concurrency}",
        f"-d{duration}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        f"http://{HOST}:{port}{shape.path}",
    ]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + PHASE_GRACE_SECONDS, check=False
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}{result.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return Measured(
        requests=raw["requests"],
        errors=raw["status"] + socket_errors,
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        statuses={"non_2xx_3xx": raw["status"], "socket_error": socket_errors},
    )


# Phases -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.phase_number = 0

    def load(self, server: Server, key: str, shape: Shape, seconds: float) -> Measured:
        self.phase_number += 1
        prefix = f"p{self.phase_number}-{server.name}"
        if self.plan.client == "wrk":
            return run_wrk(
                server.port, key, shape, prefix, self.plan.destinations, seconds, self.workdir
            )
        bodies = Bodies(prefix, shape, self.plan.destinations)
        return run_python_load(server.port, key, shape, bodies, seconds)

    def phase(self, server: Server, key: str, shape: Shape) -> Phase:
        if self.plan.warmup_seconds > 0:
            self.load(server, key, shape, self.plan.warmup_seconds)
            if server.name == "ledger":
                wait_for_projections(server.base_url)
        cpu_before = server.cpu_seconds()
        children_before = os.times()
        measured = self.load(server, key, shape, self.plan.seconds)
        children_after = os.times()
        cpu_after = server.cpu_seconds()
        client_cpu = (
            children_after.children_user
            + children_after.children_system
            - children_before.children_user
            - children_before.children_system
            + children_after.user
            + children_after.system
            - children_before.user
            - children_before.system
        )
        transfers = measured.requests * shape.transfers_per_request
        server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        seconds = measured.seconds
        return Phase(
            target=server.name,
            kind=shape.kind,
            concurrency=shape.concurrency,
            transfers_per_request=shape.transfers_per_request,
            requests=measured.requests,
            errors=measured.errors,
            seconds=round(seconds, 3),
            requests_per_s=round(measured.requests / seconds, 1),
            transfers_per_s=round(transfers / seconds, 1),
            p50_ms=round(measured.p50_ms, 2),
            p99_ms=round(measured.p99_ms, 2),
            server_cpu_percent=None if server_cpu is None else round(100 * server_cpu / seconds),
            server_cpu_us_per_transfer=(
                None if server_cpu is None or not transfers else round(1e6 * server_cpu / transfers)
            ),
            client_cpu_percent=round(100 * client_cpu / seconds),
            statuses=measured.statuses,
        )


def shapes(plan: Plan) -> list[Shape]:
    single = [Shape("single", c, 1) for c in plan.single_concurrency]
    batch = [Shape("batch", c, plan.batch_size) for c in plan.batch_concurrency]
    return single + batch


def run(plan: Plan, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-http-", dir=plan.tmp_root) as temp:
        workdir = Path(temp)
        env = {
            **os.environ,
            "LEDGER_DATA_DIR": str(workdir / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("LEDGER_EVENT_STORE", "LEDGER_READ_MODEL"):
            env.pop(name, None)  # the embedded default, whatever this shell says
        bench = Bench(plan, workdir)
        with (
            running("ceiling", ceiling_argv(), env, workdir) as ceiling,
            running("ledger", ledger_argv(), env, workdir) as ledger,
        ):
            key = admin_key(ledger)
            log.print(f"servers up: ledger {ledger.base_url}, ceiling {ceiling.base_url}")
            started = time.perf_counter()
            open_accounts(ledger.base_url, key, plan.destinations)
            log.print(
                f"opened 1 + {plan.destinations} accounts in {time.perf_counter() - started:.1f}s"
            )
            wait_for_projections(ledger.base_url)
            for shape in shapes(plan):
                for server in (ceiling, ledger):
                    log.print(f"{server.name}: {shape.label}, {shape.concurrency} clients …")
                    phase = bench.phase(server, key, shape)
                    if server is ledger:
                        phase.projection_catch_up_s = wait_for_projections(ledger.base_url)
                        if phase.projection_catch_up_s is not None:
                            phase.projection_catch_up_s = round(phase.projection_catch_up_s, 2)
                    report.phases.append(phase)
                    if server.process.poll() is not None:
                        raise RuntimeError(f"{server.name} died:\n{server.tail()}")
                report.ratios.append(ratio(report.phases[-1], report.phases[-2]))


def ratio(ledger: Phase, ceiling: Phase) -> dict[str, Any]:
    value = ledger.transfers_per_s / ceiling.transfers_per_s if ceiling.transfers_per_s else None
    return {
        "kind": ledger.kind,
        "concurrency": ledger.concurrency,
        "transfers_per_request": ledger.transfers_per_request,
        "ledger_transfers_per_s": ledger.transfers_per_s,
        "ceiling_transfers_per_s": ceiling.transfers_per_s,
        "ratio": None if value is None else round(value, 4),
    }


# Output -----------------------------------------------------------------------------------


def optional(value: float | None, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.0f}{suffix}"


def print_report(report: Report) -> None:
    table = Table(
        title=(
            f"HTTP API: ledger serve vs a no-op Litestar endpoint "
            f"({report.plan['seconds']:g}s per phase, client: {report.plan['client']}, "
            f"data under {report.plan['tmp_root'] or tempfile.gettempdir()})"
        )
    )
    for name in ("load", "clients", "target", "transfers/s", "requests/s", "p50 ms", "p99 ms"):
        table.add_column(name, justify="left" if name in ("load", "target") else "right")
    for name in ("errors", "server CPU", "CPU µs/transfer", "client CPU", "views catch-up"):
        table.add_column(name, justify="right")
    table.add_column("ledger / ceiling", justify="right", style="bold")
    by_key = {(r["kind"], r["concurrency"]): r for r in report.ratios}
    for phase in report.phases:
        shape = Shape(phase.kind, phase.concurrency, phase.transfers_per_request)
        found = by_key.get((phase.kind, phase.concurrency))
        share = (
            f"{found['ratio']:.1%}"
            if phase.target == "ledger" and found and found["ratio"] is not None
            else ""
        )
        catch_up = phase.projection_catch_up_s
        table.add_row(
            shape.label if phase.target == "ceiling" else "",
            str(phase.concurrency) if phase.target == "ceiling" else "",
            phase.target,
            f"{phase.transfers_per_s:,.0f}",
            f"{phase.requests_per_s:,.0f}",
            f"{phase.p50_ms:.2f}",
            f"{phase.p99_ms:.2f}",
            str(phase.errors),
            optional(phase.server_cpu_percent, "%"),
            optional(phase.server_cpu_us_per_transfer),
            optional(phase.client_cpu_percent, "%"),
            "" if phase.target == "ceiling" else ("—" if catch_up is None else f"{catch_up:.2f}s"),
            share,
            end_section=phase.target == "ledger",
        )
    console.print(table)
    machine = report.machine
    console.print(
        f"commit {machine['commit']}; {machine['cpus']} CPUs, "
        f"load average {machine['load_before']} before and "
        f"{machine['load_after']} after; Python {machine['python']}; "
        f"litestar {machine['litestar']}, uvicorn {machine['uvicorn']}"
    )


def markdown(report: Report) -> str:
    lines = [
        "| load | clients | ledger transfers/s | p50 ms | p99 ms | ceiling transfers/s "
        "| p50 ms | p99 ms | ledger / ceiling | ledger CPU µs/transfer | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    phases = report.phases
    for ceiling, ledger in zip(phases[::2], phases[1::2], strict=True):
        shape = Shape(ledger.kind, ledger.concurrency, ledger.transfers_per_request)
        share = ledger.transfers_per_s / ceiling.transfers_per_s if ceiling.transfers_per_s else 0
        lines.append(
            f"| {shape.label} | {ledger.concurrency} | {ledger.transfers_per_s:,.0f} "
            f"| {ledger.p50_ms:.2f} | {ledger.p99_ms:.2f} | {ceiling.transfers_per_s:,.0f} "
            f"| {ceiling.p50_ms:.2f} | {ceiling.p99_ms:.2f} | {share:.1%} "
            f"| {optional(ledger.server_cpu_us_per_transfer)} "
            f"| {ledger.errors + ceiling.errors} |"
        )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {}
    for name in ("litestar", "uvicorn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "?"
    return found


def git_commit() -> str:
    """The commit the servers ran (``+dirty`` when app/ or projections/ had local edits)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app", "projections"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


# Main -------------------------------------------------------------------------------------


def concurrency_list(text: str) -> tuple[int, ...]:
    values = tuple(int(x) for x in text.split(",") if x.strip())
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1s phases")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up before each phase")
    parser.add_argument("--clients", type=concurrency_list, default=(1, 8, 64))
    parser.add_argument("--batch-clients", type=concurrency_list, default=(1, 8))
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--destinations", type=int, default=None)
    parser.add_argument(
        "--client",
        choices=("python", "wrk", "auto"),
        default="python",
        help="load generator: built-in (default), wrk, or wrk when on PATH",
    )
    parser.add_argument(
        "--tmp-root",
        default=None,
        help="where the temp LEDGER_DATA_DIR is made (e.g. /dev/shm to take fsync out)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--serve-ceiling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> Plan:
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    elif client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not on PATH (apt-get install -y wrk), or use --client python")
    if not 1 <= args.batch_size <= 1000:
        raise SystemExit("--batch-size must be within 1..1000 (the API's batch limit)")
    seconds = 1.0 if args.quick else args.seconds
    if client == "wrk" and seconds < 1:
        raise SystemExit("wrk runs whole seconds: --seconds must be at least 1")
    default_warmup = 0.3 if args.quick else 1.0
    if client == "wrk":
        default_warmup = 1.0
    return Plan(
        seconds=seconds,
        warmup_seconds=default_warmup if args.warmup is None else args.warmup,
        single_concurrency=args.clients,
        batch_concurrency=args.batch_clients,
        batch_size=args.batch_size,
        destinations=args.destinations or (100 if args.quick else 1000),
        client=client,
        tmp_root=args.tmp_root,
    )


def terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped by the finally clauses."""

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if "--goals" in given:
        import bench_http_goals  # noqa: PLC0415  # only for this mode

        return bench_http_goals.main([a for a in given if a != "--goals"])
    args = parse(argv)
    if args.serve_ceiling:
        serve_ceiling(args.port)
        return 0
    terminate_on_sigterm()
    plan = plan_of(args)
    report = Report(
        plan=asdict(plan),
        machine={
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "commit": git_commit(),
            "load_before": load_average(),
            **versions(),
        },
    )
    try:
        run(plan, report)
    finally:
        report.machine["load_after"] = load_average()
    print_report(report)
    if args.markdown:
        console.print(markdown(report), soft_wrap=True, highlight=False, markup=False)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
        log.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
