"""Benchmark of the ledger core against the design it replaces (a naive balance column).

One run measures, on SQLite (a file in a temp dir, WAL and ``synchronous`` exactly as the
eventsourcing library leaves them) and on PostgreSQL (a throwaway server, ``fsync=on``):

* ledger transfers/s: single ``record_transfer`` commands on one thread; on 8 threads
  spread over separate accounts; on 8 threads all debiting one hot account; atomic
  batches of 100 and of 1,000 transfers;
* the baseline, a ``users(id, credits_remaining)`` table in the same database doing
  ``UPDATE users SET credits_remaining = credits_remaining - ? WHERE id = ? AND
  credits_remaining >= ?``: one committed transaction per spend, the same on 8 threads,
  and 100 / 1,000 updates per transaction;
* the ratios ledger / naive;
* (SQLite) the cost of a transfer debiting an account with 1M postings against a fresh
  account, in a warm process (aggregate cache) and from a new ``Ledger`` (cold cache:
  the newest snapshot plus at most one snapshot interval of events).

The write path's goals (SQLite batches against the ``executemany`` floor, PostgreSQL
batches against the naive two-UPDATE column on 8 connections) are measured by
``scripts/bench_goals.py``, also run by ``bench_core.py --goals``.

Run from the repository root::

    .venv/bin/python scripts/bench_core.py --quick
    .venv/bin/python scripts/bench_core.py --json var/bench.json
"""

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
from eventsourcing.sqlite import SQLiteApplicationRecorder
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.stores import event_store_env, sqlite_url
from tests.support.pgserver import running_postgres

UNIT: Final = "CREDITS"
FUNDING: Final = 10**15
SPEND: Final = 1
THREADS: Final = 8
BUILD_BATCH: Final = 1000

console = Console(width=max(150, Console().width))
log = Console(stderr=True)


ROWS: Final = (
    ("single", "single, 1 thread"),
    ("concurrent_spread", "single, 8 threads, spread"),
    ("concurrent_hot", "single, 8 threads, 1 hot account"),
    ("batch_100", "batches of 100"),
    ("batch_1000", "batches of 1,000"),
)


# Parameters and results --------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    users: int
    single: int
    concurrent_per_thread: int
    batches_100: int
    batches_1000: int
    naive_single: int
    hot_postings: int
    hot_samples: int
    cold_samples: int


@dataclass
class Rate:
    """``ops`` transfers (or spends) done in ``seconds`` of wall time."""

    ops: int
    seconds: float
    conflicts: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else float("inf")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "per_second": round(self.per_second, 1)}


@dataclass
class BackendResult:
    name: str
    ledger: dict[str, Rate] = field(default_factory=dict)
    naive: dict[str, Rate] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    round_ratios: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        return {
            key: self.ledger[key].per_second / self.naive[key].per_second
            for key in self.ledger
            if key in self.naive
        }


@dataclass
class Latencies:
    samples_ms: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return _percentile(self.samples_ms, 0.99)

    def as_json(self) -> dict[str, float | int]:
        return {
            "n": len(self.samples_ms),
            "mean_ms": round(self.mean, 3),
            "p50_ms": round(self.p50, 3),
            "p99_ms": round(self.p99, 3),
        }


@dataclass
class HotResult:
    postings: int
    build_seconds: float
    warm_hot: Latencies
    warm_fresh: Latencies
    cold_hot: Latencies
    cold_fresh: Latencies

    def as_json(self) -> dict[str, Any]:
        return {
            "postings": self.postings,
            "build_seconds": round(self.build_seconds, 1),
            "build_transfers_per_second": round(self.postings / self.build_seconds, 1)
            if self.build_seconds > 0
            else None,
            "warm_hot": self.warm_hot.as_json(),
            "warm_fresh": self.warm_fresh.as_json(),
            "warm_ratio_hot_over_fresh": round(self.warm_hot.mean / self.warm_fresh.mean, 3),
            "warm_ratio_hot_over_fresh_p50": round(self.warm_hot.p50 / self.warm_fresh.p50, 3),
            "cold_hot": self.cold_hot.as_json(),
            "cold_fresh": self.cold_fresh.as_json(),
            "cold_ratio_hot_over_fresh": round(self.cold_hot.mean / self.cold_fresh.mean, 3),
            "cold_ratio_hot_over_fresh_p50": round(self.cold_hot.p50 / self.cold_fresh.p50, 3),
        }


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# The ledger under test ------------------------------------------------------------------


class CountingLedger(Ledger):
    """The Ledger; its ``conflicts`` counts group writes that met a conflict (retries)."""

    name = "ledger"


def user_id(index: int) -> str:
    return f"user:{index}:credits"


def revenue_id(index: int) -> str:
    return f"revenue:{index}"


HOT_ID: Final = "user:hot:credits"


def set_up_ledger(ledger: Ledger, users: int) -> None:
    """Issuance (may go negative), ``users`` funded users, one hot user, revenue sinks."""
    ledger.open_account(OpenAccount("issuance", UNIT, allow_negative=True))
    for index in range(users):
        ledger.open_account(OpenAccount(user_id(index), UNIT))
    ledger.open_account(OpenAccount(HOT_ID, UNIT))
    for index in range(THREADS):
        ledger.open_account(OpenAccount(revenue_id(index), UNIT))
    grants = [RecordTransfer(f"grant:{i}", "issuance", user_id(i), FUNDING) for i in range(users)]
    grants.append(RecordTransfer("grant:hot", "issuance", HOT_ID, FUNDING))
    for start in range(0, len(grants), BUILD_BATCH):
        ledger.record_batch(grants[start : start + BUILD_BATCH], atomic=True)


def timed_singles(ledger: CountingLedger, commands: Sequence[RecordTransfer]) -> Rate:
    latencies: list[float] = []
    before = ledger.conflicts
    started = time.perf_counter()
    for command in commands:
        t0 = time.perf_counter()
        ledger.record_transfer(command)
        latencies.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - started
    return Rate(
        len(commands),
        seconds,
        conflicts=ledger.conflicts - before,
        p50_ms=round(statistics.median(latencies), 3),
        p99_ms=round(_percentile(latencies, 0.99), 3),
    )


def run_threads(work: Sequence[Callable[[], None]]) -> float:
    """Run each callable on its own thread, all released together; the wall time."""
    barrier = threading.Barrier(len(work) + 1)
    errors: list[BaseException] = []

    def body(job: Callable[[], None]) -> None:
        barrier.wait()
        try:
            job()
        except Exception as error:  # noqa: BLE001 - re-raised by the caller
            errors.append(error)

    threads = [threading.Thread(target=body, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} benchmark threads failed") from errors[0]
    return seconds


def timed_concurrent(
    ledger: CountingLedger, per_thread: Sequence[Sequence[RecordTransfer]]
) -> Rate:
    def job(commands: Sequence[RecordTransfer]) -> Callable[[], None]:
        def run() -> None:
            for command in commands:
                ledger.record_transfer(command)

        return run

    before = ledger.conflicts
    seconds = run_threads([job(commands) for commands in per_thread])
    total = sum(len(commands) for commands in per_thread)
    return Rate(total, seconds, conflicts=ledger.conflicts - before)


def timed_batches(ledger: CountingLedger, batches: Sequence[Sequence[RecordTransfer]]) -> Rate:
    before = ledger.conflicts
    started = time.perf_counter()
    for batch in batches:
        ledger.record_batch(batch, atomic=True)
    seconds = time.perf_counter() - started
    return Rate(sum(len(b) for b in batches), seconds, conflicts=ledger.conflicts - before)


Workload = Callable[[], Rate]


def ledger_workloads(ledger: CountingLedger, sizes: Sizes, tag: str) -> dict[str, Workload]:
    """Each workload of the ledger, ready to run; ``tag`` keeps transfer ids unique."""
    users = sizes.users

    def single() -> Rate:
        return timed_singles(
            ledger,
            [
                RecordTransfer(f"{tag}:single:{i}", user_id(i % users), revenue_id(0), SPEND)
                for i in range(sizes.single)
            ],
        )

    # Thread t debits its own slice of users and credits its own revenue account, so the
    # threads share no stream (they still share the store's single writer).
    per_user_slice = max(1, users // THREADS)

    def spread() -> Rate:
        return timed_concurrent(
            ledger,
            [
                [
                    RecordTransfer(
                        f"{tag}:spread:{t}:{i}",
                        user_id((t * per_user_slice + i % per_user_slice) % users),
                        revenue_id(t),
                        SPEND,
                    )
                    for i in range(sizes.concurrent_per_thread)
                ]
                for t in range(THREADS)
            ],
        )

    def hot() -> Rate:
        return timed_concurrent(
            ledger,
            [
                [
                    RecordTransfer(f"{tag}:hot:{t}:{i}", HOT_ID, revenue_id(t), SPEND)
                    for i in range(sizes.concurrent_per_thread)
                ]
                for t in range(THREADS)
            ],
        )

    def batches(size: int, count: int) -> Workload:
        def run() -> Rate:
            return timed_batches(
                ledger,
                [
                    [
                        RecordTransfer(
                            f"{tag}:batch{size}:{b}:{i}",
                            user_id((b * size + i) % users),
                            revenue_id(0),
                            SPEND,
                        )
                        for i in range(size)
                    ]
                    for b in range(count)
                ],
            )

        return run

    return {
        "single": single,
        "concurrent_spread": spread,
        "concurrent_hot": hot,
        "batch_100": batches(100, sizes.batches_100),
        "batch_1000": batches(1000, sizes.batches_1000),
    }


# The naive baseline ---------------------------------------------------------------------

NAIVE_SPEND_SQL_QMARK: Final = (
    "UPDATE users SET credits_remaining = credits_remaining - ? "
    "WHERE id = ? AND credits_remaining >= ?"
)
NAIVE_SPEND_SQL_PG: Final = (
    "UPDATE users SET credits_remaining = credits_remaining - %s "
    "WHERE id = %s AND credits_remaining >= %s"
)


class NaiveStore:
    """One connection to the same database, spending from ``users.credits_remaining``."""

    def spend(self, user: int, amount: int) -> None:
        raise NotImplementedError

    def spend_many(self, users: Sequence[int], amount: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteNaive(NaiveStore):
    def __init__(self, path: Path, synchronous: int) -> None:
        # Like the library: autocommit mode with explicit BEGIN, WAL, same lock timeout.
        self.connection = sqlite3.connect(
            path, isolation_level=None, timeout=30, check_same_thread=False
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(f"PRAGMA synchronous={int(synchronous)}")

    def spend(self, user: int, amount: int) -> None:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN")
        cursor.execute(NAIVE_SPEND_SQL_QMARK, (amount, user, amount))
        if cursor.rowcount != 1:
            raise RuntimeError("naive spend refused")
        self.connection.commit()

    def spend_many(self, users: Sequence[int], amount: int) -> None:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN")
        for user in users:
            cursor.execute(NAIVE_SPEND_SQL_QMARK, (amount, user, amount))
            if cursor.rowcount != 1:
                raise RuntimeError("naive spend refused")
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


class PostgresNaive(NaiveStore):
    def __init__(self, url: str) -> None:
        self.connection = psycopg.connect(url)

    def spend(self, user: int, amount: int) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(NAIVE_SPEND_SQL_PG, (amount, user, amount), prepare=True)
            if cursor.rowcount != 1:
                raise RuntimeError("naive spend refused")
        self.connection.commit()

    def spend_many(self, users: Sequence[int], amount: int) -> None:
        with self.connection.cursor() as cursor:
            for user in users:
                cursor.execute(NAIVE_SPEND_SQL_PG, (amount, user, amount), prepare=True)
                if cursor.rowcount != 1:
                    raise RuntimeError("naive spend refused")
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


def create_naive_table_sqlite(path: Path, users: int, synchronous: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={int(synchronous)}")
        connection.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, credits_remaining INTEGER NOT NULL)"
        )
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO users VALUES (?, ?)", [(i, FUNDING) for i in range(users + 1)]
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


def create_naive_table_postgres(url: str, users: int) -> None:
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, credits_remaining BIGINT NOT NULL)"
        )
        cursor.executemany(
            "INSERT INTO users VALUES (%s, %s)", [(i, FUNDING) for i in range(users + 1)]
        )


def naive_workloads(connect: Callable[[], NaiveStore], sizes: Sizes) -> dict[str, Workload]:
    users = sizes.users
    hot_user = users  # the extra row

    def single() -> Rate:
        store = connect()
        try:
            latencies: list[float] = []
            started = time.perf_counter()
            for i in range(sizes.naive_single):
                t0 = time.perf_counter()
                store.spend(i % users, SPEND)
                latencies.append((time.perf_counter() - t0) * 1000)
            seconds = time.perf_counter() - started
        finally:
            store.close()
        return Rate(
            sizes.naive_single,
            seconds,
            p50_ms=round(statistics.median(latencies), 3),
            p99_ms=round(_percentile(latencies, 0.99), 3),
        )

    def batches(size: int, count: int) -> Workload:
        def run() -> Rate:
            store = connect()
            try:
                started = time.perf_counter()
                for b in range(count):
                    store.spend_many([(b * size + i) % users for i in range(size)], SPEND)
                seconds = time.perf_counter() - started
            finally:
                store.close()
            return Rate(size * count, seconds)

        return run

    per_user_slice = max(1, users // THREADS)
    return {
        "single": single,
        "concurrent_spread": lambda: naive_concurrent(
            connect,
            sizes.concurrent_per_thread,
            lambda t, i: (t * per_user_slice + i % per_user_slice) % users,
        ),
        "concurrent_hot": lambda: naive_concurrent(
            connect, sizes.concurrent_per_thread, lambda _t, _i: hot_user
        ),
        "batch_100": batches(100, sizes.batches_100),
        "batch_1000": batches(1000, sizes.batches_1000),
    }


def naive_concurrent(
    connect: Callable[[], NaiveStore], per_thread: int, pick: Callable[[int, int], int]
) -> Rate:
    stores = [connect() for _ in range(THREADS)]

    def job(thread: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(per_thread):
                stores[thread].spend(pick(thread, i), SPEND)

        return run

    try:
        seconds = run_threads([job(t) for t in range(THREADS)])
    finally:
        for store in stores:
            store.close()
    return Rate(per_thread * THREADS, seconds)


# Backends -------------------------------------------------------------------------------


def library_sqlite_settings(ledger: Ledger) -> dict[str, str]:
    """journal_mode and synchronous as seen on the library's own connection."""
    recorder = ledger.recorder
    assert isinstance(recorder, SQLiteApplicationRecorder)
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = str(cursor.fetchone()[0])
        cursor.execute("PRAGMA synchronous")
        synchronous = str(cursor.fetchone()[0])
    return {"journal_mode": journal_mode, "synchronous": synchronous}


def run_rounds(
    result: BackendResult,
    ledger: CountingLedger,
    connect: Callable[[], NaiveStore],
    sizes: Sizes,
    rounds: int,
) -> None:
    """Each workload on the ledger and right after on the naive table, so that both see
    the same machine; ``rounds`` times over. Each side keeps its best round (the one
    least disturbed by whatever else the machine was doing); every round's ratio is
    kept too."""
    for round_number in range(rounds):
        log.print(f"  round {round_number + 1} of {rounds}")
        mine = ledger_workloads(ledger, sizes, tag=f"r{round_number}")
        theirs = naive_workloads(connect, sizes)
        for key, label in ROWS:
            log.print(f"    {label}")
            ledger_rate, naive_rate = mine[key](), theirs[key]()
            result.round_ratios.setdefault(key, []).append(
                round(ledger_rate.per_second / naive_rate.per_second, 4)
            )
            if key not in result.ledger or ledger_rate.per_second > result.ledger[key].per_second:
                result.ledger[key] = ledger_rate
            if key not in result.naive or naive_rate.per_second > result.naive[key].per_second:
                result.naive[key] = naive_rate


def bench_sqlite(workdir: Path, sizes: Sizes, rounds: int) -> BackendResult:
    log.rule("SQLite")
    path = workdir / "bench.sqlite"
    ledger = CountingLedger(event_store_env(sqlite_url(path)))
    try:
        settings = library_sqlite_settings(ledger)
        synchronous = int(settings["synchronous"])
        log.print(f"  library connection: {settings}; setting up {sizes.users} accounts")
        set_up_ledger(ledger, sizes.users)
        create_naive_table_sqlite(path, sizes.users, synchronous)
        result = BackendResult("sqlite", settings=settings)
        run_rounds(result, ledger, lambda: SQLiteNaive(path, synchronous), sizes, rounds)
    finally:
        ledger.close()
    return result


def bench_postgres(sizes: Sizes, rounds: int) -> BackendResult:
    log.rule("PostgreSQL")
    with running_postgres(fsync=True) as server:
        url = server.create_database("bench")
        with psycopg.connect(url) as connection:
            settings = {
                name: str(row[0])
                for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
                if (row := connection.execute(f"SHOW {name}").fetchone()) is not None
            }
        log.print(f"  server: {settings}; setting up {sizes.users} accounts")
        ledger = CountingLedger(event_store_env(url))
        try:
            set_up_ledger(ledger, sizes.users)
            create_naive_table_postgres(url, sizes.users)
            result = BackendResult("postgres", settings=settings)
            run_rounds(result, ledger, lambda: PostgresNaive(url), sizes, rounds)
        finally:
            ledger.close()
    return result


# Hot account vs fresh account -----------------------------------------------------------


@contextmanager
def fresh_ledger(url: str) -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(url))
    try:
        yield ledger
    finally:
        ledger.close()


def timed_one(ledger: Ledger, command: RecordTransfer) -> float:
    t0 = time.perf_counter()
    ledger.record_transfer(command)
    return (time.perf_counter() - t0) * 1000


def bench_hot_account(workdir: Path, sizes: Sizes) -> HotResult:
    log.rule(f"Hot account: {sizes.hot_postings:,} postings (SQLite)")
    url = sqlite_url(workdir / "hot.sqlite")
    samples, cold = sizes.hot_samples, sizes.cold_samples
    with fresh_ledger(url) as ledger:
        ledger.open_account(OpenAccount("issuance", UNIT, allow_negative=True))
        for account in (HOT_ID, "hot-sink", "probe-sink"):
            ledger.open_account(OpenAccount(account, UNIT))
        fresh_ids = [f"user:fresh:{k}" for k in range(cold + 1)]
        sink_ids = [f"sink:cold:{k}" for k in range(2 * cold)]
        for account in fresh_ids + sink_ids:
            ledger.open_account(OpenAccount(account, UNIT))
        funding = [
            RecordTransfer(f"fund:{account}", "issuance", account, FUNDING)
            for account in [HOT_ID, *fresh_ids]
        ]
        ledger.record_batch(funding, atomic=True)

        # 1M postings on the hot account: atomic batches of 1,000 transfers debiting it.
        started = time.perf_counter()
        built = 0
        next_report = started + 15
        while built < sizes.hot_postings:
            size = min(BUILD_BATCH, sizes.hot_postings - built)
            ledger.record_batch(
                [
                    RecordTransfer(f"build:{built + i}", HOT_ID, "hot-sink", SPEND)
                    for i in range(size)
                ],
                atomic=True,
            )
            built += size
            if time.perf_counter() >= next_report:
                elapsed = time.perf_counter() - started
                log.print(
                    f"  built {built:,} postings in {elapsed:.0f}s ({built / elapsed:,.0f}/s)"
                )
                next_report += 15
        build_seconds = time.perf_counter() - started
        log.print(f"  build done: {built:,} postings in {build_seconds:.1f}s")

        # Warm process: both accounts cached (fast-forward reads only the new events).
        log.print(f"  warm: {samples} transfers from the hot account, {samples} from a fresh one")
        warm_hot = [
            timed_one(ledger, RecordTransfer(f"warm:hot:{i}", HOT_ID, "probe-sink", SPEND))
            for i in range(samples)
        ]
        warm_fresh = [
            timed_one(ledger, RecordTransfer(f"warm:fresh:{i}", fresh_ids[-1], "probe-sink", SPEND))
            for i in range(samples)
        ]

    # Cold cache: a new Ledger per sample, so the debited account is loaded from its
    # newest snapshot plus the events after it. Each sample credits its own fresh sink.
    log.print(f"  cold: {cold} new Ledger instances each for the hot and a fresh account")
    cold_hot: list[float] = []
    cold_fresh: list[float] = []
    for k in range(cold):
        with fresh_ledger(url) as ledger:
            cold_hot.append(
                timed_one(ledger, RecordTransfer(f"cold:hot:{k}", HOT_ID, sink_ids[2 * k], SPEND))
            )
        with fresh_ledger(url) as ledger:
            cold_fresh.append(
                timed_one(
                    ledger,
                    RecordTransfer(f"cold:fresh:{k}", fresh_ids[k], sink_ids[2 * k + 1], SPEND),
                )
            )
    return HotResult(
        postings=built,
        build_seconds=build_seconds,
        warm_hot=Latencies(warm_hot),
        warm_fresh=Latencies(warm_fresh),
        cold_hot=Latencies(cold_hot),
        cold_fresh=Latencies(cold_fresh),
    )


# Report ---------------------------------------------------------------------------------


def _latency(rate: Rate | None) -> str:
    if rate is None or rate.p50_ms is None or rate.p99_ms is None:
        return ""
    return f"{rate.p50_ms:.2f} / {rate.p99_ms:.2f}"


def print_report(backends: Sequence[BackendResult], hot: HotResult | None) -> None:
    table = Table(title="Transfers per second: ledger vs naive credits_remaining column")
    table.add_column("backend")
    table.add_column("workload", no_wrap=True)
    table.add_column("ledger /s", justify="right")
    table.add_column("naive /s", justify="right")
    table.add_column("ledger / naive", justify="right")
    table.add_column("ratio per round", justify="right")
    table.add_column("ledger p50 / p99 ms", justify="right")
    table.add_column("naive p50 / p99 ms", justify="right")
    table.add_column("ledger retries", justify="right")
    for backend in backends:
        ratios = backend.ratios()
        for key, label in ROWS:
            if key not in backend.ledger:
                continue
            mine, theirs = backend.ledger[key], backend.naive.get(key)
            table.add_row(
                backend.name,
                label,
                f"{mine.per_second:,.0f}",
                f"{theirs.per_second:,.0f}" if theirs else "-",
                f"{ratios[key]:.2f}x" if key in ratios else "-",
                " ".join(f"{r:.2f}" for r in backend.round_ratios.get(key, [])),
                _latency(mine),
                _latency(theirs),
                str(mine.conflicts),
            )
        table.add_section()
    console.print(table)
    for backend in backends:
        console.print(f"{backend.name} settings: {backend.settings}")

    if hot is None:
        return
    hot_table = Table(
        title=f"One transfer debiting an account with {hot.postings:,} postings vs a fresh account"
    )
    hot_table.add_column("cache")
    hot_table.add_column("hot mean / p50 / p99 ms", justify="right")
    hot_table.add_column("fresh mean / p50 / p99 ms", justify="right")
    hot_table.add_column("hot / fresh (mean)", justify="right")
    hot_table.add_column("hot / fresh (p50)", justify="right")
    for label, on_hot, on_fresh in (
        (f"warm process ({len(hot.warm_hot.samples_ms)} each)", hot.warm_hot, hot.warm_fresh),
        (f"new Ledger ({len(hot.cold_hot.samples_ms)} each)", hot.cold_hot, hot.cold_fresh),
    ):
        hot_table.add_row(
            label,
            f"{on_hot.mean:.2f} / {on_hot.p50:.2f} / {on_hot.p99:.2f}",
            f"{on_fresh.mean:.2f} / {on_fresh.p50:.2f} / {on_fresh.p99:.2f}",
            f"{on_hot.mean / on_fresh.mean:.2f}x",
            f"{on_hot.p50 / on_fresh.p50:.2f}x",
        )
    console.print(hot_table)
    console.print(
        f"building {hot.postings:,} postings took {hot.build_seconds:.1f}s "
        f"({hot.postings / hot.build_seconds:,.0f} transfers/s in atomic batches of 1,000)"
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "code": code_version(),
    }


def code_version() -> str:
    """The commit measured, marked ``+dirty`` when app/ has uncommitted changes."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "app")
    return (commit or "unknown") + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return done.stdout.strip()


def to_json(
    sizes: Sizes,
    backends: Sequence[BackendResult],
    hot: HotResult | None,
    seconds: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "machine": machine(),
        "sizes": asdict(sizes),
        **extra,
        "total_seconds": round(seconds, 1),
        "backends": {
            b.name: {
                "settings": b.settings,
                "ledger": {k: r.as_json() for k, r in b.ledger.items()},
                "naive": {k: r.as_json() for k, r in b.naive.items()},
                "ratio_ledger_over_naive": {k: round(v, 3) for k, v in b.ratios().items()},
                "ratio_each_round": b.round_ratios,
            }
            for b in backends
        },
        "hot_account": hot.as_json() if hot else None,
    }


# Command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite,postgres"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="run the throughput workloads this many times, keep each one's best (default 3)",
    )
    parser.add_argument("--users", type=int, help="funded user accounts (default 1000)")
    parser.add_argument("--single", type=int, help="single ledger transfers (default 2000)")
    parser.add_argument(
        "--naive-single", type=int, help="single naive spends (default: as --single)"
    )
    parser.add_argument(
        "--concurrent", type=int, help="transfers per thread, 8 threads (default 250)"
    )
    parser.add_argument("--batches-100", type=int, help="batches of 100 (default 100)")
    parser.add_argument("--batches-1000", type=int, help="batches of 1,000 (default 20)")
    parser.add_argument(
        "--hot-postings", type=int, help="postings on the hot account (default 1,000,000; 0 skips)"
    )
    parser.add_argument("--hot-samples", type=int, help="warm transfers timed (default 500)")
    parser.add_argument("--cold-samples", type=int, help="new-Ledger transfers timed (default 20)")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    quick = bool(args.quick)

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    single = pick(args.single, 2000, 100)
    return Sizes(
        users=pick(args.users, 1000, 50),
        single=single,
        concurrent_per_thread=pick(args.concurrent, 250, 20),
        batches_100=pick(args.batches_100, 100, 3),
        batches_1000=pick(args.batches_1000, 20, 2),
        naive_single=pick(args.naive_single, single, single),
        hot_postings=pick(args.hot_postings, 1_000_000, 5_000),
        hot_samples=pick(args.hot_samples, 500, 50),
        cold_samples=pick(args.cold_samples, 20, 5),
    )


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if "--goals" in given:
        import bench_goals  # noqa: PLC0415  # only for this mode

        return bench_goals.main([a for a in given if a != "--goals"])
    args = parse_args(argv)
    sizes = sizes_from(args)
    wanted = {name.strip() for name in str(args.backends).split(",") if name.strip()}
    unknown = wanted - {"sqlite", "postgres"}
    if unknown:
        raise SystemExit(f"unknown backends: {sorted(unknown)}")
    rounds = int(args.rounds) if args.rounds is not None else (1 if args.quick else 3)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    backends: list[BackendResult] = []
    hot: HotResult | None = None
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        workdir = Path(tmp)
        if "sqlite" in wanted:
            backends.append(bench_sqlite(workdir, sizes, rounds))
        if "postgres" in wanted:
            backends.append(bench_postgres(sizes, rounds))
        if sizes.hot_postings > 0:
            hot = bench_hot_account(workdir, sizes)
    seconds = time.perf_counter() - started
    print_report(backends, hot)
    extra = {"rounds": rounds, "load_average_1m_at_start": round(load_before, 2)}
    console.print(f"machine: {machine()}; {extra}; total {seconds:.0f}s")
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_json(sizes, backends, hot, seconds, extra), indent=2) + "\n")
        console.print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
