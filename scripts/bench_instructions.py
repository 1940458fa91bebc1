"""Instructions per transfer of SQLite writes, this tree against a baseline commit.

On a loaded machine the CPU time of one batch varies by a third between identical runs;
the number of instructions executed does not. This counts them with valgrind's
cachegrind (``apt-get install valgrind``): each tree runs the same script twice, with
none and with some writes of one shape after the same set-up, and the difference divided
by the transfers is the write path's instructions per transfer (every thread: the
caller's checks and the committer's writer). Trees alternate, each run in a fresh
process with ``PYTHONHASHSEED=0``. The shapes (``--shapes``):

* ``batch``: ``--batches`` atomic batches of 1,000 spends (one group write each);
* ``single``: ``--singles`` spends, one ``record_transfer`` at a time: a group write of
  one command each, as a lone HTTP client makes (the per-group costs);
* ``group8``: the same spends, eight at a time as an independent batch: a group write of
  eight commands, each in its own scope, as eight HTTP clients make.

Instructions are the user-space work only: the kernel's part of a commit (the WAL's
``fsync``) is not counted, so a small group's CPU time is larger than this suggests.

Run from the repository root (about ten minutes on two loaded cores)::

    .venv/bin/python scripts/bench_instructions.py --baseline 25f9574
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from benchlib import machine

ROOT: Final = Path(__file__).resolve().parent.parent
TRANSFERS_PER_BATCH: Final = 1_000
# Under valgrind everything is some fifty times slower: no write may time out.
WRITE_TIMEOUT_SECONDS: Final = "3600"
INSTRUCTIONS: Final = re.compile(r"I\s+refs:\s+([\d,]+)")
SHAPES: Final = ("batch", "single", "group8")
GROUP_OF_EIGHT: Final = 8

# Run inside the tree under test (its own app/ and scripts/ first on the path).
WORKLOAD: Final = """
import sys, tempfile
from pathlib import Path
root, users, shape, transfers, timeout = sys.argv[1:6]
users, transfers = int(users), int(transfers)
sys.path[:0] = [root, root + "/scripts"]
import bench_goals
bench_goals.USERS = users
from app.application.ledger import Ledger
from app.persistence.stores import event_store_env, sqlite_url
with tempfile.TemporaryDirectory() as tmp:
    env = dict(event_store_env(sqlite_url(Path(tmp) / "ledger.sqlite")))
    env["WRITE_TIMEOUT_SECONDS"] = timeout
    with Ledger(env) as ledger:
        bench_goals.set_up(ledger)
        bench_goals.ledger_batches(ledger, "warm", 1)
        if shape == "batch":
            for number in range(transfers // 1000):
                ledger.record_batch(bench_goals.spend_batch(f"b{number}"), atomic=True)
        else:
            spends = bench_goals.spend_batch("s")[:transfers]
            size = 1 if shape == "single" else 8
            for start in range(0, transfers, size):
                if size == 1:
                    ledger.record_transfer(spends[start])
                else:
                    ledger.record_batch(spends[start : start + size], atomic=False)
"""


def instructions(tree: Path, users: int, shape: str, transfers: int) -> int:
    """Instructions the workload executes in ``tree`` (set-up included)."""
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            WORKLOAD,
            str(tree),
            str(users),
            shape,
            str(transfers),
            WRITE_TIMEOUT_SECONDS,
        ],
        cwd=tree,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    found = INSTRUCTIONS.search(run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"the workload failed in {tree}:\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_transfer(tree: Path, users: int, shape: str, transfers: int) -> float:
    """The writes' instructions per transfer: two runs at once (none and ``transfers``)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        without, with_writes = pool.map(
            lambda count: instructions(tree, users, shape, count), (0, transfers)
        )
    return (with_writes - without) / transfers


def export(commit: str, into: Path) -> Path:
    """The baseline commit's files (``git archive``), unpacked."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "archive", "--output", str(archive), commit], cwd=ROOT, check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--baseline", required=True, help="commit to compare against")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (default 1)")
    parser.add_argument("--batches", type=int, default=3, help="batches of 1,000 (default 3)")
    parser.add_argument(
        "--singles", type=int, default=400, help="transfers of the single and group8 shapes"
    )
    parser.add_argument("--users", type=int, default=200, help="accounts spent from")
    parser.add_argument(
        "--shapes", default="batch", help=f"comma-separated, of {', '.join(SHAPES)} (default batch)"
    )
    args = parser.parse_args(argv)
    shapes = [shape.strip() for shape in args.shapes.split(",") if shape.strip()]
    unknown = set(shapes) - set(SHAPES)
    if unknown or not shapes:
        parser.error(f"unknown shapes {sorted(unknown)}; choose from {', '.join(SHAPES)}")
    if not 0 < args.singles <= TRANSFERS_PER_BATCH or args.singles % GROUP_OF_EIGHT:
        parser.error(f"--singles must be a multiple of {GROUP_OF_EIGHT} up to 1,000")
    transfers = {"batch": args.batches * TRANSFERS_PER_BATCH}
    transfers.update(single=args.singles, group8=args.singles)
    figures: dict[tuple[str, str], list[float]] = {
        (shape, name): [] for shape in shapes for name in ("baseline", "this tree")
    }
    with tempfile.TemporaryDirectory(prefix="ledger-instructions-") as tmp:
        trees = {"baseline": export(args.baseline, Path(tmp)), "this tree": ROOT}
        for round_number in range(args.rounds):
            order = list(trees) if round_number % 2 == 0 else list(reversed(trees))
            for shape in shapes:
                for name in order:
                    figure = per_transfer(trees[name], args.users, shape, transfers[shape])
                    figures[shape, name].append(figure)
                    print(
                        f"round {round_number + 1}, {shape}, {name}: "
                        f"{figure:,.0f} instructions per transfer",
                        flush=True,
                    )
    for shape in shapes:
        before, after = (
            statistics.median(figures[shape, name]) for name in ("baseline", "this tree")
        )
        print(
            f"SQLite {DESCRIBED[shape]}: {after:,.0f} instructions per transfer against "
            f"{before:,.0f} at {args.baseline} (ratio {after / before:.3f})"
        )
    print(f"machine: {machine()}")
    return 0


DESCRIBED: Final = {
    "batch": "atomic batches of 1,000",
    "single": "single transfers, a group write each",
    "group8": "groups of 8 single transfers",
    "spread8": "groups of 8 single transfers spread over the accounts",
    "hot8": "8 callers on one event loop, single transfers from one hot account",
}


if __name__ == "__main__":
    raise SystemExit(main())
