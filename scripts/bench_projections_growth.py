"""The views' writer and the feed projector as the log grows: thread CPU per transfer
of live-sized steps at several log sizes, this tree against a baseline tree, measured
in the same run, sides in turn.

The child's cost per transfer grows with the log (benchmarks.md, "Second rounds are
dearer"): an index keyed by account or by a random id dirties a page per insert once it
has more leaf pages than a step has inserts. ``bench_projections_replay.py`` starts each
phase from empty views and cannot show it. Here a log of ``--batches`` atomic batches
of 1,000 transfers between ``--accounts`` accounts (seeded) is built once; each side, in
a process of its own importing its tree (``PYTHONPATH``), applies it to new views (or a
new feed) in catch-up steps of ``CATCH_UP_STEP`` events up to each mark, then measures
``--live`` transfers in steps of ``--step`` events (what a live poll hands the writer
under load), and goes on to the next mark. Each mark's live steps start from an empty
WAL and end with a checkpoint of what they wrote, inside the measured time (printed
apart too): where SQLite's automatic checkpoint fell (every 10,000 pages of WAL) had
made one mark's figure three times its neighbours'. Run from the repository root::

    .venv/bin/python scripts/bench_projections_growth.py --baseline-tree /tmp/bench-s11
"""

import argparse
import gc
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Final

from benchlib import in_turn, machine

REPO: Final = Path(__file__).resolve().parent.parent
CATCH_UP_STEP: Final = 5_000
EVENTS_PER_TRANSFER: Final = 3
BATCH_SIZE: Final = 1_000
UNIT: Final = "CREDITS"
PARTS: Final = ("views", "feed")


def build_log(data_dir: Path, accounts: int, batches: int, seed: int) -> None:
    from app.application.commands import OpenAccount, RecordTransfer  # noqa: PLC0415
    from app.application.ledger import Ledger  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415

    ledger = Ledger(Settings(data_dir=data_dir, log_format="console").ledger_env())
    try:
        ids = [f"acct:{n}" for n in range(accounts)]
        for account_id in ids:
            ledger.open_account(OpenAccount(id=account_id, unit=UNIT, allow_negative=True))
        chooser = random.Random(seed)
        for batch in range(batches):
            commands = []
            for n in range(batch * BATCH_SIZE, (batch + 1) * BATCH_SIZE):
                debit, credit = chooser.sample(ids, 2)
                commands.append(RecordTransfer(f"t{n}", debit, credit, 1))
            ledger.record_batch(commands, atomic=True)
    finally:
        ledger.close()


def measure_side(
    data_dir: Path, part: str, accounts: int, marks: Sequence[int], live: int, step: int
) -> dict[str, float]:
    """Thread CPU µs per transfer of the live steps after each mark (in the side's own
    process): views as the runner applies a batch, the feed as its projector does."""
    from eventsourcing.persistence import Tracking  # noqa: PLC0415

    from app.application.ledger import Ledger, collector_paused  # noqa: PLC0415
    from app.events.database import Database, events_database_url  # noqa: PLC0415
    from app.events.projector import FeedProjector  # noqa: PLC0415
    from app.events.store import FeedStore  # noqa: PLC0415
    from app.persistence.decoding import domain_event_reader  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415
    from projections.runner import open_view  # noqa: PLC0415

    ledger = Ledger(Settings(data_dir=data_dir, log_format="console").ledger_env())
    notifications = ledger.recorder.select_notifications(start=0, limit=10**9)
    # As the child does once it has started, and after each full collection
    # (app/heap.py): the whole log read up front (some 600,000 objects) is out of the
    # collector's sight, or the full collection that walks it once falls in one mark's
    # steps (the feed's, whose steps run with the collector on: 3 times its neighbours).
    gc.collect()
    gc.freeze()
    decode = domain_event_reader(ledger.mapper)
    scratch = Path(tempfile.mkdtemp(dir=data_dir))
    apply: Callable[[Sequence[Any]], None]
    if part == "views":
        view: Any = open_view(f"sqlite:///{scratch / 'views.sqlite'}", 1)

        def apply_views(batch: Sequence[Any]) -> None:
            with collector_paused():
                events = [decode(n) for n in batch]
                tracking = Tracking(ledger.name, batch[-1].id)
                view.apply_at_positions(events, [n.id for n in batch], tracking)

        apply = apply_views
    else:
        url = events_database_url(f"sqlite:///{scratch / 'views.sqlite'}")
        projector = FeedProjector(ledger, FeedStore(Database(url)))
        checkpoint = [0]

        def apply_feed(batch: Sequence[Any]) -> None:
            projector._project(checkpoint[0], batch, [decode(n) for n in batch])
            checkpoint[0] = batch[-1].id

        apply = apply_feed
    figures = measure_marks(apply, notifications, scratch, accounts, marks, live, step)
    ledger.close()
    return figures


def measure_marks(
    apply: Callable[[Sequence[Any]], None],
    notifications: Sequence[Any],
    scratch: Path,
    accounts: int,
    marks: Sequence[int],
    live: int,
    step: int,
) -> dict[str, float]:
    """Catch up to each mark, then the thread CPU µs per transfer of ``live`` transfers
    in steps of ``step`` events, their checkpoint included (and given apart)."""
    opening = accounts  # each account opened by an event of its own, before any transfer
    figures: dict[str, float] = {}
    done = 0
    for mark in marks:
        target = opening + mark * EVENTS_PER_TRANSFER
        while done < target:
            upto = min(target, done + CATCH_UP_STEP)
            apply(notifications[done:upto])
            done = upto
        write_back(scratch)
        end = min(len(notifications), done + live * EVENTS_PER_TRANSFER)
        started = time.thread_time()
        while done < end:
            apply(notifications[done : done + step])
            done = min(end, done + step)
        stepped = time.thread_time()
        write_back(scratch)
        measured = (end - target) / EVENTS_PER_TRANSFER
        figures[str(mark)] = (time.thread_time() - started) * 1e6 / measured
        figures[f"{mark}:checkpoint"] = (time.thread_time() - stepped) * 1e6 / measured
    return figures


def write_back(scratch: Path) -> None:
    """Every database of the side's views or feed written back and its WAL emptied
    (on this thread: its CPU is the measured thread's)."""
    for path in sorted(scratch.glob("*.sqlite")):
        with closing(sqlite3.connect(path)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def run_side(
    tree: Path, data_dir: Path, part: str, accounts: int, marks: Sequence[int], live: int, step: int
) -> dict[str, float]:
    """``measure_side`` in a process of its own, importing ``tree``'s code, on a copy of
    the log (its views and feed beside it)."""
    copy = data_dir.with_name(f"{data_dir.name}-{os.getpid()}-side")
    shutil.copytree(data_dir, copy)
    try:
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(__file__).parent}"}
        argv = [sys.executable, str(Path(__file__).resolve()), "--measure", str(copy)]
        argv += ["--part", part, "--accounts", str(accounts), "--marks", ",".join(map(str, marks))]
        argv += ["--live", str(live), "--step", str(step)]
        done = subprocess.run(argv, cwd=tree, env=env, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{tree}: measuring failed:\n{done.stderr}")
        figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return figures
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to compare against")
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--batches", type=int, default=200, help="of 1,000 transfers")
    parser.add_argument("--marks", default="0,50000,100000,150000,195000", help="transfers")
    parser.add_argument("--live", type=int, default=1_500, help="transfers measured a mark")
    parser.add_argument("--step", type=int, default=300, help="events per live step")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # a side's process
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    marks = [int(mark) for mark in args.marks.split(",")]
    if args.measure is not None:
        figures = measure_side(args.measure, args.part, args.accounts, marks, args.live, args.step)
        print(json.dumps(figures))
        return 0
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required")
    if max(marks) + args.live > args.batches * BATCH_SIZE:
        parser.error("the log ends before the last mark's live transfers")
    sides = {"baseline": args.baseline_tree.resolve(), "this tree": REPO}
    with tempfile.TemporaryDirectory(prefix="bench-projections-growth-") as temp:
        log = Path(temp) / "log"
        build_log(log, args.accounts, args.batches, args.seed)
        for number in range(args.rounds):
            for part in args.parts.split(","):
                found = {
                    side: run_side(
                        sides[side], log, part, args.accounts, marks, args.live, args.step
                    )
                    for side in in_turn(list(sides), number)
                }
                print(f"round {number + 1}, {part} (load {os.getloadavg()[0]:.1f}), µs/transfer:")
                for mark in map(str, marks):
                    before, after = found["baseline"][mark], found["this tree"][mark]
                    written = [found[side][f"{mark}:checkpoint"] for side in sides]
                    print(
                        f"  after {int(mark):,} transfers: {before:,.1f} -> {after:,.1f} "
                        f"(x{after / before:.2f}; of which the checkpoint "
                        f"{written[0]:,.1f} -> {written[1]:,.1f})"
                    )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
