"""The committer's writer thread: CPU time per transfer of small group writes, this tree
against a baseline commit, trees alternating in fresh processes.

``bench_instructions.py`` counts instructions (every thread, user space only); this
reads the writer thread's own CPU clock (``pthread_getcpuclockid``: user and kernel
time, so a commit's ``fsync`` counts) around the same writes, and the whole process's.
The shapes are those of ``bench_instructions.py``: ``single`` (a ``record_transfer`` at
a time: a group write of one each), ``group8`` (independent batches of eight: a group
write of eight commands) and ``batch`` (``BATCH_RUNS`` atomic batches of ``--transfers``
spends: a group write of one command each); and ``spread8``, the 8-client spread shape
of ``bench_http_goals.py`` (groups of eight, each transfer from one account to the
next of ``--users``, so a group holds some sixteen accounts, against nine with
``group8``'s one credited account), ``SPREAD_RUNS`` times ``--transfers`` after as many
unmeasured (the write connection's page cache filled as a running server's is); and
``hot8``, the hot-account shape of ``bench_http_goals.py`` without HTTP: eight callers
on one event loop, each awaiting ``record_transfer_async`` of one transfer at a time
from one account (``issuance``) to a user, as many transfers and as many unmeasured
first as ``spread8`` (each caller its own future and wake-up of the loop, as in
``ledger serve``). Each line also says the transfers per group write.
``--history N`` writes N atomic batches of 1,000 first (unmeasured): a log of some
100,000 events has an index larger than SQLite's default page cache, and the writer's
CPU per transfer grows with it.

Run from the repository root::

    .venv/bin/python scripts/bench_writer_cpu.py --baseline 715ca5d --rounds 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench_instructions import DESCRIBED, ROOT, TRANSFERS_PER_BATCH, export
from benchlib import in_turn, machine

SHAPES: Final = ("single", "group8", "batch", "spread8", "hot8")
GROUP_OF_EIGHT: Final = 8
# Atomic batches per run of the batch shape (one batch's CPU varies much under load).
BATCH_RUNS: Final = 5
# Passes of ``--transfers`` of the spread shape, measured and before them unmeasured.
SPREAD_RUNS: Final = 8

# Run inside the tree under test (its own app/ and scripts/ first on the path).
WORKLOAD: Final = """
import asyncio, json, sys, tempfile, threading, time
from pathlib import Path
root, users, shape, transfers, batch_runs, history, spread_runs = sys.argv[1:8]
users, transfers, batch_runs, history = int(users), int(transfers), int(batch_runs), int(history)
spread_runs = int(spread_runs)
sys.path[:0] = [root, root + "/scripts"]
import bench_goals
bench_goals.USERS = users
from app.application.commands import RecordTransfer
from app.application.ledger import Ledger
from app.persistence.stores import event_store_env, sqlite_url
with tempfile.TemporaryDirectory() as tmp:
    with Ledger(dict(event_store_env(sqlite_url(Path(tmp) / "ledger.sqlite")))) as ledger:
        bench_goals.set_up(ledger)
        bench_goals.ledger_batches(ledger, "warm", max(1, history))
        writer = next(t for t in threading.enumerate() if t.name == "ledger-committer")
        clock = time.pthread_getcpuclockid(writer.ident)
        spends = bench_goals.spend_batch("s")[:transfers]
        batches = [bench_goals.spend_batch(f"b{n}")[:transfers] for n in range(batch_runs)]
        def spread(tag, count):  # bench_http_goals.py's 8 clients, each its own walk
            spots = [(n // 8 * 7 + n % 8 * 131) % users for n in range(count)]
            return [
                RecordTransfer(f"{tag}:{n}", bench_goals.user(spot),
                               bench_goals.user((spot + 1) % users), 1)
                for n, spot in enumerate(spots)
            ]
        if shape == "spread8":
            transfers *= spread_runs
            warm = spread("w", transfers)
            for start in range(0, transfers, 8):
                ledger.record_batch(warm[start : start + 8], atomic=False)
            spends = spread("s", transfers)
        def hot(tag, count):  # bench_http_goals.py's hot account: 8 callers on one loop
            async def caller(number):
                for n in range(number, count, 8):
                    await ledger.record_transfer_async(RecordTransfer(
                        f"{tag}:{n}", "issuance", bench_goals.user(n * 7 % users), 1))
            async def callers():
                await asyncio.gather(*(caller(number) for number in range(8)))
            asyncio.run(callers())
        if shape == "hot8":
            transfers *= spread_runs
            hot("w", transfers)
        size = 1 if shape == "single" else 8
        groups_before = ledger.committer.groups_taken
        writer_started = time.clock_gettime(clock)
        process_started = time.process_time()
        if shape == "hot8":
            hot("s", transfers)
        elif shape == "batch":
            for batch in batches:
                ledger.record_batch(batch, atomic=True)
            transfers *= batch_runs
        elif size == 1:
            for spend in spends:
                ledger.record_transfer(spend)
        else:
            for start in range(0, transfers, size):
                ledger.record_batch(spends[start : start + size], atomic=False)
        writer_cpu = time.clock_gettime(clock) - writer_started
        process_cpu = time.process_time() - process_started
        groups = ledger.committer.groups_taken - groups_before
print(json.dumps({"writer": writer_cpu / transfers, "process": process_cpu / transfers,
                  "per_group": transfers / max(1, groups)}))
"""


def measured(
    tree: Path, users: int, shape: str, transfers: int, history: int = 1
) -> dict[str, float]:
    """Seconds of CPU per transfer: the writer thread's and the whole process's."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKLOAD,
            str(tree),
            str(users),
            shape,
            str(transfers),
            str(BATCH_RUNS),
            str(history),
            str(SPREAD_RUNS),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"the workload failed in {tree}:\n{run.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--baseline", required=True, help="commit to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--transfers", type=int, default=1000, help="per run (default 1,000)")
    parser.add_argument("--users", type=int, default=200, help="accounts spent from")
    parser.add_argument("--shapes", default="single,group8", help="of " + ", ".join(SHAPES))
    parser.add_argument(
        "--history", type=int, default=1, help="atomic batches of 1,000 written first (default 1)"
    )
    args = parser.parse_args(argv)
    shapes = [shape.strip() for shape in args.shapes.split(",") if shape.strip()]
    if set(shapes) - set(SHAPES) or not shapes:
        parser.error(f"choose shapes from {', '.join(SHAPES)}")
    if not 0 < args.transfers <= TRANSFERS_PER_BATCH or args.transfers % GROUP_OF_EIGHT:
        parser.error(f"--transfers must be a multiple of {GROUP_OF_EIGHT} up to 1,000")
    names = ("baseline", "this tree")
    figures: dict[tuple[str, str], list[dict[str, float]]] = {
        (shape, name): [] for shape in shapes for name in names
    }
    with tempfile.TemporaryDirectory(prefix="ledger-writer-cpu-") as tmp:
        trees = {"baseline": export(args.baseline, Path(tmp)), "this tree": ROOT}
        for round_number in range(args.rounds):
            for shape in shapes:
                for name in in_turn(names, round_number):
                    figure = measured(trees[name], args.users, shape, args.transfers, args.history)
                    figures[shape, name].append(figure)
                    print(
                        f"round {round_number + 1}, {shape}, {name}: writer thread "
                        f"{figure['writer'] * 1e6:.1f} µs, process {figure['process'] * 1e6:.1f} µs"
                        f" CPU per transfer ({figure['per_group']:.1f} transfers a group write)",
                        flush=True,
                    )
    for shape in shapes:
        for part in ("writer", "process"):
            before, after = (
                statistics.median(run[part] for run in figures[shape, name]) for name in names
            )
            print(
                f"SQLite {DESCRIBED[shape]}, {part} CPU per transfer (medians): "
                f"{after * 1e6:.1f} µs against {before * 1e6:.1f} µs at {args.baseline} "
                f"after {args.history:,} batches of history "
                f"(ratio {after / before:.3f})"
            )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
