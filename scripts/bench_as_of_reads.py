"""The views' reads by time, this tree against a baseline tree, in the same run, sides
in turn: ``balance_as_of``, ``totals(moment=)``, ``history`` and ``entries(since=,
until=)``, wall µs per read (median and 90th percentile) on views of one log.

A log of ``--batches`` atomic batches of 1,000 transfers between ``--accounts``
accounts is built once (``bench_projections_growth.build_log``); each side, in a
process of its own importing its tree (``PYTHONPATH``), projects it into views of its
own (once, kept for the later rounds), then reads at seeded random accounts and
instants within the log's time span. Run from the repository root::

    .venv/bin/python scripts/bench_as_of_reads.py --baseline-tree /tmp/bench-s13
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
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from bench_projections_growth import CATCH_UP_STEP, build_log, write_back
from benchlib import in_turn, machine

REPO: Final = Path(__file__).resolve().parent.parent
READS: Final = ("balance_as_of", "totals", "history", "entries")
# Reads of totals per round: each is one correlated lookup per account.
TOTALS_SHARE: Final = 10
ENTRIES_PAGE: Final = 100


def project_once(data_dir: Path, views: Path) -> None:
    """The whole log projected into ``views`` (catch-up steps), unless it is already."""
    from eventsourcing.persistence import Tracking  # noqa: PLC0415

    from app.application.ledger import Ledger  # noqa: PLC0415
    from app.persistence.decoding import domain_event_reader  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415
    from projections.runner import open_view  # noqa: PLC0415

    marker = views / "projected"
    if marker.exists():
        return
    views.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(Settings(data_dir=data_dir, log_format="console").ledger_env())
    try:
        notifications = ledger.recorder.select_notifications(start=0, limit=10**9)
        decode = domain_event_reader(ledger.mapper)
        view: Any = open_view(f"sqlite:///{views / 'views.sqlite'}", 1)
        for start in range(0, len(notifications), CATCH_UP_STEP):
            batch = notifications[start : start + CATCH_UP_STEP]
            events = [decode(n) for n in batch]
            view.apply_at_positions(
                events, [n.id for n in batch], Tracking(ledger.name, batch[-1].id)
            )
        view.datastore.close()
    finally:
        ledger.close()
    write_back(views)
    marker.write_text("done")


def measure_side(
    data_dir: Path, views: Path, accounts: int, reads: int, seed: int
) -> dict[str, float]:
    """Median and 90th percentile wall µs of each read kind (in the side's process)."""
    from projections.runner import open_view  # noqa: PLC0415

    project_once(data_dir, views)
    view: Any = open_view(f"sqlite:///{views / 'views.sqlite'}", 1)
    first, last = _time_span(view)
    chooser = random.Random(seed)
    span = (last - first).total_seconds()

    def instant() -> datetime:
        return first + (last - first) * chooser.random() if span else first

    def account() -> str:
        return f"acct:{chooser.randrange(accounts)}"

    def entries() -> object:
        since, until = sorted((instant(), instant()))
        return view.entries(account(), since=since, until=until, limit=ENTRIES_PAGE)

    calls: dict[str, Callable[[], object]] = {
        "balance_as_of": lambda: view.balance_as_of(account(), instant()),
        "totals": lambda: view.totals(moment=instant()),
        "history": lambda: view.history(account(), "hour", first, last),
        "entries": entries,
    }
    figures: dict[str, float] = {}
    for name in READS:
        times = []
        count = max(1, reads // TOTALS_SHARE) if name == "totals" else reads
        for _ in range(count):
            started = time.perf_counter()
            calls[name]()
            times.append((time.perf_counter() - started) * 1e6)
        figures[f"{name}:median"] = statistics.median(times)
        figures[f"{name}:p90"] = statistics.quantiles(times, n=10)[-1] if count > 1 else times[0]
    view.datastore.close()
    return figures


def _time_span(view: Any) -> tuple[datetime, datetime]:
    """The first and last recorded time of the views' statement lines."""
    row = view._one("SELECT MIN(recorded_at) AS first, MAX(recorded_at) AS last FROM {entries}")
    return datetime.fromisoformat(row["first"]), datetime.fromisoformat(row["last"])


def run_side(tree: Path, data_dir: Path, views: Path, args: argparse.Namespace) -> dict[str, float]:
    """``measure_side`` in a process of its own, importing ``tree``'s code."""
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(__file__).parent}"}
    argv = [sys.executable, str(Path(__file__).resolve()), "--measure", str(data_dir)]
    argv += ["--views", str(views), "--accounts", str(args.accounts)]
    argv += ["--reads", str(args.reads), "--seed", str(args.seed)]
    done = subprocess.run(argv, cwd=tree, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: measuring failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to compare against")
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--batches", type=int, default=40, help="of 1,000 transfers")
    parser.add_argument("--reads", type=int, default=2_000, help="of each kind a round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # a side's process
    parser.add_argument("--views", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        figures = measure_side(args.measure, args.views, args.accounts, args.reads, args.seed)
        print(json.dumps(figures))
        return 0
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required")
    sides = {"baseline": args.baseline_tree.resolve(), "this tree": REPO}
    with tempfile.TemporaryDirectory(prefix="bench-as-of-reads-") as temp:
        log = Path(temp) / "log"
        build_log(log, args.accounts, args.batches, args.seed)
        views = {side: Path(temp) / f"views-{number}" for number, side in enumerate(sides)}
        for number in range(args.rounds):
            found = {
                side: run_side(sides[side], log, views[side], args)
                for side in in_turn(list(sides), number)
            }
            print(f"round {number + 1} (load {os.getloadavg()[0]:.1f}), µs per read:")
            for name in READS:
                before, after = (found[side][f"{name}:median"] for side in sides)
                tail_before, tail_after = (found[side][f"{name}:p90"] for side in sides)
                print(
                    f"  {name}: median {before:,.0f} -> {after:,.0f} (x{after / before:.2f}), "
                    f"p90 {tail_before:,.0f} -> {tail_after:,.0f} (x{tail_after / tail_before:.2f})"
                )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
