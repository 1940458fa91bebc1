"""Instructions per transfer of SQLite atomic batches, this tree against a baseline commit.

On a loaded machine the CPU time of one batch varies by a third between identical runs;
the number of instructions executed does not. This counts them with valgrind's
cachegrind (``apt-get install valgrind``): each tree runs the same script twice, with 0
and with ``--batches`` atomic batches of 1,000 spends after the same set-up, and the
difference divided by the transfers is the write path's instructions per transfer (every
thread: the caller's checks and the committer's writer). Trees alternate, each run in a
fresh process with ``PYTHONHASHSEED=0``.

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

# Run inside the tree under test (its own app/ and scripts/ first on the path).
WORKLOAD: Final = """
import sys, tempfile
from pathlib import Path
root, users, batches, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
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
        for number in range(batches):
            ledger.record_batch(bench_goals.spend_batch(f"b{number}"), atomic=True)
"""


def instructions(tree: Path, users: int, batches: int) -> int:
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
            str(batches),
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


def per_transfer(tree: Path, users: int, batches: int) -> float:
    """The batches' instructions per transfer: two runs at once (0 and ``batches``)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        without, with_batches = pool.map(
            lambda count: instructions(tree, users, count), (0, batches)
        )
    return (with_batches - without) / (batches * TRANSFERS_PER_BATCH)


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
    parser.add_argument("--users", type=int, default=200, help="accounts spent from")
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {"baseline": [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="ledger-instructions-") as tmp:
        trees = {"baseline": export(args.baseline, Path(tmp)), "this tree": ROOT}
        for round_number in range(args.rounds):
            order = list(trees) if round_number % 2 == 0 else list(reversed(trees))
            for name in order:
                figure = per_transfer(trees[name], args.users, args.batches)
                figures[name].append(figure)
                print(f"round {round_number + 1}, {name}: {figure:,.0f} instructions per transfer")
    before, after = (statistics.median(figures[name]) for name in ("baseline", "this tree"))
    print(
        f"SQLite atomic batches of 1,000: {after:,.0f} instructions per transfer against "
        f"{before:,.0f} at {args.baseline} (ratio {after / before:.3f})"
    )
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
