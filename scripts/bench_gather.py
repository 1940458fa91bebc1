"""The writer's gather under callers that do not all come straight back (decision 0014,
eleventh addendum).

A ``Committer`` whose group write is a busy wait (CPU, as SQLite's commit is) serves one
closed-loop caller and some callers that pause between commands, or only closed-loop
callers. Sides in turn: no gather (``never_gather``), this code's gather with the SQLite
window (``Ledger._gather_seconds``: no longer than the last write, at most
``GATHER_SECONDS_MAX``) and, with ``--baseline-tree``, that checkout's committer with the
same window. Printed per round: the closed-loop callers' commands and mean latency, all
commands, transfers per group, and the ratios against no gather.

Run from the repository root::

    .venv/bin/python scripts/bench_gather.py --rounds 2 --baseline-tree /tmp/old
"""

import argparse
import importlib.util
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import machine

import app.application.committer as committer_module
from app.application.ledger import GATHER_SECONDS_MAX

QUEUE_UNITS_MAX: Final = 1_000
TIMEOUT_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Shape:
    name: str
    closed_loop: int
    pausing: int
    pause_seconds: float


SHAPES: Final = {
    "3pausing": Shape("1 closed-loop + 3 pausing 3 ms", 1, 3, 0.003),
    "7pausing": Shape("1 closed-loop + 7 pausing 2 ms", 1, 7, 0.002),
    "8closed": Shape("8 closed-loop", 8, 0, 0.0),
}


@dataclass(frozen=True)
class Phase:
    closed_loop_seconds: list[float]
    pausing_commands: int
    groups: int
    # Gather waits that ran out, and groups taken at once after them (0 where the
    # committer has no such counters).
    skips: tuple[int, int]

    @property
    def commands(self) -> int:
        return len(self.closed_loop_seconds) + self.pausing_commands

    @property
    def mean_ms(self) -> float:
        return statistics.mean(self.closed_loop_seconds) * 1000


def committer_of(tree: Path) -> ModuleType:
    """That checkout's committer module, loaded beside this one."""
    spec = importlib.util.spec_from_file_location(
        "baseline_committer", tree / "app" / "application" / "committer.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no committer module in {tree}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module: ModuleType | None, shape: Shape, seconds: float, write_seconds: float) -> Phase:
    """One phase: ``module``'s committer gathering (None: this code's, never gathering)."""

    def write_group(group: list[Any]) -> list[Any]:
        end = time.perf_counter() + write_seconds
        while time.perf_counter() < end:
            pass
        committer.answering()
        for entry in group:
            entry.answer(entry.command)
        return []

    def window() -> float:
        recent = committer.write_seconds
        return min(GATHER_SECONDS_MAX, recent[-1] if recent else 0.0)

    gather: Callable[[], float] = committer_module.never_gather if module is None else window
    committer_class: Any = (module or committer_module).Committer
    committer = committer_class(
        write_group,
        queue_units_max=QUEUE_UNITS_MAX,
        timeout_seconds=TIMEOUT_SECONDS,
        gather_seconds=gather,
    )
    stop = time.monotonic() + seconds
    closed_loop: list[float] = []
    pausing: list[float] = []

    def caller(pause_seconds: float, took: list[float]) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            committer.submit("transfer")
            took.append(time.perf_counter() - started)
            if pause_seconds:
                time.sleep(pause_seconds)

    threads = [
        threading.Thread(target=caller, args=(0.0, closed_loop)) for _ in range(shape.closed_loop)
    ]
    threads += [
        threading.Thread(target=caller, args=(shape.pause_seconds, pausing))
        for _ in range(shape.pausing)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committer.close()
    skips = (getattr(committer, "gathers_run_out", 0), getattr(committer, "gathers_skipped", 0))
    return Phase(closed_loop, len(pausing), committer.groups_written, skips)


def line(name: str, phase: Phase, none: Phase) -> str:
    return (
        f"  {name:8}: closed-loop {len(phase.closed_loop_seconds)} commands "
        f"({len(phase.closed_loop_seconds) / len(none.closed_loop_seconds):.2f} of no gather), "
        f"mean {phase.mean_ms:.2f} ms ({phase.mean_ms / none.mean_ms:.2f}x); all "
        f"{phase.commands} ({phase.commands / none.commands:.2f}); "
        f"{phase.commands / phase.groups:.2f} per group; waits ran out {phase.skips[0]}, "
        f"groups taken at once after them {phase.skips[1]}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write-ms", type=float, default=1.0, help="each group write's CPU")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"of {','.join(SHAPES)}")
    parser.add_argument("--baseline-tree", type=Path, help="also that checkout's committer")
    args = parser.parse_args(argv)
    sides: dict[str, ModuleType | None] = {"gather": committer_module}
    if args.baseline_tree is not None:
        sides["baseline"] = committer_of(args.baseline_tree)
    write_seconds = args.write_ms / 1000
    for key in str(args.shapes).split(","):
        shape = SHAPES[key.strip()]
        for number in range(args.rounds):
            print(f"{shape.name}, round {number + 1}:", flush=True)
            none = run(None, shape, args.seconds, write_seconds)
            print(line("none", none, none), flush=True)
            for name, module in sides.items():
                print(line(name, run(module, shape, args.seconds, write_seconds), none), flush=True)
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
