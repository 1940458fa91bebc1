"""The cyclic collector in ``ledger serve`` under load: how often its full collections
run and how long each holds the interpreter lock (every request in flight waits for
it), this tree against ``--baseline-tree``, sides in turn.

Both servers run the embedded default (SQLite, projections in a child process) with a
``sitecustomize`` module of this script's making on their path: a ``gc.callbacks``
entry that times each collection on the thread that ran it (its CPU clock: what the
lock was held for, whatever the machine's load; and its wall clock), written out when
the script signals the server after the measured phase. The load is one of
``bench_http_goals``'s embedded shapes (``--shape``; by default 8 clients of single
transfers spread over 1,000 accounts), long enough for the writer's caches to fill and
turn over. Counts of collections are exact; CPU times
move with the machine's speed; the requests' p99 and max are printed beside them.

Run from the repository root::

    .venv/bin/python scripts/bench_collector.py --baseline-tree /tmp/bench-s9 --seconds 30
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_http import REPO, admin_key, ledger_argv, running, wait_for_projections
from bench_http_goals import EMBEDDED_SHAPES, Shape, load, open_accounts
from benchlib import in_turn, machine

OLDEST_GENERATION: Final = 2
DUMP_WAIT_SECONDS: Final = 60.0

# Only in ``ledger serve`` (its projections child has no such file to write).
SITECUSTOMIZE: Final = """
import os, sys
_out = os.environ.get("BENCH_COLLECTOR_OUT")
if _out and "serve" in sys.argv:
    import gc, json, signal, threading, time
    _passes, _started = [], {}
    def _timed(phase, info):
        ident = threading.get_ident()
        if phase == "start":
            _started[ident] = (time.perf_counter(), time.thread_time())
            return
        wall, cpu = _started.pop(ident, (time.perf_counter(), time.thread_time()))
        _passes.append((info["generation"], time.thread_time() - cpu,
                        time.perf_counter() - wall))
    gc.callbacks.insert(0, _timed)
    def _mark(signum, frame):
        _passes.append(("mark", 0.0, 0.0))
    def _dump(signum, frame):
        with open(_out + ".part", "w") as out:
            json.dump({"passes": _passes, "tracked": len(gc.get_objects()),
                       "frozen": gc.get_freeze_count()}, out)
        os.rename(_out + ".part", _out)
    signal.signal(signal.SIGUSR2, _mark)
    signal.signal(signal.SIGUSR1, _dump)
"""


def measured_passes(found: dict[str, Any]) -> list[tuple[int, float, float]]:
    """The collections after the mark (the measured phase's start)."""
    passes = found["passes"]
    marks = [index for index, entry in enumerate(passes) if entry[0] == "mark"]
    return [(int(entry[0]), entry[1], entry[2]) for entry in passes[marks[-1] + 1 :]]


def summary(name: str, passes: list[tuple[int, float, float]], result: Any) -> str:
    by_generation = []
    for generation in range(OLDEST_GENERATION + 1):
        cpu = [cpu for found, cpu, _ in passes if found == generation]
        wall = [wall for found, _, wall in passes if found == generation]
        by_generation.append(
            f"gen{generation} {len(cpu)} (CPU ms: total {sum(cpu) * 1e3:.1f}, longest "
            f"{max(cpu, default=0.0) * 1e3:.1f}, median "
            f"{statistics.median(cpu) * 1e3 if cpu else 0.0:.1f}; longest wall "
            f"{max(wall, default=0.0) * 1e3:.1f})"
        )
    total = sum(cpu for _, cpu, _ in passes)
    return (
        f"{name}: collections {'; '.join(by_generation)}; collector CPU per transfer "
        f"{total * 1e6 / max(1, result.created):.1f} µs; {result.transfers_per_s:,.0f} "
        f"transfers/s, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.0f} ms"
    )


def measure(server: Any, key: str, shape: Shape, seconds: float, warmup: float, out: Path) -> str:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(load(server.port, key, shape, f"w-{server.name}", warmup))
    wait_for_projections(server.base_url)
    server.process.send_signal(signal.SIGUSR2)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(load(server.port, key, shape, f"m-{server.name}", seconds))
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    server.process.send_signal(signal.SIGUSR1)
    waited = time.perf_counter()
    while not out.exists() and time.perf_counter() - waited < DUMP_WAIT_SECONDS:
        time.sleep(0.1)
    found = json.loads(out.read_text())
    return summary(server.name, measured_passes(found), result) + (
        f"; tracked {found['tracked']:,}, frozen {found['frozen']:,}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--shape",
        default="8",
        choices=sorted(EMBEDDED_SHAPES),
        help="bench_http_goals's embedded shape (8: single transfers from 8 clients)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as temp:
        workdir = Path(temp)
        (workdir / "site").mkdir()
        (workdir / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        for round_number in range(args.rounds):
            for side in in_turn(("ledger", "baseline"), round_number):
                tree = REPO if side == "ledger" else args.baseline_tree.resolve()
                data = workdir / f"{side}-{round_number}"
                out = workdir / f"{side}-{round_number}.json"
                paths = [str(workdir / "site")] + ([str(tree)] if side == "baseline" else [])
                env = {
                    **os.environ,
                    "LEDGER_DATA_DIR": str(data),
                    "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(paths),
                    "BENCH_COLLECTOR_OUT": str(out),
                }
                for name in ("LEDGER_EVENT_STORE", "LEDGER_READ_MODEL"):
                    env.pop(name, None)
                with running(side, ledger_argv(), env, workdir, tree) as server:
                    key = admin_key(server)
                    open_accounts(server.base_url, key)
                    wait_for_projections(server.base_url)
                    line = measure(
                        server, key, EMBEDDED_SHAPES[args.shape], args.seconds, args.warmup, out
                    )
                print(f"round {round_number + 1}, {line}", flush=True)
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
