"""Several writer processes on one PostgreSQL event store, without HTTP (issue 9).

The write path of ``ledger serve --workers N`` alone: 8 threads of single transfers in
one process against 4 threads in each of two processes (each process with its own
ledger, committer and cache, as each worker of ``serve`` has), PostgreSQL with fsync
on, sides alternating round by round (one process first in even rounds, two first in odd
ones: ``--rounds 2`` or more for a fair ratio). Each process warms its cache first; only what
is acknowledged inside the measured window counts. Two shapes: transfers spread over
many accounts, and every transfer spending from one hot account.

Printed per side: transfers/s and the ratio, the writers' CPU and the PostgreSQL
server's CPU per transfer (what the machine pays, whatever its load), group writes per
second and their mean size, conflicts, writes under the write lock (decision 0018),
the most races one command lost, and the load average. After the rounds: the hot
account's debits equal the acknowledged hot transfers, it never went below zero, and
the legs balance.

Run from the repository root::

    .venv/bin/python scripts/bench_workers.py --seconds 5 --rounds 3
"""

import argparse
import multiprocessing
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from benchlib import in_turn, machine, postgres_server_cpu_seconds
from psycopg.sql import SQL, Literal

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import LedgerError
from tests.conftest import store_env
from tests.support.pgserver import PostgresServer, running_postgres

UNIT: Final = "CREDITS"
HOT: Final = "bench:hot"
ISSUANCE: Final = "bench:issuance"
ACCOUNTS: Final = 200
FUNDS: Final = 10**12
THREADS_IN_ALL: Final = 8
START_SECONDS: Final = 120.0
SPAWN_SECONDS: Final = 15.0
SIDES: Final = (1, 2)  # writer processes


@dataclass(frozen=True)
class Counts:
    """What one writer process did inside the measured window."""

    acknowledged: int
    hot_acknowledged: int
    failed: int
    failures: dict[str, int]
    cpu_seconds: float
    groups: int
    conflicts: int
    locked_writes: int
    most_races_lost: int


def account(number: int) -> str:
    return f"bench:acct:{number}"


@dataclass(frozen=True)
class Window:
    start_at: float  # wall clock: when the senders start
    warmup: float
    seconds: float


def warm_up(ledger: Ledger, tag: str) -> None:
    """As in a worker that has run a while: every account in the writer's cache (one
    batch touching each), not read from its snapshot inside the measured window."""
    try:
        ledger.record_batch(
            [
                RecordTransfer(f"{tag}:warm:hot", ISSUANCE, HOT, 1),
                *(
                    RecordTransfer(f"{tag}:warm:{number}", ISSUANCE, account(number), 1)
                    for number in range(ACCOUNTS)
                ),
            ],
            atomic=True,
        )
    except LedgerError as error:  # a loaded machine: the window starts less warm
        print(f"{tag}: the cache warm-up failed: {error.code}", flush=True)


def writer(url: str, hot: bool, threads: int, tag: str, window_at: Window, out: Any) -> None:
    """One writer process: ``threads`` closed-loop senders through one ledger."""
    with Ledger(store_env(url)) as ledger:
        start_at = window_at.start_at
        measured_from = start_at + window_at.warmup
        measured_to = measured_from + window_at.seconds
        counted = [0, 0, 0]  # acknowledged, of them on the hot account, failed
        lock = threading.Lock()
        window: dict[str, float] = {}
        failures: Counter[str] = Counter()

        def send(thread: int) -> None:
            chooser = random.Random(f"{tag}:{thread}")  # a workload, not secrets
            number = 0
            while (now := time.time()) < measured_to:
                number += 1
                spot = chooser.randrange(ACCOUNTS)
                credit = account(spot)
                debit = (
                    HOT if hot else account((spot + 1 + chooser.randrange(ACCOUNTS - 1)) % ACCOUNTS)
                )
                command = RecordTransfer(f"{tag}:{thread}:{number}", debit, credit, 1)
                try:
                    ledger.record_transfer(command)
                    ok = True
                except LedgerError as error:
                    ok = False
                    failures[error.code] += 1
                if now >= measured_from and time.time() < measured_to:
                    with lock:
                        counted[0 if ok else 2] += 1
                        counted[1] += 1 if ok and hot else 0

        def snapshot(key: str) -> None:
            window[f"{key}:cpu"] = time.process_time()
            window[f"{key}:groups"] = ledger.committer.groups_written
            window[f"{key}:conflicts"] = ledger.conflicts
            window[f"{key}:locked"] = ledger.locked_writes

        def timer() -> None:
            time.sleep(max(0.0, measured_from - time.time()))
            snapshot("from")
            time.sleep(max(0.0, measured_to - time.time()))
            snapshot("to")

        clock = threading.Thread(target=timer)
        warm_up(ledger, tag)
        late = time.time() - start_at
        if late > 0:
            print(f"{tag}: the cache was warm {late:.1f} s after the start", flush=True)
        time.sleep(max(0.0, start_at - time.time()))
        clock.start()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(send, range(threads)))
        clock.join()
        out.put(
            Counts(
                acknowledged=counted[0],
                hot_acknowledged=counted[1],
                failed=counted[2],
                failures=dict(failures),
                cpu_seconds=window["to:cpu"] - window["from:cpu"],
                groups=int(window["to:groups"] - window["from:groups"]),
                conflicts=int(window["to:conflicts"] - window["from:conflicts"]),
                locked_writes=int(window["to:locked"] - window["from:locked"]),
                most_races_lost=ledger.most_races_lost,
            )
        )


def postgres_cpu_seconds(server: PostgresServer) -> float:
    assert server.datadir is not None, "a server running_postgres started"
    return postgres_server_cpu_seconds(server.datadir)


def side(
    server: PostgresServer, url: str, processes: int, hot: bool, window: Window, tag: str
) -> tuple[list[Counts], float]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    threads = THREADS_IN_ALL // processes
    # Spawned processes import the app and open their ledger first: all start together.
    window = Window(time.time() + SPAWN_SECONDS, window.warmup, window.seconds)
    children = [
        context.Process(target=writer, args=(url, hot, threads, f"{tag}:{n}", window, out))
        for n in range(processes)
    ]
    for child in children:
        child.start()
    time.sleep(max(0.0, window.start_at + window.warmup - time.time()))
    server_before = postgres_cpu_seconds(server)
    time.sleep(window.seconds)
    server_cpu = postgres_cpu_seconds(server) - server_before
    counts = [out.get(timeout=START_SECONDS) for _ in children]
    for child in children:
        child.join(START_SECONDS)
    return counts, server_cpu


def line(processes: int, counts: list[Counts], server_cpu: float, seconds: float) -> str:
    acknowledged = sum(c.acknowledged for c in counts)
    groups = sum(c.groups for c in counts)
    per = 1000 / max(1, acknowledged)
    return (
        f"{processes} process(es) x {THREADS_IN_ALL // processes} threads: "
        f"{acknowledged / seconds:,.0f} transfers/s, failed {sum(c.failed for c in counts)} "
        f"{sum((Counter(c.failures) for c in counts), Counter()).most_common()}; "
        f"CPU ms per transfer: writers {sum(c.cpu_seconds for c in counts) * per:.2f}, "
        f"PostgreSQL {server_cpu * per:.2f}; groups {groups / seconds:,.0f}/s of "
        f"{acknowledged / max(1, groups):.1f}; conflicts {sum(c.conflicts for c in counts)}, "
        f"locked writes {sum(c.locked_writes for c in counts)}, most races lost "
        f"{max(c.most_races_lost for c in counts)}; load average {os.getloadavg()[0]:.1f}"
    )


def prepare(url: str) -> None:
    with Ledger(store_env(url)) as ledger:
        ledger.open_account(OpenAccount(ISSUANCE, UNIT, allow_negative=True))
        ledger.open_account(OpenAccount(HOT, UNIT))
        for number in range(ACCOUNTS):
            ledger.open_account(OpenAccount(account(number), UNIT, allow_negative=True))
        ledger.record_transfer(RecordTransfer("fund", ISSUANCE, HOT, FUNDS))


def check(url: str, hot_acknowledged: int) -> str:
    with Ledger(store_env(url)) as ledger:
        hot = ledger.get_account(HOT)
        legs = sum(
            ledger.get_account(a).balance
            for a in [ISSUANCE, HOT, *(account(n) for n in range(ACCOUNTS))]
        )
    spent = hot.debits_posted
    return (
        f"correctness: hot account debits_posted {spent:,} (at least the {hot_acknowledged:,} "
        f"acknowledged inside the windows; warm-ups and window edges add the rest), balance "
        f"{hot.balance:,} >= 0: {hot.balance >= 0}; balances sum to {legs} (0: legs balance)"
    )


def phases(rounds: int, shapes: Sequence[str]) -> list[tuple[int, str, int]]:
    """What is measured, in order: (round, shape, writer processes); within each round
    and shape the sides take turns going first (``benchlib.in_turn``)."""
    return [
        (round_number, shape, processes)
        for round_number in range(rounds)
        for shape in shapes
        for processes in in_turn(SIDES, round_number)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shapes", default="spread,hot")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds each process writes before the window"
    )
    parser.add_argument(
        "--synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="PostgreSQL's synchronous_commit for the run (off: a commit does not wait for "
        "its flush; a durability choice, see docs/operations.md)",
    )
    args = parser.parse_args(argv)
    shapes = [shape.strip() for shape in str(args.shapes).split(",")]
    ratios: dict[str, list[str]] = {shape: [] for shape in shapes}
    hot_acknowledged = 0
    with running_postgres(fsync=True) as server:
        url = server.create_database("workers")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                SQL("ALTER DATABASE workers SET synchronous_commit = {}").format(
                    Literal(args.synchronous_commit)
                )
            )
        prepare(url)
        rates: dict[tuple[int, str], dict[int, float]] = {}
        for round_number, shape, processes in phases(args.rounds, shapes):
            tag = f"r{round_number}:{shape}:{processes}"
            window = Window(0.0, args.warmup, args.seconds)
            counts, server_cpu = side(server, url, processes, shape == "hot", window, tag)
            hot_acknowledged += sum(c.hot_acknowledged for c in counts)
            rate = rates.setdefault((round_number, shape), {})
            rate[processes] = sum(c.acknowledged for c in counts) / args.seconds
            print(f"{shape}, {line(processes, counts, server_cpu, args.seconds)}")
            if len(rate) == len(SIDES):
                ratios[shape].append(f"{rate[2]:,.0f} vs {rate[1]:,.0f} = {rate[2] / rate[1]:.2f}")
        print(check(url, hot_acknowledged))
    for shape, rounds in ratios.items():
        print(
            f"PostgreSQL in process (synchronous_commit {args.synchronous_commit}), 2 writer "
            f"processes vs 1, {shape}: " + "; ".join(rounds)
        )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
