"""Benchmark of the read side: projection catch-up throughput and as-of query latency.

One run:

* builds an event log in SQLite (``Ledger.record_batch`` atomic batches of 1,000
  transfers; the build time is reported) holding ``--events`` events (default
  1,000,000, about 333k transfers: each transfer is three events) plus the histories
  of the "hot" accounts (``--hot-entries``, one balance-changing event per entry:
  the hot account is on one side of every transfer of its batches; default 1k and
  100k, and ``--hot-entries 1000,100000,1000000`` for the 1M history, which takes
  about twice as long: see docs/benchmarks.md);
* catch-up throughput: a fresh projection runner (``projections.runner.start_runner``)
  projects the log from position zero into a SQLite read model, and then into a
  PostgreSQL read model (a throwaway server, ``fsync=on``); events/s over the first
  ``--events`` positions. The event store is SQLite for both (the same log, so the two
  figures differ by the read model only), unless ``--pg-event-store`` rebuilds the
  log in PostgreSQL for the PostgreSQL read model;
* as-of latency: ``balance_at_position`` and ``balance_as_of`` (``--queries`` random
  instants each, after a warm-up) on each hot account, p50 / p99, and the ratio
  p50(largest history) / p50(smallest history) — goal <= 1.5: an as-of query is an
  index lookup whose cost does not grow with the account's history.

The SQLite read model projects the whole log (hot histories beyond ``--events``
included, so every hot account can be queried); the PostgreSQL one stops at
``--events`` and is queried for the hot accounts whose history lies within.

Run from the repository root::

    .venv/bin/python scripts/bench_projections.py --quick
    .venv/bin/python scripts/bench_projections.py --json var/bench_projections.json
    .venv/bin/python scripts/bench_projections.py --hot-entries 1000,100000,1000000
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import git_commit, machine
from eventsourcing.persistence import Tracking

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.read_model import AccountFilter
from app.application.views import AccountView
from app.domain.account import Account
from app.persistence.stores import event_store_env, sqlite_url
from projections.backends import PostgresLedgerView
from projections.reader import _account as account_of
from projections.reader import joined_search, rarest_pair_search
from projections.runner import open_view, start_runner
from projections.schema import APPLICATION_NAME
from projections.views import LedgerViewMixin
from tests.support.pgserver import running_postgres

UNIT: Final = "CREDITS"
FUNDING: Final = 10**12
BUILD_BATCH: Final = 1000
EVENTS_PER_TRANSFER: Final = 3  # TransferRecorded, Debited, Credited
GROUP_SIZE: Final = 50  # users per spread batch: keeps aggregate loads per batch low
WARM_UP_QUERIES: Final = 50
REPORT_EVERY_SECONDS: Final = 30.0
# How often a catch-up's checkpoint is read, by this commit's code and the baseline's
# alike: the time to the target is known to within this.
POLL_SECONDS: Final = 0.01
GOAL_RATIO: Final = 1.5
# 1k, 100k and 1M (the figure) take ~38 min on the busy 2-core machine: the 1M
# history alone is 1M transfers to build and 3M events to project. The default stops at
# 100k (~18 min); add it with --hot-entries 1000,100000,1000000.
DEFAULT_HOT: Final = (1_000, 100_000)
QUICK_HOT: Final = (1_000, 10_000)
GENERATION: Final = 1
MANIFEST: Final = "manifest.json"
# Catch-up of the same log by the code of an earlier commit (a git worktree), run in a
# subprocess with the same Python: the old path measured in the same run.
# It reports the process's CPU time over the same span (every thread's, the runner's
# start included), which waiting for a core on a busy machine does not inflate.
BASELINE_CATCH_UP: Final = """
import json, sys, time
from projections.runner import start_runner
events_url, views_url, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
started, cpu_started = time.perf_counter(), time.process_time()
runner = start_runner(events_url, views_url, 1)
try:
    while runner.view.checkpoint() < target:
        runner.run_forever(timeout=float(sys.argv[4]))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}))
finally:
    runner.__exit__(None, None, None)
"""
SPEED_GOAL: Final = 3.0
# Account list and search: the read model holds this many accounts (quick: fewer).
DEFAULT_ACCOUNTS: Final = 100_000
QUICK_ACCOUNTS: Final = 10_000
ACCOUNT_BATCH: Final = 2_000
ACCOUNT_QUERIES: Final = 500
ACCOUNT_PAGE: Final = 100
LIST_P99_GOAL_MS: Final = 5.0
PLANS: Final = ("free", "pro", "team", "enterprise")
REGIONS: Final = tuple(f"r{n}" for n in range(20))

console = Console(width=max(120, Console().width))
log = Console(stderr=True)


# Parameters and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    events: int
    accounts: int
    baseline: str | None
    rounds: int
    cpu_rounds: int
    hot_entries: tuple[int, ...]
    queries: int
    users: int
    seed: int

    def hot_inside(self) -> list[int]:
        """Hot histories placed within the first ``events`` positions (smallest first,
        while they leave room for the openings and grants)."""
        budget = self.events - (self.users + 1 + len(self.hot_entries))
        budget -= EVENTS_PER_TRANSFER * self.users
        inside = []
        for entries in sorted(self.hot_entries):
            cost = EVENTS_PER_TRANSFER * entries
            if cost <= budget:
                inside.append(entries)
                budget -= cost
        return inside

    def hot_beyond(self) -> list[int]:
        inside = self.hot_inside()
        return sorted(e for e in self.hot_entries if e not in inside)


@dataclass
class HotHistory:
    """Where an account's history lies in the log, to draw query instants from."""

    entries: int
    account_id: str
    first_position: int
    last_position: int
    first_time: str
    last_time: str


@dataclass
class BuildResult:
    store: str
    seconds: float
    transfers: int
    head: int
    hot: list[HotHistory] = field(default_factory=list)

    @property
    def transfers_per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds > 0 else float("inf")

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 1),
            "transfers_per_second": round(self.transfers_per_second, 1),
        }


@dataclass
class CatchUp:
    read_model: str
    event_store: str
    target: int
    seconds_to_target: float
    projected: int
    seconds_total: float
    code: str = "this commit"

    @property
    def per_second(self) -> float:
        return self.target / self.seconds_to_target if self.seconds_to_target > 0 else 0.0

    @property
    def per_second_total(self) -> float:
        return self.projected / self.seconds_total if self.seconds_total > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds_to_target": round(self.seconds_to_target, 2),
            "seconds_total": round(self.seconds_total, 2),
            "events_per_second": round(self.per_second, 1),
            "events_per_second_total": round(self.per_second_total, 1),
        }


@dataclass
class CpuCatchUp:
    """One catch-up of ``target`` events into a fresh SQLite view, in a fresh process."""

    code: str
    target: int
    seconds: float
    cpu_seconds: float

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds * 1e6 / self.target

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_us_per_event": round(self.cpu_us_per_event, 2),
        }


@dataclass
class Latency:
    """Wall-clock milliseconds per query, and the querying thread's CPU milliseconds
    (``time.thread_time``: unaffected by waiting for a core on a busy machine; for
    PostgreSQL it leaves out the server's work)."""

    read_model: str
    query: str
    entries: int
    samples_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    # PostgreSQL: the server's CPU for the query (its backends' run time, schedstat).
    server_cpu_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 0.99)

    @property
    def cpu_p50(self) -> float:
        return statistics.median(self.cpu_ms)

    @property
    def cpu_p99(self) -> float:
        return percentile(self.cpu_ms, 0.99)

    def both_cpu(self, fraction: float) -> float:
        """A percentile of client + server CPU per query (PostgreSQL)."""
        both = [mine + server for mine, server in zip(self.cpu_ms, self.server_cpu_ms, strict=True)]
        return percentile(both, fraction)

    def as_json(self) -> dict[str, Any]:
        return {
            "read_model": self.read_model,
            "query": self.query,
            "entries": self.entries,
            "n": len(self.samples_ms),
            "mean_ms": round(statistics.fmean(self.samples_ms), 4),
            "p50_ms": round(self.p50, 4),
            "p99_ms": round(self.p99, 4),
            "cpu_p50_ms": round(self.cpu_p50, 4),
            "cpu_p99_ms": round(self.cpu_p99, 4),
            **(
                {
                    "server_cpu_p50_ms": round(statistics.median(self.server_cpu_ms), 4),
                    "server_cpu_p99_ms": round(percentile(self.server_cpu_ms, 0.99), 4),
                }
                if self.server_cpu_ms
                else {}
            ),
        }


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# Building the log --------------------------------------------------------------------------


def user_id(index: int) -> str:
    return f"user:{index}"


def hot_id(entries: int) -> str:
    return f"hot:{entries}"


class Builder:
    """Writes the log through the Ledger, in atomic batches of up to 1,000 transfers."""

    def __init__(self, ledger: Ledger, plan: Plan, label: str) -> None:
        self.ledger = ledger
        self.plan = plan
        self.label = label
        self.random = random.Random(plan.seed)
        self.transfers = 0
        self.started = time.perf_counter()
        self.next_report = self.started + REPORT_EVERY_SECONDS

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def batch(self, commands: list[RecordTransfer]) -> None:
        self.ledger.record_batch(commands, atomic=True)
        self.transfers += len(commands)
        now = time.perf_counter()
        if now >= self.next_report:
            elapsed = now - self.started
            log.print(
                f"  [{self.label}] {self.transfers:,} transfers, head {self.head():,}, "
                f"{elapsed:.0f}s ({self.transfers / elapsed:,.0f} transfers/s)"
            )
            self.next_report = now + REPORT_EVERY_SECONDS

    def open_accounts(self) -> None:
        self.ledger.open_account(OpenAccount("issuance", UNIT, allow_negative=True))
        for index in range(self.plan.users):
            self.ledger.open_account(OpenAccount(user_id(index), UNIT))
        for entries in self.plan.hot_entries:
            self.ledger.open_account(OpenAccount(hot_id(entries), UNIT))
        grants = [
            RecordTransfer(f"grant:{i}", "issuance", user_id(i), FUNDING)
            for i in range(self.plan.users)
        ]
        for start in range(0, len(grants), BUILD_BATCH):
            self.batch(grants[start : start + BUILD_BATCH])

    def spread_until(self, target_head: int) -> None:
        """Transfers between users, random pairs within a rotating group, until the
        log holds ``target_head`` events."""
        users = self.plan.users
        group = min(GROUP_SIZE, users)
        number = 0
        while (missing := target_head - self.head()) > 0:
            size = min(BUILD_BATCH, -(-missing // EVENTS_PER_TRANSFER))
            base = (number * group) % users
            commands = []
            for i in range(size):
                debit = base + self.random.randrange(group)
                credit = base + (debit - base + 1 + self.random.randrange(group - 1)) % group
                commands.append(
                    RecordTransfer(
                        f"spread:{number}:{i}",
                        user_id(debit % users),
                        user_id(credit % users),
                        1 + self.random.randrange(100),
                    )
                )
            self.batch(commands)
            number += 1

    def hot_history(self, entries: int) -> HotHistory:
        """``entries`` transfers with the hot account on one side of each: credited 2
        by a user, then debiting 1 to a user, alternately (never below zero); the
        users rotate in groups, as in the spread part."""
        account = hot_id(entries)
        users = self.plan.users
        group = min(GROUP_SIZE, users)
        first_position = self.head() + 1
        first_time = datetime.now(tz=UTC)
        done = 0
        while done < entries:
            size = min(BUILD_BATCH, entries - done)
            base = (done // BUILD_BATCH) * group
            commands = []
            for i in range(size):
                peer = user_id((base + i % group) % users)
                transfer_id = f"{account}:{done + i}"
                commands.append(
                    RecordTransfer(transfer_id, peer, account, 2)
                    if (done + i) % 2 == 0
                    else RecordTransfer(transfer_id, account, peer, 1)
                )
            self.batch(commands)
            done += size
        return HotHistory(
            entries=entries,
            account_id=account,
            first_position=first_position,
            last_position=self.head(),
            first_time=first_time.isoformat(),
            last_time=datetime.now(tz=UTC).isoformat(),
        )


def build_log(url: str, plan: Plan, *, with_beyond: bool, label: str) -> BuildResult:
    log.print(f"building the log in {label}: {plan.events:,} events, hot {plan.hot_entries}")
    ledger = Ledger(event_store_env(url))
    try:
        builder = Builder(ledger, plan, label)
        builder.open_accounts()
        hot = [builder.hot_history(entries) for entries in plan.hot_inside()]
        builder.spread_until(plan.events)
        if with_beyond:
            hot += [builder.hot_history(entries) for entries in plan.hot_beyond()]
        seconds = time.perf_counter() - builder.started
        result = BuildResult(label, seconds, builder.transfers, builder.head(), hot)
    finally:
        ledger.close()
    log.print(
        f"  built {result.transfers:,} transfers, {result.head:,} events in {seconds:.1f}s "
        f"({result.transfers_per_second:,.0f} transfers/s)"
    )
    return result


# Catch-up --------------------------------------------------------------------------------


def catch_up(
    event_store_url: str, read_model_url: str, target: int, stop_at: int, labels: tuple[str, str]
) -> CatchUp:
    """Project from position zero with a fresh runner; the time to reach ``target``
    and to reach ``stop_at`` (>= target)."""
    read_model, event_store = labels
    log.print(f"catching up: {read_model} read model from the {event_store} event store")
    started = time.perf_counter()
    runner = start_runner(event_store_url, read_model_url, GENERATION)
    try:
        view: LedgerViewMixin = runner.view
        seconds_to_target: float | None = None
        next_report = started + REPORT_EVERY_SECONDS
        while True:
            runner.run_forever(timeout=POLL_SECONDS)  # re-raises a failure of the worker
            checkpoint = view.checkpoint()
            now = time.perf_counter()
            if seconds_to_target is None and checkpoint >= target:
                seconds_to_target = now - started
            if checkpoint >= stop_at:
                break
            if now >= next_report:
                log.print(
                    f"  [{read_model}] checkpoint {checkpoint:,} / {stop_at:,}, "
                    f"{now - started:.0f}s ({checkpoint / (now - started):,.0f} events/s)"
                )
                next_report = now + REPORT_EVERY_SECONDS
        seconds_total = time.perf_counter() - started
    finally:
        runner.__exit__(None, None, None)
    assert seconds_to_target is not None
    result = CatchUp(read_model, event_store, target, seconds_to_target, checkpoint, seconds_total)
    log.print(
        f"  {target:,} events in {seconds_to_target:.1f}s ({result.per_second:,.0f} events/s); "
        f"{checkpoint:,} in {seconds_total:.1f}s"
    )
    return result


def baseline_catch_up(
    plan: Plan, workdir: Path, event_store_url: str, read_model_url: str, target: int, label: str
) -> CatchUp:
    """The same catch-up by the code of ``plan.baseline`` (a git worktree of it, run in a
    subprocess with this Python): the old path, measured in the same run."""
    source = baseline_source(plan, workdir)
    assert plan.baseline is not None
    log.print(f"catching up with {plan.baseline}: {label} read model")
    seconds = catch_up_in_subprocess(source, event_store_url, read_model_url, target)["seconds"]
    result = CatchUp(label, "sqlite", target, seconds, target, seconds, code=plan.baseline)
    log.print(f"  {target:,} events in {seconds:.1f}s ({result.per_second:,.0f} events/s)")
    return result


def baseline_source(plan: Plan, workdir: Path) -> Path:
    """A git worktree of ``plan.baseline`` in ``workdir`` (added once)."""
    assert plan.baseline is not None
    source = workdir / "baseline-src"
    if not source.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(source), plan.baseline],
            cwd=Path(__file__).resolve().parent.parent,
            check=True,
            capture_output=True,
        )
    return source


def catch_up_in_subprocess(
    source: Path, event_store_url: str, read_model_url: str, target: int
) -> dict[str, float]:
    """``BASELINE_CATCH_UP`` run by the code in ``source`` with this Python: its wall
    seconds and process CPU seconds to reach ``target``."""
    finished = subprocess.run(
        [
            sys.executable,
            "-c",
            BASELINE_CATCH_UP,
            event_store_url,
            read_model_url,
            str(target),
            str(POLL_SECONDS),
        ],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source), "PYTHONSAFEPATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    answer: dict[str, float] = json.loads(finished.stdout.strip().splitlines()[-1])
    return answer


def cpu_catch_ups(plan: Plan, workdir: Path, events_url: str, target: int) -> list[CpuCatchUp]:
    """CPU per event of the same catch-up by the baseline's code and by this code, each
    in a fresh process (the same measure on both sides), alternating for
    ``plan.cpu_rounds`` rounds (who goes first alternates too)."""
    sides = [
        (str(plan.baseline), baseline_source(plan, workdir)),
        ("this commit", Path(__file__).resolve().parent.parent),
    ]
    found: list[CpuCatchUp] = []
    for round_ in range(plan.cpu_rounds):
        for code, source in sides if round_ % 2 == 0 else sides[::-1]:
            views = workdir / f"views.cpu{round_}.{len(found)}.sqlite"
            answer = catch_up_in_subprocess(source, events_url, sqlite_url(views), target)
            item = CpuCatchUp(code, target, answer["seconds"], answer["cpu_seconds"])
            found.append(item)
            log.print(
                f"  CPU catch-up by {code}: {item.cpu_seconds:.2f}s CPU "
                f"({item.cpu_us_per_event:.1f} µs/event), {item.seconds:.2f}s wall"
            )
    return found


def remove_baseline_source(workdir: Path) -> None:
    source = workdir / "baseline-src"
    if source.exists():
        root = Path(__file__).resolve().parent.parent
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(source)],
            cwd=root,
            check=False,
            capture_output=True,
        )


# Account list and search -------------------------------------------------------------------


def fill_accounts(view: LedgerViewMixin, count: int, seed: int) -> None:
    """``count`` opened accounts, applied to the read model as the projection would
    (their events in bulk batches): the list queries read what the projection writes."""
    rng = random.Random(seed)
    position = (view.checkpoint() or 0) + 1
    for start in range(0, count, ACCOUNT_BATCH):
        batch: list[tuple[Any, Tracking]] = []
        for number in range(start, min(count, start + ACCOUNT_BATCH)):
            metadata = {"plan": rng.choice(PLANS), "region": rng.choice(REGIONS)}
            account = Account.open(f"list:{number:07d}", UNIT, False, 0, metadata)
            for event in account.collect_events():
                batch.append((event, Tracking(APPLICATION_NAME, position)))
                position += 1
        view.apply_events(batch)


def account_list_latencies(
    view: LedgerViewMixin,
    count: int,
    seed: int,
    label: str,
    *,
    before: bool = False,
    server_cpu: Callable[[], float] | None = None,
) -> list[Latency]:
    """First pages of account lists and searches, random each time: a prefix, a page
    after a random id, a metadata pair, two metadata pairs, a unit. Rounds of one
    query of each kind in turn, so that the machine's load shifts hit every kind alike.
    With ``before`` (PostgreSQL), each metadata search is also run the way it was
    before the rarest-pair search (``joined_statement``), on the same pairs, the two sides
    alternating first. ``server_cpu`` (PostgreSQL) reads the server's CPU seconds so
    far, around each query."""
    rng = random.Random(seed)
    # A page starts after an id that a whole page follows (any of them, with fewer
    # accounts than a page): the newest ids have nothing after them to list.
    starts = max(1, count - ACCOUNT_PAGE)
    kinds: dict[str, Callable[[], AccountFilter]] = {
        "list after id": lambda: AccountFilter(
            after_id=f"list:{rng.randrange(starts):07d}", limit=ACCOUNT_PAGE
        ),
        "prefix": lambda: AccountFilter(
            prefix=f"list:{rng.randrange(count // 100 or 1):05d}", limit=ACCOUNT_PAGE
        ),
        "metadata": lambda: AccountFilter(
            metadata={"region": rng.choice(REGIONS)}, limit=ACCOUNT_PAGE
        ),
        "metadata x2": lambda: AccountFilter(
            metadata={"plan": rng.choice(PLANS), "region": rng.choice(REGIONS)},
            limit=ACCOUNT_PAGE,
        ),
        "unit": lambda: AccountFilter(unit=UNIT, after_id=f"list:{rng.randrange(starts):07d}"),
    }
    sides: list[tuple[str, Callable[[AccountFilter], list[AccountView]]]] = [
        ("accounts: ", view.accounts)
    ]
    if before:
        assert isinstance(view, PostgresLedgerView)
        sides.append((BEFORE_LABEL, partial(joined_search_before, view)))
    latencies: dict[str, Latency] = {}
    for number in range(WARM_UP_QUERIES + ACCOUNT_QUERIES):
        for kind, make in kinds.items():
            query = make()
            runs = sides if kind.startswith("metadata") else sides[:1]
            for side, search in runs if number % 2 == 0 else runs[::-1]:
                server_started = server_cpu() if server_cpu else 0.0
                started, cpu_started = time.perf_counter(), time.thread_time()
                found = search(query)
                wall, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
                server = server_cpu() - server_started if server_cpu else 0.0
                assert found or kind.startswith("metadata"), (kind, query)
                if number >= WARM_UP_QUERIES:
                    name = side + kind
                    latency = latencies.setdefault(name, Latency(label, name, count))
                    latency.samples_ms.append(wall * 1000)
                    latency.cpu_ms.append(cpu * 1000)
                    if server_cpu:
                        latency.server_cpu_ms.append(server * 1000)
    for latency in latencies.values():
        log.print(
            escape(f"  [{label}] {latency.query}: ")
            + f"p50 {latency.p50:.3f} ms, p99 {latency.p99:.3f} ms"
        )
    return list(latencies.values())


# How PostgreSQL searched by metadata pairs before the rarest-pair search (21ab229): one
# statement joining a lookup per pair and the balances, in an order its planner chose
# from its statistics. Kept to be measured against in the same run.
BEFORE_LABEL: Final = "before 21ab229, accounts: "


def joined_statement(query: AccountFilter) -> tuple[str, list[Any]]:
    """The statement before: the pairs joined in key order, the planner ordering them."""
    return joined_search(query, sorted(query.metadata.items()))


def joined_search_before(view: PostgresLedgerView, query: AccountFilter) -> list[AccountView]:
    rows = view._all(*joined_statement(query))  # through the view's own pool
    return [account_of(row, row, row["position"], row["updated_at"]) for row in rows]


def backends_cpu_seconds(datadir: Path, database: str) -> Callable[[], float]:
    """The CPU time so far of the server's backends serving ``database`` (autovacuum
    left out), from /proc/PID/schedstat: nanoseconds, where /proc/PID/stat counts
    10 ms ticks, too coarse for one query of about a millisecond."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children")

    def seconds() -> float:
        total = 0
        for child in children.read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
                if f" {database} " in command and "autovacuum" not in command:
                    total += int(Path(f"/proc/{child}/schedstat").read_text().split()[0])
            except OSError:
                continue  # a backend that ended meanwhile (not one of the view's pool)
        return total / 1e9

    return seconds


SEARCH_PLANS: Final = 60


def search_buffers(view: PostgresLedgerView, seed: int, label: str) -> list[str]:
    """Shared buffers touched per two-pair search, this commit's statement against the
    one before (EXPLAIN (ANALYZE, BUFFERS) on the same random pairs): a measure of the
    plan's work that the machine's load does not blur. Also one plan of each."""
    rng = random.Random(seed)
    touched: dict[str, list[int]] = {"this commit": [], "before": []}
    plans: dict[str, str] = {}
    for _ in range(SEARCH_PLANS):
        pairs = {"plan": rng.choice(PLANS), "region": rng.choice(REGIONS)}
        query = AccountFilter(metadata=pairs, limit=ACCOUNT_PAGE)
        for side, (statement, params) in (
            ("this commit", rarest_pair_search(query, sorted(pairs.items()))),
            ("before", joined_statement(query)),
        ):
            rows = view._all(  # the statements as the reader sends them
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, FORMAT JSON) " + statement, params
            )
            plan = rows[0]["QUERY PLAN"][0]["Plan"]
            touched[side].append(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])
            plans.setdefault(side, plan_outline(plan))
    lines = []
    for side, blocks in touched.items():
        lines.append(
            f"{label}, two pairs, {side}: {statistics.median(blocks):,.0f} shared buffers per "
            f"search (p50; max {max(blocks):,}); plan: {plans[side]}"
        )
    return lines


def plan_outline(node: dict[str, Any]) -> str:
    """A plan's nodes, depth first: type, index, actual rows x loops."""
    index = f" {node['Index Name']}" if "Index Name" in node else ""
    own = f"{node['Node Type']}{index} ({node['Actual Rows']}x{node['Actual Loops']})"
    inner = [plan_outline(child) for child in node.get("Plans", [])]
    return own + (f" [{'; '.join(inner)}]" if inner else "")


# As-of queries -----------------------------------------------------------------------------


def as_of_latencies(
    view: LedgerViewMixin, histories: Sequence[HotHistory], queries: int, seed: int, label: str
) -> list[Latency]:
    """``queries`` random instants per account and kind of query, interleaved (one of
    each account and kind in turn) so that the machine's load shifts hit every
    account alike; the first WARM_UP_QUERIES rounds are not kept."""
    rng = random.Random(seed)
    rounds = queries + WARM_UP_QUERIES
    plans: list[tuple[Latency, Callable[[Any], Any], list[Any]]] = []
    for history in histories:
        account = history.account_id
        positions = [
            rng.randint(history.first_position, history.last_position) for _ in range(rounds)
        ]
        start = datetime.fromisoformat(history.first_time)
        span = (datetime.fromisoformat(history.last_time) - start).total_seconds()
        moments = [start + timedelta(seconds=rng.uniform(0, span)) for _ in range(rounds)]
        plans.append(
            (
                Latency(label, "balance_at_position", history.entries),
                partial(view.balance_at_position, account),
                positions,
            )
        )
        plans.append(
            (
                Latency(label, "balance_as_of", history.entries),
                partial(view.balance_as_of, account),
                moments,
            )
        )
    log.print(f"  as-of queries ({label}): {rounds:,} rounds over {len(plans)} series")
    for index in range(rounds):
        for latency, query, arguments in plans:
            cpu_started = time.thread_time()
            started = time.perf_counter()
            answer = query(arguments[index])
            elapsed = time.perf_counter() - started
            cpu = time.thread_time() - cpu_started
            assert answer is not None, "an as-of query inside the history must find the account"
            if index >= WARM_UP_QUERIES:
                latency.samples_ms.append(elapsed * 1000)
                latency.cpu_ms.append(cpu * 1000)
    return [latency for latency, _, _ in plans]


def entry_count(view: LedgerViewMixin, account_id: str) -> int:
    return view.entry_counts().get(account_id, 0)


# The run -----------------------------------------------------------------------------------


@dataclass
class Results:
    plan: Plan
    builds: list[BuildResult] = field(default_factory=list)
    catch_ups: list[CatchUp] = field(default_factory=list)
    cpu_catch_ups: list[CpuCatchUp] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    postgres_settings: dict[str, str] = field(default_factory=dict)

    def speedups(self) -> dict[str, float]:
        """Per read model: median catch-up events/s of this commit / of the baseline
        (same log, same run, rounds alternating)."""
        speedups = {}
        for read_model in dict.fromkeys(item.read_model for item in self.catch_ups):
            rows = [item for item in self.catch_ups if item.read_model == read_model]
            new = [item.per_second for item in rows if item.code == "this commit"]
            old = [item.per_second for item in rows if item.code != "this commit"]
            if new and old:
                speedups[read_model] = statistics.median(new) / statistics.median(old)
        return speedups

    def cpu_medians(self) -> dict[str, float]:
        """Median CPU µs per event of each code's fresh-process catch-ups."""
        codes = dict.fromkeys(item.code for item in self.cpu_catch_ups)
        return {
            code: statistics.median(
                item.cpu_us_per_event for item in self.cpu_catch_ups if item.code == code
            )
            for code in codes
        }

    def ratios(self) -> dict[str, float]:
        """p50(largest history) / p50(smallest history), per read model and query, on
        wall time (and on client CPU time, ``... cpu``)."""
        ratios = {}
        for read_model in dict.fromkeys(latency.read_model for latency in self.latencies):
            for query in ("balance_at_position", "balance_as_of"):
                rows = [
                    x for x in self.latencies if x.read_model == read_model and x.query == query
                ]
                if len(rows) >= 2:
                    small = min(rows, key=lambda x: x.entries)
                    large = max(rows, key=lambda x: x.entries)
                    name = f"{read_model} {query} {large.entries}/{small.entries}"
                    ratios[name] = large.p50 / small.p50
                    ratios[name + " cpu"] = large.cpu_p50 / small.cpu_p50
        return ratios


def load_or_build(workdir: Path, plan: Plan) -> BuildResult:
    """The SQLite log: built, or reused from a ``--workdir`` that holds one built with
    the same plan (its views are then deleted, to catch up from zero again)."""
    store, manifest = workdir / "events.sqlite", workdir / MANIFEST
    if manifest.exists() and store.exists():
        saved = json.loads(manifest.read_text())
        if saved["plan"] != json.loads(json.dumps(asdict(plan))):
            raise SystemExit(f"{workdir} holds a log of another plan: {saved['plan']}")
        build = saved["build"]
        log.print(f"reusing the log in {workdir} (built in {build['seconds']:.1f}s)")
        for old in workdir.glob("views*"):
            old.unlink()
        hot = [HotHistory(**history) for history in build.pop("hot")]
        return BuildResult(
            store=build["store"] + " (reused)",
            seconds=build["seconds"],
            transfers=build["transfers"],
            head=build["head"],
            hot=hot,
        )
    if any(workdir.iterdir()):
        raise SystemExit(f"--workdir {workdir} is neither empty nor a log of this benchmark")
    build = build_log(sqlite_url(store), plan, with_beyond=True, label="sqlite")
    manifest.write_text(json.dumps({"plan": asdict(plan), "build": asdict(build)}, indent=2))
    return build


def run(plan: Plan, workdir: Path, *, postgres: bool, pg_event_store: bool) -> Results:
    results = Results(plan)
    events_url = sqlite_url(workdir / "events.sqlite")
    build = load_or_build(workdir, plan)
    results.builds.append(build)

    # SQLite read model: the whole log, so that every hot account can be queried. With a
    # baseline, each round projects the log with the old code, then with this one.
    views_url = sqlite_url(workdir / "views.sqlite")
    target = min(plan.events, build.head)
    for round_ in range(plan.rounds if plan.baseline else 1):
        if plan.baseline:
            base_url = sqlite_url(workdir / f"views.base{round_}.sqlite")
            results.catch_ups.append(
                baseline_catch_up(plan, workdir, events_url, base_url, target, "sqlite")
            )
        url = views_url if round_ == 0 else sqlite_url(workdir / f"views.new{round_}.sqlite")
        stop_at = build.head if round_ == 0 else target
        results.catch_ups.append(catch_up(events_url, url, target, stop_at, ("sqlite", "sqlite")))
    if plan.baseline and plan.cpu_rounds:
        results.cpu_catch_ups += cpu_catch_ups(plan, workdir, events_url, target)
    view = open_view(views_url, GENERATION)
    for history in build.hot:
        found = entry_count(view, history.account_id)
        assert found == history.entries, (history.account_id, found)
    results.latencies += as_of_latencies(view, build.hot, plan.queries, plan.seed, "sqlite")
    accounts_view = open_view(sqlite_url(workdir / "views.accounts.sqlite"), GENERATION)
    fill_accounts(accounts_view, plan.accounts, plan.seed)
    results.latencies += account_list_latencies(accounts_view, plan.accounts, plan.seed, "sqlite")

    if postgres:
        bench_postgres(results, plan, events_url, build, workdir, pg_event_store=pg_event_store)
    remove_baseline_source(workdir)
    return results


def bench_postgres(
    results: Results,
    plan: Plan,
    events_url: str,
    build: BuildResult,
    workdir: Path,
    *,
    pg_event_store: bool,
) -> None:
    import psycopg  # noqa: PLC0415 - only needed when PostgreSQL is benchmarked

    with running_postgres(fsync=True) as server:
        views_url = server.create_database("views")
        with psycopg.connect(views_url) as connection:
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
                row = connection.execute(f"SHOW {name}").fetchone()
                if row is not None:
                    results.postgres_settings[name] = str(row[0])
        store_url, store_label, pg_build = events_url, "sqlite", build
        if pg_event_store:
            store_url, store_label = server.create_database("events"), "postgres"
            pg_build = build_log(store_url, plan, with_beyond=False, label="postgres")
            results.builds.append(pg_build)
        target = min(plan.events, pg_build.head)
        for round_ in range(plan.rounds if plan.baseline else 1):
            if plan.baseline:
                base_url = server.create_database(f"views_base{round_}")
                results.catch_ups.append(
                    baseline_catch_up(plan, workdir, store_url, base_url, target, "postgres")
                )
            url = views_url if round_ == 0 else server.create_database(f"views_new{round_}")
            results.catch_ups.append(
                catch_up(store_url, url, target, target, ("postgres", store_label))
            )
        view = open_view(views_url, GENERATION)
        inside = [h for h in pg_build.hot if h.last_position <= target]
        for history in inside:
            found = entry_count(view, history.account_id)
            assert found == history.entries, (history.account_id, found)
        results.latencies += as_of_latencies(view, inside, plan.queries, plan.seed, "postgres")
        accounts_view = open_view(server.create_database("accounts"), GENERATION)
        assert isinstance(accounts_view, PostgresLedgerView)
        assert server.datadir is not None
        server_cpu = backends_cpu_seconds(server.datadir, "accounts")
        # Fresh: right after a bulk fill the tables have no statistics and no visibility
        # map. Autovacuum is held off these tables until they are measured so (under
        # load the fill can outlast its one-minute nap), then VACUUM ANALYZE gives what
        # a running server's autovacuum gives within about a minute: steady.
        hold_autovacuum(accounts_view, enabled=False)
        fill_accounts(accounts_view, plan.accounts, plan.seed)
        for state in ("postgres", "postgres, vacuumed"):
            if state != "postgres":
                hold_autovacuum(accounts_view, enabled=True)
                with accounts_view.datastore.get_connection() as connection:
                    connection.execute("VACUUM ANALYZE")
            results.latencies += account_list_latencies(
                accounts_view,
                plan.accounts,
                plan.seed,
                state,
                before=True,
                server_cpu=server_cpu,
            )
            results.notes += search_buffers(accounts_view, plan.seed, state)
        skipped = [h.entries for h in pg_build.hot if h.last_position > target]
        if skipped:
            results.notes.append(
                f"PostgreSQL read model projected the first {target:,} positions only: "
                f"no as-of queries there for histories of {skipped} entries"
            )


def hold_autovacuum(view: PostgresLedgerView, *, enabled: bool) -> None:
    """Autovacuum (and its analyze) on or off for the account search's tables."""
    setting = "true" if enabled else "false"
    with view.datastore.get_connection() as connection:
        for table in ("balances", "account_metadata", "account_metadata_counts"):
            connection.execute(
                view._sql(f"ALTER TABLE {{{table}}} SET (autovacuum_enabled = {setting})")
            )


# Report ------------------------------------------------------------------------------------


def print_report(results: Results, seconds: float) -> None:
    build_table = Table(title="Building the log (Ledger.record_batch, atomic batches of 1,000)")
    for column in ("event store", "transfers", "events", "seconds", "transfers/s"):
        build_table.add_column(column, justify="right" if column != "event store" else "left")
    for build in results.builds:
        build_table.add_row(
            build.store,
            f"{build.transfers:,}",
            f"{build.head:,}",
            f"{build.seconds:,.1f}",
            f"{build.transfers_per_second:,.0f}",
        )
    console.print(build_table)

    catch_table = Table(title="Catch-up from position zero (fresh runner)")
    for column in (
        "code",
        "read model",
        "event store",
        "events",
        "seconds",
        "events/s",
        "whole run",
        "events/s (whole)",
    ):
        catch_table.add_column(column, justify="left" if column.endswith("e") else "right")
    for item in results.catch_ups:
        catch_table.add_row(
            item.code,
            item.read_model,
            item.event_store,
            f"{item.target:,}",
            f"{item.seconds_to_target:,.1f}",
            f"{item.per_second:,.0f}",
            f"{item.projected:,} in {item.seconds_total:,.1f}s",
            f"{item.per_second_total:,.0f}",
        )
    console.print(catch_table)
    for read_model, speedup in results.speedups().items():
        verdict = "meets" if speedup >= SPEED_GOAL else "MISSES"
        console.print(
            f"catch-up speed-up on {read_model}: {speedup:.2f}x the baseline "
            f"{results.plan.baseline} ({verdict} the goal >= {SPEED_GOAL}x)"
        )

    print_cpu_catch_ups(results)

    latency_table = Table(title=f"As-of query latency ({results.plan.queries:,} random each)")
    columns = ("read model", "query", "history entries", "p50 ms", "p99 ms", "CPU p50 ms")
    for column in (*columns, "CPU p99 ms"):
        latency_table.add_column(column, justify="right" if "ms" in column else "left")
    for latency in results.latencies:
        latency_table.add_row(
            latency.read_model,
            latency.query,
            f"{latency.entries:,}",
            f"{latency.p50:.3f}",
            f"{latency.p99:.3f}",
            f"{latency.cpu_p50:.3f}",
            f"{latency.cpu_p99:.3f}",
        )
    console.print(latency_table)
    for latency in results.latencies:
        if latency.query.startswith("accounts:"):
            verdict = "meets" if latency.p99 <= LIST_P99_GOAL_MS else "MISSES"
            cpu_p99 = latency.both_cpu(0.99) if latency.server_cpu_ms else latency.cpu_p99
            cpu_verdict = "meets" if cpu_p99 <= LIST_P99_GOAL_MS else "misses"
            whose = "client + server CPU" if latency.server_cpu_ms else "CPU"
            console.print(
                f"{latency.read_model} {latency.query} on {latency.entries:,} accounts: p99 "
                f"{latency.p99:.2f} ms ({verdict} the goal <= {LIST_P99_GOAL_MS} ms); "
                f"{whose} p99 {cpu_p99:.2f} ms ({cpu_verdict} it: the query's own work, "
                "without the wait for a core)"
            )
    print_before_ratios(results)
    for name, ratio in results.ratios().items():
        verdict = "meets" if ratio <= GOAL_RATIO else "MISSES"
        kind = "client CPU" if name.endswith(" cpu") else "wall"
        console.print(
            f"p50 ratio ({kind}) {name.removesuffix(' cpu')}: {ratio:.2f} "
            f"({verdict} the goal <= {GOAL_RATIO})"
        )
    for note in results.notes:
        console.print(f"note: {note}")
    if results.postgres_settings:
        console.print(f"postgres: {results.postgres_settings}")
    console.print(f"machine: {machine()}; total {seconds:.0f}s")


def print_before_ratios(results: Results) -> None:
    """Each PostgreSQL search against the same search as it was before (``joined_statement``),
    on the same pairs in the same run."""
    for latency in results.latencies:
        if not latency.query.startswith("accounts: metadata"):
            continue
        old = next(
            (
                x
                for x in results.latencies
                if x.read_model == latency.read_model
                and x.query == latency.query.replace("accounts: ", BEFORE_LABEL)
            ),
            None,
        )
        if old is not None:
            both = (
                f"; client + server CPU p50 {latency.both_cpu(0.5):.2f} ms (before "
                f"{old.both_cpu(0.5):.2f}), p99 {latency.both_cpu(0.99):.2f} ms (before "
                f"{old.both_cpu(0.99):.2f})"
                if latency.server_cpu_ms and old.server_cpu_ms
                else ""
            )
            console.print(
                f"{latency.read_model} {latency.query.removeprefix('accounts: ')}, this commit / "
                f"before (same run, alternating): p50 {latency.p50 / old.p50:.2f}, "
                f"p99 {latency.p99 / old.p99:.2f}, client CPU p50 "
                f"{latency.cpu_p50 / old.cpu_p50:.2f}{both}"
            )


def print_cpu_catch_ups(results: Results) -> None:
    if not results.cpu_catch_ups:
        return
    medians = results.cpu_medians()
    console.print(
        "catch-up CPU per event on sqlite (fresh process each, alternating, medians of "
        f"{results.plan.cpu_rounds}): "
        + ", ".join(f"{code} {us:.1f} µs" for code, us in medians.items())
    )
    old, new = medians.get(str(results.plan.baseline)), medians.get("this commit")
    if old and new:
        console.print(f"catch-up CPU ratio on sqlite: {old / new:.2f}x the baseline's")


def to_json(results: Results, seconds: float, load_before: float, commit: str) -> dict[str, Any]:
    return {
        "machine": machine(),
        "load_average_1m_at_start": round(load_before, 2),
        "commit_at_start": commit,
        "plan": asdict(results.plan),
        "total_seconds": round(seconds, 1),
        "builds": [build.as_json() for build in results.builds],
        "catch_up": [item.as_json() for item in results.catch_ups],
        "catch_up_cpu": [item.as_json() for item in results.cpu_catch_ups],
        "catch_up_cpu_us_per_event": {
            code: round(us, 2) for code, us in results.cpu_medians().items()
        },
        "as_of": [latency.as_json() for latency in results.latencies],
        "p50_ratios": {name: round(ratio, 3) for name, ratio in results.ratios().items()},
        "catch_up_speedups": {name: round(x, 2) for name, x in results.speedups().items()},
        "speedup_goal_min": SPEED_GOAL,
        "account_list_p99_goal_ms": LIST_P99_GOAL_MS,
        "goal_ratio_max": GOAL_RATIO,
        "notes": results.notes,
        "postgres_settings": results.postgres_settings,
    }


# Command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--events", type=int, help="events to catch up on (default 1,000,000; quick 30,000)"
    )
    parser.add_argument(
        "--hot-entries",
        help="comma-separated history lengths of the hot accounts "
        f"(default {','.join(map(str, DEFAULT_HOT))}; quick {','.join(map(str, QUICK_HOT))})",
    )
    parser.add_argument(
        "--queries", type=int, help="timed as-of queries per account and kind (default 2,000)"
    )
    parser.add_argument("--users", type=int, help="user accounts of the spread log (default 1000)")
    parser.add_argument(
        "--accounts",
        type=int,
        help=f"accounts for the list/search latencies (default {DEFAULT_ACCOUNTS:,}; "
        f"quick {QUICK_ACCOUNTS:,})",
    )
    parser.add_argument(
        "--baseline",
        help="a commit whose projection code catches up on the same log in the same run "
        "(e.g. a5ced0a, before the bulk writes), alternating with this commit's",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="baseline/this-commit catch-up pairs (default 2)"
    )
    parser.add_argument(
        "--cpu-rounds",
        type=int,
        default=3,
        help="with --baseline: baseline/this-commit pairs of SQLite catch-ups each in a "
        "fresh process, compared by process CPU per event (default 3; 0 to skip)",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--pg-event-store",
        action="store_true",
        help="for the PostgreSQL read model, rebuild the log in a PostgreSQL event store "
        "(default: project the same SQLite log)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the databases here, and reuse a log built there with the same plan "
        "(default: a temp dir, removed)",
    )
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    hot = (
        tuple(int(part.replace("_", "")) for part in str(args.hot_entries).split(",") if part)
        if args.hot_entries
        else (QUICK_HOT if quick else DEFAULT_HOT)
    )
    if len(set(hot)) != len(hot) or min(hot) <= 0:
        raise SystemExit("--hot-entries: distinct positive numbers")
    users = args.users if args.users is not None else (200 if quick else 1000)
    if users < 2:
        raise SystemExit("--users: at least 2")
    accounts = args.accounts or (QUICK_ACCOUNTS if quick else DEFAULT_ACCOUNTS)
    if accounts < 2:
        raise SystemExit("--accounts: at least 2 (a page after the first lists the others)")
    return Plan(
        events=args.events if args.events is not None else (30_000 if quick else 1_000_000),
        accounts=accounts,
        baseline=args.baseline,
        rounds=max(1, int(args.rounds)),
        cpu_rounds=max(0, int(args.cpu_rounds)),
        hot_entries=hot,
        queries=args.queries if args.queries is not None else (300 if quick else 2000),
        users=users,
        seed=int(args.seed),
    )


@contextmanager
def working_directory(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ledger-bench-projections-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    load_before = os.getloadavg()[0]
    commit = git_commit()  # the code this run imported (others may commit meanwhile)
    log.print(f"plan: {plan}; load average {load_before:.1f} on {os.cpu_count()} cpus")
    started = time.perf_counter()
    with working_directory(args.workdir) as workdir:
        results = run(
            plan, workdir, postgres=not args.no_postgres, pg_event_store=bool(args.pg_event_store)
        )
    seconds = time.perf_counter() - started
    print_report(results, seconds)
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_json(results, seconds, load_before, commit), indent=2) + "\n")
        console.print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
