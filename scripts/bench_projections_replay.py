"""The projections child's CPU per transfer for live-sized steps against a catch-up, this
tree against a baseline commit, measured in the same run, sides alternating.

``bench_projections_live.py`` measures the child under real HTTP load, but on a shared
machine its figures swing with the scheduling (how long the child waited decides how
large its batches were). This script takes that out: each side builds the same log (a
seeded run of single transfers between ``--accounts`` accounts, each its own command)
and then, in its own process, measures the thread CPU time of

* the views' writer applying the log in steps of ``--step`` events (what a live poll
  hands it under load: some 300 events at 2,000 transfers/s and 50 ms), each step
  decoded and applied in one transaction as the runner does;
* the same log applied into a fresh view generation in catch-up steps
  (``CATCH_UP_STEP`` events);
* the feed projector projecting the same live-sized steps, already decoded (as it
  does when it follows the runner's shared batches).

Every figure is µs per transfer, the minimum over ``--repeats`` repetitions of each
phase; the ratio is this tree over the baseline. Run from the repository root::

    .venv/bin/python scripts/bench_projections_replay.py --baseline 76f9a22 --rounds 3
"""

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from eventsourcing.persistence import Tracking

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger, collector_paused
from app.events.database import Database, events_database_url
from app.events.projector import FeedProjector
from app.events.store import FeedStore
from app.persistence.decoding import domain_event_reader
from app.settings import Settings
from projections.runner import open_view

REPO: Final = Path(__file__).resolve().parent.parent
CATCH_UP_STEP: Final = 5_000
EVENTS_PER_TRANSFER: Final = 3
UNIT: Final = "CREDITS"


def build_log(data_dir: Path, accounts: int, transfers: int, seed: int) -> None:

    ledger = Ledger(Settings(data_dir=data_dir, log_format="console").ledger_env())
    try:
        ids = [f"acct:{n}" for n in range(accounts)]
        for account_id in ids:
            ledger.open_account(OpenAccount(id=account_id, unit=UNIT, allow_negative=True))
        chooser = random.Random(seed)
        for n in range(transfers):
            debit, credit = chooser.sample(ids, 2)
            ledger.record_transfer(
                RecordTransfer(
                    id=f"t{n}", debit_account_id=debit, credit_account_id=credit, amount=1
                )
            )
    finally:
        ledger.close()


def measure_side(data_dir: Path, step: int, repeats: int) -> dict[str, float]:
    """Thread CPU µs per transfer of each phase (run inside the side's own process)."""

    settings = Settings(data_dir=data_dir, log_format="console")
    ledger = Ledger(settings.ledger_env())
    gc.freeze()  # as the child does once it has started (``freeze_long_lived_objects``)
    notifications = ledger.recorder.select_notifications(start=0, limit=10**9)
    first_transfer = next(
        index for index, n in enumerate(notifications) if "TransferRecorded" in n.topic
    )
    opening, live = notifications[:first_transfer], notifications[first_transfer:]
    decode = domain_event_reader(ledger.mapper)
    transfers = len(live) / EVENTS_PER_TRANSFER
    figures: dict[str, list[float]] = {"views live": [], "views catch-up": [], "feed live": []}
    generation = 0
    # The views and feeds of this process, beside the log, new for each phase.
    scratch = Path(tempfile.mkdtemp(dir=data_dir))
    views_url = f"sqlite:///{scratch / 'views.sqlite'}"

    def apply(view: Any, batch: Sequence[Any]) -> None:
        with collector_paused():  # as the runner applies a batch
            events = [decode(n) for n in batch]
            tracking = Tracking(ledger.name, batch[-1].id)
            view.apply_at_positions(events, [n.id for n in batch], tracking)

    def views(size: int) -> float:
        nonlocal generation
        generation += 1
        view = open_view(views_url, generation)
        apply(view, opening)
        started = time.thread_time()
        for start in range(0, len(live), size):
            apply(view, live[start : start + size])
        return time.thread_time() - started

    def feed() -> float:
        nonlocal generation
        generation += 1
        url = f"sqlite:///{scratch / f'feed{generation}.sqlite'}"
        projector = FeedProjector(ledger, FeedStore(Database(events_database_url(url))))
        projector._project(0, opening, [decode(n) for n in opening])
        steps = [live[start : start + step] for start in range(0, len(live), step)]
        decoded = [[decode(n) for n in batch] for batch in steps]
        checkpoint = opening[-1].id
        started = time.thread_time()
        for batch, events in zip(steps, decoded, strict=True):
            projector._project(checkpoint, batch, events)
            checkpoint = batch[-1].id
        spent = time.thread_time() - started
        projector.store.database.close()
        return spent

    for _ in range(repeats):
        figures["views live"].append(views(step))
        figures["views catch-up"].append(views(CATCH_UP_STEP))
        figures["feed live"].append(feed())
    ledger.close()
    return {name: min(values) * 1e6 / transfers for name, values in figures.items()}


def run_side(source: Path, data_dir: Path, step: int, repeats: int) -> dict[str, float]:
    """``measure_side`` in a process of its own, importing ``source``'s code."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--measure", str(data_dir)]
    argv += ["--step", str(step), "--repeats", str(repeats)]
    done = subprocess.run(argv, cwd=source, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{source}: measuring failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="the commit to compare against")
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--transfers", type=int, default=3_000)
    parser.add_argument("--step", type=int, default=300, help="events per live step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # a side's process
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure_side(args.measure, args.step, args.repeats)))
        return 0
    if args.baseline is None:
        parser.error("--baseline is required")
    # Here only: it puts this tree's root first on the path, which a side's own process
    # (``--measure``, importing that side's code) must not do.
    from bench_projections_live import baseline_worktree  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bench-projections-replay-") as temp:
        workdir = Path(temp)
        old = baseline_worktree(args.baseline, workdir)
        try:
            data = {"baseline": workdir / "baseline-data", "this tree": workdir / "this-data"}
            build_log(data["this tree"], args.accounts, args.transfers, args.seed)
            # Each side reads its own copy of the same log: its views and feed beside it.
            subprocess.run(["cp", "-r", str(data["this tree"]), str(data["baseline"])], check=True)
            sources = {"baseline": old, "this tree": REPO}
            for number in range(args.rounds):
                order = ("baseline", "this tree") if number % 2 == 0 else ("this tree", "baseline")
                found = {
                    side: run_side(sources[side], data[side], args.step, args.repeats)
                    for side in order
                }
                print(f"round {number + 1} (load {os.getloadavg()[0]:.1f}), µs per transfer:")
                for name in found["this tree"]:
                    before, after = found["baseline"][name], found["this tree"][name]
                    print(f"  {name}: {before:,.1f} -> {after:,.1f} (x{after / before:.2f})")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
