"""CPU of ``ledger serve``'s event loop per write request, exactly, whatever the load.

The real app (``create_app`` on the real services, logging configured as ``ledger
serve`` configures it, its lines written to ``/dev/null``) is driven in process by
concurrent ASGI clients, with the ledger's group write stubbed: the committer's writer
thread answers every command at once with a prepared outcome. What is left on the event
loop is what a write request costs it: the request context (request id, access log
line, metrics), the route or the fast lane, the body's decoding and validation, the
hand-off to the committer and back, the answer's encoding. The figure is the loop
thread's CPU time (``time.thread_time``) per request, the minimum and median of several
rounds; uvicorn's own parsing and socket writes are not in it.

With ``--baseline-tree`` (a checkout of an older commit, e.g. ``git archive``) each round
runs both trees in fresh processes, alternating, and prints their ratio.

With ``--instructions`` the figure is instead the instructions the in-process run
executes per request (valgrind's cachegrind, every thread: the loop and the stubbed
writer's answers), from two runs of different lengths, so set-up cancels out: exact
whatever the machine's load, where the CPU time of identical rounds varies by a third.

Run from the repository root::

    .venv/bin/python scripts/bench_http_loop.py --baseline-tree /tmp/old
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import uvicorn
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import HOST, read_response
from benchlib import free_port, machine

from app import bootstrap
from app.api.app import create_app
from app.application.commands import OpenAccount, RecordTransfer
from app.bootstrap import build_services, configure_logging, shutdown
from app.compat import ProblemHttpToolsProtocol
from app.settings import Settings

REPO: Final = Path(__file__).resolve().parent.parent

ROUNDS: Final = 5
REQUESTS: Final = 2_000
CLIENTS: Final = 8
BATCH: Final = 1_000
ISSUER: Final = "bench:issuer"
ACCOUNTS: Final = 100
SHAPES: Final = ("single", "batch")
START_SECONDS: Final = 60.0
INSTRUCTIONS: Final = re.compile(r"I\s+refs:\s+([\d,]+)")
# The shorter of the two runs ``--instructions`` subtracts, as a fraction of the longer.
INSTRUCTIONS_SHORT_RUN: Final = 0.2
# Under valgrind everything is some fifty times slower: no write may time out.
INSTRUCTIONS_WRITE_TIMEOUT_SECONDS: Final = "300"  # the most the settings allow


def transfer_item(client: int, number: int) -> str:
    spot = (number * 7 + client * 131) % ACCOUNTS
    return (
        f'{{"id":"t-{client}-{number}","debit_account_id":"{ISSUER}",'
        f'"credit_account_id":"bench:{spot}","amount":1}}'
    )


def body_of(shape: str, client: int, number: int) -> bytes:
    if shape == "single":
        return transfer_item(client, number).encode()
    items = ",".join(transfer_item(client, number * BATCH + n) for n in range(BATCH))
    return ('{"atomic":true,"transfers":[' + items + "]}").encode()


def scope_of(path: str, key: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ],
        "state": {},
    }


async def request(app: Any, path: str, key: str, body: bytes) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # as a connection that stays open
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_of(path, key, body), receive, send)
    return status


def stub_writes(ledger: Any, outcome_of: Callable[[Any], Any]) -> None:
    """The committer's writer answers each command at once (no store write)."""

    def write_group(group: list[Any]) -> list[Any]:
        for entry in group:
            entry.answer(outcome_of(entry.command))
        return []

    ledger.committer._write_group = write_group


@contextlib.contextmanager
def stubbed_services() -> Iterator[Any]:
    """The services ``ledger serve`` builds (API only), logging as it configures it, the
    log lines going nowhere."""
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115  # the log lines' sink
    with tempfile.TemporaryDirectory(prefix="bench-http-loop-") as temp:
        settings = Settings(data_dir=Path(temp))
        configure_logging(settings)
        services = build_services(settings, projections=False)
        try:
            yield services
        finally:
            shutdown(services)


def run_tree(shape: str, requests: int, clients: int) -> float:
    """In this process (the tree on ``sys.path``): loop CPU µs per request."""
    with (
        stubbed_services() as services,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,  # as uvicorn's
    ):
        app = create_app(services)
        key = runner.run(stubbed(services, shape))
        as_served()
        return runner.run(_drive(app, key, shape, requests, clients))


def serve_tree(shape: str, port: int) -> None:
    """In this process: ``ledger serve``'s uvicorn, the write stubbed, until stopped;
    prints the key to use."""
    with stubbed_services() as services:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            key = runner.run(stubbed(services, shape))
        print(json.dumps({"key": key}), flush=True)
        as_served()
        config = uvicorn.Config(
            create_app(services),
            host=HOST,
            port=port,
            log_config=None,
            access_log=False,
            http=ProblemHttpToolsProtocol,  # as ``ledger serve``
        )
        uvicorn.Server(config).run()


def as_served() -> None:
    """What ``ledger serve`` does to its process once built, in the trees that do it."""
    settle = getattr(bootstrap, "settle_heap", None)
    if settle is not None:
        settle()


async def stubbed(services: Any, shape: str) -> str:
    """Accounts and one real answer of the shape's kind, then the write stubbed to give
    that answer at once; a key that may write."""
    ledger = services.ledger
    await ledger.open_account_async(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
    for n in range(ACCOUNTS):
        await ledger.open_account_async(OpenAccount(id=f"bench:{n}", unit="CREDITS"))
    sample = await ledger.record_transfer_async(
        RecordTransfer(id="sample", debit_account_id=ISSUER, credit_account_id="bench:0", amount=1)
    )
    batch = await ledger.record_batch_async(
        [
            RecordTransfer(
                id=f"sample-{n}", debit_account_id=ISSUER, credit_account_id="bench:0", amount=1
            )
            for n in range(BATCH)
        ],
        atomic=True,
    )
    stub_writes(ledger, lambda _: sample if shape == "single" else batch)
    key: str = services.keys.create(scope="admin")
    return key


def path_of(shape: str) -> str:
    return "/v1/transfers" if shape == "single" else "/v1/transfers/batch"


async def _drive(app: Any, key: str, shape: str, requests: int, clients: int) -> float:
    path = path_of(shape)
    # The first request verifies the key (the route), the rest find it verified.
    assert await request(app, path, key, body_of(shape, -1, 0)) in (200, 201)
    per_client = max(1, requests // clients)

    async def client(number: int) -> None:
        for n in range(per_client):
            status = await request(app, path, key, body_of(shape, number, n))
            assert status in (200, 201), status

    bodies_cpu = time.thread_time()
    for number in range(clients):
        for n in range(per_client):
            body_of(shape, number, n)
    bodies_cpu = time.thread_time() - bodies_cpu  # made again below: not the loop's cost
    started = time.thread_time()
    await asyncio.gather(*(client(number) for number in range(clients)))
    spent = time.thread_time() - started - bodies_cpu
    return spent * 1e6 / (per_client * clients)


async def _send_over_http(port: int, key: str, shape: str, requests: int, clients: int) -> None:
    head = (
        f"POST {path_of(shape)} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()
    per_client = max(1, requests // clients)

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for n in range(per_client):
                body = body_of(shape, number, n)
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status = await read_response(reader)
                assert status in (200, 201), status
        finally:
            writer.close()

    await asyncio.gather(*(client(number) for number in range(clients)))


def over_http(tree: Path, shape: str, requests: int, clients: int) -> float:
    """``ledger serve``'s uvicorn running ``tree`` in a fresh process, the write stubbed,
    driven over its socket from this one: its main thread's CPU µs per request."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", shape, "--port", str(port)]
    server = subprocess.Popen(argv, env=env, cwd=tree, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        key = json.loads(server.stdout.readline())["key"]
        wait_for_port(port)
        main_thread = Path(f"/proc/{server.pid}/task/{server.pid}/stat")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_send_over_http(port, key, shape, max(clients, requests // 5), clients))
            before = thread_cpu_seconds(main_thread)
            runner.run(_send_over_http(port, key, shape, requests, clients))
            spent = thread_cpu_seconds(main_thread) - before
        return spent * 1e6 / (max(1, requests // clients) * clients)
    finally:
        server.terminate()
        server.wait()


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {START_SECONDS}s")


def thread_cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_fresh_process(tree: Path, shape: str, requests: int, clients: int) -> float:
    """``run_tree`` in a fresh process running ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", shape]
    argv += ["--requests", str(requests), "--clients", str(clients)]
    done = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stdout}{done.stderr}")
    figure: float = json.loads(done.stdout.strip().splitlines()[-1])["loop_us"]
    return figure


def instructions(tree: Path, shape: str, requests: int, clients: int) -> int:
    """Instructions ``run_tree`` executes for ``requests`` in a fresh process running
    ``tree`` under valgrind (set-up included)."""
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    argv += [sys.executable, str(Path(__file__).resolve()), "--child", shape]
    argv += ["--requests", str(requests), "--clients", str(clients)]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    env["LEDGER_WRITE_TIMEOUT_SECONDS"] = INSTRUCTIONS_WRITE_TIMEOUT_SECONDS
    done = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, check=False)
    found = INSTRUCTIONS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{tree}: {done.stdout}{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def instructions_per_request(tree: Path, shape: str, requests: int, clients: int) -> float:
    """What one request adds to ``instructions``: two runs of different lengths."""
    short = max(clients, int(requests * INSTRUCTIONS_SHORT_RUN))
    longer, shorter = (instructions(tree, shape, n, clients) for n in (requests, short))
    per_client = (max(1, requests // clients), max(1, short // clients))
    return (longer - shorter) / ((per_client[0] - per_client[1]) * clients)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"of {','.join(SHAPES)}")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument(
        "--over-http",
        action="store_true",
        help="serve the app with uvicorn as `ledger serve` does and send the requests over "
        "its socket: the loop's CPU then includes uvicorn's parsing and the socket writes",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request (valgrind) instead of the loop's CPU time",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"loop_us": run_tree(args.child, args.requests, args.clients)}))
        return 0
    if args.serve:
        serve_tree(args.serve, args.port)
        return 0
    measure = over_http if args.over_http else in_fresh_process
    if args.instructions:
        measure = instructions_per_request
    trees = {"this": REPO}
    if args.baseline_tree is not None:
        trees["baseline"] = args.baseline_tree.resolve()
    for shape in str(args.shapes).split(","):
        requests = args.requests if shape == "single" else max(1, args.requests // 100)
        figures: dict[str, list[float]] = {name: [] for name in trees}
        for number in range(args.rounds):
            order = list(trees) if number % 2 == 0 else list(trees)[::-1]
            for name in order:
                figures[name].append(measure(trees[name], shape, requests, args.clients))
        unit = "request" if shape == "single" else f"batch of {BATCH:,}"
        what = "instructions" if args.instructions else "loop CPU µs"
        for name, values in figures.items():
            print(
                f"{shape}, {args.clients} clients: {name}: {what} per {unit}: min "
                f"{min(values):,.1f}, median {statistics.median(values):,.1f} "
                f"({', '.join(f'{v:,.0f}' for v in values)})"
            )
        if "baseline" in figures:
            new, old = figures["this"], figures["baseline"]
            print(
                f"{shape}: this / baseline: min {min(new) / min(old):.2f}, median "
                f"{statistics.median(new) / statistics.median(old):.2f}"
            )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
