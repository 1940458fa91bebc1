"""``ledger explain ACCOUNT`` without ``--as-of``, as of the middle of the log's time span
and as of its last event, this tree against a baseline tree, in the same run, sides in
turn: wall ms per call (best of ``--repeats`` in each round), and the answers compared.

A SQLite log of ``--transfers`` transfers between ``--users`` users is built once
(``bench_audit.build_log``: atomic batches of 1,000; kept in ``--workdir`` and reused
when given). Each side, in a process of its own importing its tree (``PYTHONPATH``),
explains ``--account`` three ways; the sides must print the same lines. Run from the
repository root::

    .venv/bin/python scripts/bench_explain.py --baseline-tree /tmp/bench-s14
"""

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from benchlib import imported_tree, in_turn, machine, measured_in_tree

REPO: Final = Path(__file__).resolve().parent.parent
LOG_FILE: Final = "events.sqlite"
# What each side explains: without --as-of, then as of two instants of the log's span.
CASES: Final = ("no --as-of", "as of the middle", "as of the last event")
# bench_audit's first user (``bench_audit.user_id(0)``; bench_audit is imported only
# when the log is built, not in a side's process).
FIRST_USER: Final = "user:0"


def measure_side(log: Path, account_id: str, moments: list[str], repeats: int) -> dict[str, Any]:
    """Best wall ms of each case, and a digest of its lines (in the side's process)."""
    from app.application.ledger import Ledger  # noqa: PLC0415
    from app.audit.explain import explain  # noqa: PLC0415
    from app.persistence.stores import event_store_env, sqlite_url  # noqa: PLC0415

    ledger = Ledger(event_store_env(sqlite_url(log)))
    figures: dict[str, Any] = {"imported": imported_tree()}
    try:
        for case, moment in zip(CASES, [None, *moments], strict=True):
            instant = None if moment is None else datetime.fromisoformat(moment)
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                lines = [line.row() for line in explain(ledger, account_id, instant)]
                best = min(best, (time.perf_counter() - started) * 1000)
            digest = hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()
            figures[case] = {"ms": best, "lines": len(lines), "digest": digest[:16]}
    finally:
        ledger.close()
    return figures


def log_span(log: Path) -> tuple[datetime, datetime]:
    """The first and last event's time stamps (this tree's code reads them)."""
    from app.application.ledger import Ledger  # noqa: PLC0415
    from app.persistence.stores import event_store_env, sqlite_url  # noqa: PLC0415

    ledger = Ledger(event_store_env(sqlite_url(log)))
    try:
        head = ledger.recorder.max_notification_id() or 0
        stamps: list[datetime] = []
        for position in (1, head):
            stored = ledger.recorder.select_notifications(start=position, limit=1)[0]
            event: Any = ledger.mapper.to_domain_event(stored)
            stamps.append(event.timestamp)
    finally:
        ledger.close()
    return stamps[0], stamps[1]


def run_side(tree: Path, log: Path, moments: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """``measure_side`` in a process of its own, importing ``tree``'s code."""
    arguments = ["--measure", str(log), "--account", args.account]
    arguments += ["--repeats", str(args.repeats), "--moments", *moments]
    return measured_in_tree(tree, __file__, arguments)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to compare against")
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--account", default=FIRST_USER, help="the account explained")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="calls per case a round")
    parser.add_argument("--workdir", type=Path, help="keep the log here (reused if built)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # a side's process
    parser.add_argument("--moments", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure_side(args.measure, args.account, args.moments, args.repeats)))
        return 0
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required")
    from bench_audit import Plan, build_log, working_directory  # noqa: PLC0415

    sides = {"baseline": args.baseline_tree.resolve(), "this tree": REPO}
    with working_directory(args.workdir) as workdir:
        log = workdir / f"{LOG_FILE}.{args.transfers}.{args.users}.{args.seed}"
        if not log.exists():
            build_log(f"sqlite:///{log}", Plan(args.transfers, args.users, args.seed))
        first, last = log_span(log)
        moments = [(first + (last - first) / 2).isoformat(), last.isoformat()]
        print(f"log: {args.transfers:,} transfers, {first} .. {last}; {args.account}")
        for number in range(args.rounds):
            found = {
                side: run_side(sides[side], log, moments, args)
                for side in in_turn(list(sides), number)
            }
            print(f"round {number + 1} (load {os.getloadavg()[0]:.1f}), ms per call:")
            for case in CASES:
                before, after = (found[side][case] for side in sides)
                same = "same lines" if before["digest"] == after["digest"] else "LINES DIFFER"
                print(
                    f"  {case}: {before['ms']:,.1f} -> {after['ms']:,.1f} "
                    f"(x{after['ms'] / before['ms']:.3f}; {after['lines']} lines, {same})"
                )
            ours = found["this tree"]
            plain = ours[CASES[0]]["ms"]
            against = ", ".join(f"{case} x{ours[case]['ms'] / plain:.0f}" for case in CASES[1:])
            print(f"  this tree against its own explain without --as-of: {against}")
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
