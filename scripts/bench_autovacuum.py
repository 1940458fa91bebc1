"""Writers on PostgreSQL while autovacuum works on the events table (decision 0039), this
tree against a baseline tree, in the same run, sides in turn.

One server with ``autovacuum_naptime = 1`` (autovacuum visits each database every
second instead of every minute); each side has a database of its own, loaded once with
``--load`` atomic batches of 1,000 transfers, and its events table set to be analysed
every 2,000 and vacuumed every 5,000 new rows. A phase: ``--clients`` threads of one
process each record single transfers to one hot account for ``--seconds``, pausing
``--pause-ms`` between two (a steady load that leaves the table free now and then, as
clients over HTTP do). Each phase prints its rate, its latencies, the requests over 200
and 500 ms (a stall holds every client at once) and what autovacuum did to the events
table meanwhile: runs finished, from ``pg_stat_user_tables``.

The default naptime of 60 s makes the same thing rare, not different: three sessions' end
runs met it once each (docs/benchmarks.md, "the 1 s stall"). Run from the repository
root::

    .venv/bin/python scripts/bench_autovacuum.py --baseline-tree /tmp/bench-s15
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from benchlib import imported_tree, in_turn, machine, measured_in_tree

REPO: Final = Path(__file__).resolve().parent.parent
SERVER_SETTINGS: Final = (
    "-c autovacuum_naptime=1 -c log_autovacuum_min_duration=0 -c log_lock_waits=on"
)
TABLE_SETTINGS: Final = (
    "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000, "
    "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000"
)
SLOW_MS: Final = (200.0, 500.0)
BATCH: Final = 1000


def measure_side(url: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One phase (in the side's process, importing its tree's code)."""
    import psycopg  # noqa: PLC0415

    from app.application.commands import OpenAccount, RecordTransfer  # noqa: PLC0415
    from app.application.ledger import Ledger  # noqa: PLC0415
    from app.persistence.stores import event_store_env  # noqa: PLC0415

    figures: dict[str, Any] = {"imported": imported_tree()}
    with Ledger(event_store_env(url)) as ledger:
        recorder: Any = ledger.recorder
        table = f"{recorder.datastore.schema}.{recorder.events_table_name}"
        if not ledger.recorder.max_notification_id():
            ledger.open_account(OpenAccount("issuance", "CREDITS", allow_negative=True))
            ledger.open_account(OpenAccount("hot", "CREDITS"))
            for number in range(args.load):
                batch = [
                    RecordTransfer(f"load:{number}:{i}", "issuance", "hot", 1) for i in range(BATCH)
                ]
                ledger.record_batch(batch, atomic=True)
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"ALTER TABLE {table} SET ({TABLE_SETTINGS})")
        before = autovacuum_runs(url, table)
        latencies: list[float] = []
        slow_at: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def client(number: int) -> None:
            mine: list[float] = []
            count = 0
            while time.monotonic() < stop:
                started = time.monotonic()
                command = RecordTransfer(f"{tag}:{number}:{count}", "issuance", "hot", 1)
                ledger.record_transfer(command)
                took = (time.monotonic() - started) * 1000
                mine.append(took)
                if took > SLOW_MS[0]:
                    with lock:
                        slow_at.append(started)
                count += 1
                time.sleep(args.pause_ms / 1000)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        wall = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - wall
        time.sleep(1.0)  # autovacuum's statistics of a run that ended with the phase
        after = autovacuum_runs(url, table)
    latencies.sort()
    figures.update(
        rate=len(latencies) / wall,
        p50=statistics.median(latencies),
        p99=latencies[int(0.99 * (len(latencies) - 1))],
        max=latencies[-1],
        over=[sum(1 for took in latencies if took > ms) for ms in SLOW_MS],
        moments=len(stall_moments(slow_at)),
        vacuums=after[0] - before[0],
        analyses=after[1] - before[1],
    )
    return figures


def autovacuum_runs(url: str, table: str) -> tuple[int, int]:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables "
            "WHERE relid = %s::regclass",
            (table,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def stall_moments(starts: list[float]) -> list[float]:
    """Slow requests that began within a second of each other count as one moment."""
    moments: list[float] = []
    for start in sorted(starts):
        if not moments or start - moments[-1] > 1.0:
            moments.append(start)
    return moments


def run_side(tree: Path, url: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """``measure_side`` in a process of its own, importing ``tree``'s code."""
    arguments = ["--measure", url, "--tag", tag, "--load", str(args.load)]
    arguments += ["--seconds", str(args.seconds), "--clients", str(args.clients)]
    arguments += ["--pause-ms", str(args.pause_ms)]
    return measured_in_tree(tree, __file__, arguments)


def phase_line(side: str, found: dict[str, Any]) -> str:
    return (
        f"  {side}: {found['rate']:,.0f} transfers/s; p50 {found['p50']:.1f} ms, p99 "
        f"{found['p99']:.1f} ms, max {found['max']:.0f} ms; over {SLOW_MS[0]:.0f} ms "
        f"{found['over'][0]}, over {SLOW_MS[1]:.0f} ms {found['over'][1]}, in "
        f"{found['moments']} moments; autovacuum on the events table: "
        f"{found['vacuums']} vacuums, {found['analyses']} analyses finished"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to compare against")
    parser.add_argument("--load", type=int, default=200, help="batches of 1,000 loaded first")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pause-ms", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a side's process: its URL
    parser.add_argument("--tag", default="t", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure_side(args.measure, args, args.tag)))
        return 0
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required")
    sys.path.insert(0, str(REPO))
    from tests.support.pgserver import running_postgres  # noqa: PLC0415

    sides = {"baseline": args.baseline_tree.resolve(), "this tree": REPO}
    print(json.dumps(machine()))
    with running_postgres(fsync=True, settings=SERVER_SETTINGS) as server:
        urls = {side: server.create_database(f"side{n}") for n, side in enumerate(sides)}
        results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for number in range(args.rounds):
            print(f"round {number + 1} (load average {os.getloadavg()[0]:.1f}):", flush=True)
            for side in in_turn(list(sides), number):
                found = run_side(sides[side], urls[side], args, f"r{number}")
                results[side].append(found)
                print(phase_line(side, found), flush=True)
    mine, theirs = results["this tree"], results["baseline"]
    print(
        "rate, this tree / baseline: "
        + ", ".join(f"{a['rate'] / b['rate']:.2f}" for a, b in zip(mine, theirs, strict=True))
        + "; max latency, this tree / baseline: "
        + ", ".join(f"{a['max'] / b['max']:.2f}" for a, b in zip(mine, theirs, strict=True))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
