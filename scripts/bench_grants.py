"""Benchmark of credit grants (docs/grants.md), on SQLite, in one run:

1. The cost of a spend from an account holding 1, 10, 100 and 1,000 live lots, against an
   account without lots (the baseline), single transfers one after another, the accounts
   taken in turn within each round so that drift hits every side alike.
   Goal: 100 lots <= 1.5x the baseline.
2. Expiry of many lots at one instant (default 100,000 over 100 accounts, 1,000 live
   lots each: the most one account may hold) by the expiry worker's own function (the
   view says which are due, the ledger moves them in batches): the time from the
   instant until every remainder is in breakage, and until the views show it too, with
   the projection runner in the same process (as ``ledger project`` runs it beside the
   expiry worker), and the process's CPU seconds meanwhile (a figure the other processes
   of a shared machine do not stretch). Goal: within a minute ("completes": every expiry
   transfer durable; the views' catch-up is printed beside it). With --expiry-baseline
   REV the same expiry also runs with the code of REV (a git worktree of it, running its
   own copy of this script in a subprocess), alternating baseline and this commit
   --expiry-rounds times, and prints the median of each side and their ratio, with the
   load average around every run.

Usage: python scripts/bench_grants.py [--rounds 5] [--spends 200] [--expiry-lots 100000]
       [--expiry-baseline REV] [--expiry-rounds 1]
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchlib import machine

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.limits import BATCH_SIZE_MAX
from app.domain.lots import LIVE_LOTS_MAX
from app.domain.values import breakage_account_id
from app.persistence.stores import event_store_env
from projections.runner import ProjectionWorkers, expire_due_grants

LOT_COUNTS: Final = (1, 10, 100, 1000)
ISSUANCE: Final = "bench:issuance"
SINK: Final = "bench:sink"
LOT_AMOUNT: Final = 10**9
PROJECTION_WAIT_SECONDS: Final = 600.0


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(tz=UTC) + self.offset


def account_of(lots: int) -> str:
    return f"bench:lots:{lots}"


def grant_terms(rng: random.Random, now: datetime) -> GrantTerms:
    """Mixed terms, all spendable for the whole run: priorities, expiries far ahead (some
    none), both categories."""
    expires_at = None if rng.random() < 0.3 else now + timedelta(days=rng.randint(30, 365))
    return GrantTerms(
        expires_at=expires_at,
        priority=rng.choice((10, 50, 90)),
        category=rng.choice(("paid", "promotional")),
    )


def set_up_spenders(ledger: Ledger) -> None:
    rng = random.Random(7)
    now = datetime.now(tz=UTC)
    ledger.open_account(OpenAccount(ISSUANCE, "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(SINK, "CREDITS"))
    ledger.open_account(OpenAccount(account_of(0), "CREDITS"))
    ledger.record_transfer(RecordTransfer("fund:0", ISSUANCE, account_of(0), LOT_AMOUNT))
    for lots in LOT_COUNTS:
        account = account_of(lots)
        ledger.open_account(OpenAccount(account, "CREDITS"))
        grants = [
            RecordTransfer(
                f"grant:{lots}:{n}", ISSUANCE, account, LOT_AMOUNT, grant=grant_terms(rng, now)
            )
            for n in range(lots)
        ]
        for start in range(0, lots, BATCH_SIZE_MAX):
            ledger.record_batch(grants[start : start + BATCH_SIZE_MAX], atomic=True)


def spend_costs(ledger: Ledger, rounds: int, spends: int) -> dict[int, list[float]]:
    """Microseconds of each spend, per lot count (0: no lots). The accounts take turns
    spend by spend, starting with a different one each time, so that the machine's
    drift (other processes, a snapshot, a checkpoint) falls on every side alike."""
    costs: dict[int, list[float]] = {lots: [] for lots in (0, *LOT_COUNTS)}
    order = [0, *LOT_COUNTS]
    for round_number in range(rounds):
        for n in range(spends):
            shift = n % len(order)
            for lots in order[shift:] + order[:shift]:
                command = RecordTransfer(
                    f"spend:{lots}:{round_number}:{n}", account_of(lots), SINK, 3
                )
                started = time.perf_counter()
                ledger.record_transfer(command)
                costs[lots].append((time.perf_counter() - started) * 1e6)
    return costs


def bench_spends(workdir: Path, rounds: int, spends: int) -> dict[str, Any]:
    ledger = Ledger(event_store_env(f"sqlite:///{workdir / 'spends.sqlite'}"))
    try:
        set_up_spenders(ledger)
        spend_costs(ledger, 1, max(10, spends // 10))  # warm the caches and snapshots
        costs = spend_costs(ledger, rounds, spends)
    finally:
        ledger.close()
    baseline = statistics.median(costs[0])
    return {
        "spends_per_account": len(costs[0]),
        "baseline_median_us_per_spend": round(baseline, 1),
        "baseline_p90_us": round(_percentile(costs[0], 0.9), 1),
        "by_lots": {
            str(lots): {
                "median_us_per_spend": round(statistics.median(costs[lots]), 1),
                "p90_us": round(_percentile(costs[lots], 0.9), 1),
                "ratio_to_no_lots": round(statistics.median(costs[lots]) / baseline, 2),
            }
            for lots in LOT_COUNTS
        },
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_expiry(workdir: Path, lot_count: int) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'expiry.sqlite'}"
    read_model_url = f"sqlite:///{workdir / 'views.sqlite'}"
    clock = Clock()
    ledger = Ledger(event_store_env(url), clock=clock)
    instant = datetime.now(tz=UTC) + timedelta(days=1)
    accounts = -(-lot_count // LIVE_LOTS_MAX)
    started = time.perf_counter()
    ledger.open_account(OpenAccount(ISSUANCE, "CREDITS", allow_negative=True))
    made = 0
    for index in range(accounts):
        account = f"bench:expiring:{index}"
        ledger.open_account(OpenAccount(account, "CREDITS"))
        count = min(LIVE_LOTS_MAX, lot_count - made)
        for start in range(0, count, BATCH_SIZE_MAX):
            batch = [
                RecordTransfer(
                    f"expiring:{index}:{n}", ISSUANCE, account, 5, grant=GrantTerms(instant)
                )
                for n in range(start, min(count, start + BATCH_SIZE_MAX))
            ]
            ledger.record_batch(batch, atomic=True)
        made += count
    set_up_seconds = time.perf_counter() - started
    workers = ProjectionWorkers(url, read_model_url, ledger, expire_holds=False).start()
    try:
        head = ledger.recorder.max_notification_id() or 0
        caught_up = workers.view.wait_for(head, PROJECTION_WAIT_SECONDS)
        assert caught_up, "the views did not catch up with the grants"
        clock.offset = instant - datetime.now(tz=UTC)  # the instant comes
        started, cpu_started = time.perf_counter(), time.process_time()
        written = expire_due_grants(ledger, workers.view, clock())
        seconds = time.perf_counter() - started
        # CPU of the whole process meanwhile (writer, worker and projection threads): what
        # the expiry costs whatever the other processes on the machine take.
        cpu_seconds = time.process_time() - cpu_started
        breakage = ledger.get_account(breakage_account_id("CREDITS")).balance
        head = ledger.recorder.max_notification_id() or 0
        assert workers.view.wait_for(head, PROJECTION_WAIT_SECONDS)
        view_seconds = time.perf_counter() - started
        assert not workers.view.due_grant_expiries(clock(), 1)
    finally:
        workers.stop()
        ledger.close()
    assert written == lot_count, (written, lot_count)
    assert breakage == 5 * lot_count, breakage
    return {
        "lots": lot_count,
        "accounts": accounts,
        "set_up_seconds": round(set_up_seconds, 1),
        "expiry_seconds": round(seconds, 1),
        "expiry_process_cpu_seconds": round(cpu_seconds, 1),
        "views_caught_up_seconds": round(view_seconds, 1),
        "expiries_per_second": round(lot_count / seconds),
        "goal_seconds": 60,
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def timed_expiry(workdir: Path, lot_count: int) -> dict[str, Any]:
    before = load_average()
    result = bench_expiry(workdir, lot_count)
    return {**result, "load_average_before": before, "load_average_after": load_average()}


def baseline_expiry(revision: str, workdir: Path, lot_count: int) -> dict[str, Any]:
    """The same expiry by the code of ``revision``: its own bench_grants.py, from a git
    worktree, in a subprocess with this Python."""
    source = workdir / "baseline-src"
    root = Path(__file__).resolve().parent.parent
    if not source.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(source), revision],
            cwd=root,
            check=True,
            capture_output=True,
        )
    before = load_average()
    command = [sys.executable, "scripts/bench_grants.py", "--rounds", "0"]
    finished = subprocess.run(
        [*command, "--expiry-lots", str(lot_count)],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source), "PYTHONSAFEPATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    lines = finished.stdout.splitlines()
    start = max(n for n, line in enumerate(lines) if line == "{")
    result: dict[str, Any] = json.loads("\n".join(lines[start:]))["expiry"]
    return {**result, "load_average_before": before, "load_average_after": load_average()}


def remove_worktree(workdir: Path) -> None:
    source = workdir / "baseline-src"
    if source.exists():
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(source)],
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
            capture_output=True,
        )


def compare_expiry(revision: str, folder: Path, lot_count: int, rounds: int) -> dict[str, Any]:
    """Baseline and this commit in turn, ``rounds`` times each."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
    try:
        for round_number in range(rounds):
            workdir = folder / f"round-{round_number}"
            workdir.mkdir()
            runs["baseline"].append(baseline_expiry(revision, folder, lot_count))
            print(json.dumps({"baseline": runs["baseline"][-1]}), flush=True)
            runs["this"].append(timed_expiry(workdir, lot_count))
            print(json.dumps({"this": runs["this"][-1]}), flush=True)
    finally:
        remove_worktree(folder)
    medians = {
        side: statistics.median(run["expiry_seconds"] for run in side_runs)
        for side, side_runs in runs.items()
    }
    return {
        "baseline_revision": revision,
        "runs": runs,
        "median_expiry_seconds": medians,
        "speed_up": round(medians["baseline"] / medians["this"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spends", type=int, default=200)
    parser.add_argument("--expiry-lots", type=int, default=100_000)
    parser.add_argument("--expiry-baseline", metavar="REV")
    parser.add_argument("--expiry-rounds", type=int, default=1)
    arguments = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-grants-") as folder:
        if arguments.rounds:
            results["spends"] = bench_spends(Path(folder), arguments.rounds, arguments.spends)
            print(json.dumps(results, indent=2), flush=True)
        if arguments.expiry_lots and arguments.expiry_baseline:
            results["expiry"] = compare_expiry(
                arguments.expiry_baseline,
                Path(folder),
                arguments.expiry_lots,
                arguments.expiry_rounds,
            )
        elif arguments.expiry_lots:
            results["expiry"] = timed_expiry(Path(folder), arguments.expiry_lots)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
