"""The projections child's CPU per transfer under live HTTP load (issue 9), this tree
against a baseline commit, measured in the same run, sides alternating phase by phase.

``ledger serve`` on the embedded default runs the projections in a child process
(``ledger project``, decision 0013). This script starts three servers side by side: the
naive column service of ``bench_http_goals.py``, ``ledger serve`` of ``--baseline``
(a git worktree of that commit, imported through ``PYTHONPATH`` and run from its own
directory, so that its projections child is the baseline's too) and ``ledger serve``
of this tree. For each shape (8 clients of single transfers spread over accounts;
atomic batches of 1,000) and round it runs the same load on each in turn (naive,
baseline, this tree; the order of the two ledgers swapped every round) and prints:

* transfers/s and the ratio against the naive service measured just before;
* CPU per transfer (µs) of serve and of its projections child, from /proc, counted
  from the phase's start until the views and the feed hold every write of it;
* the child's CPU per transfer per thread (named when ``py-spy`` is on PATH or beside
  the interpreter: ``py-spy dump`` gives each thread's name);
* how long the views and the feed took to catch up after the phase;
* the ratio of the child's CPU per transfer, this tree over the baseline.

Run from the repository root::

    .venv/bin/python scripts/bench_projections_live.py --baseline c7c5ebc --seconds 5
"""

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_http import (
    HOST,
    REPO,
    Server,
    admin_key,
    stop,
    wait_until_up,
)
from bench_http_goals import (
    EMBEDDED_SHAPES,
    Result,
    Shape,
    child_pids,
    cpu_seconds,
    load,
    naive_argv,
    open_accounts,
)
from benchlib import free_port, machine

SHAPES: Final = {key: EMBEDDED_SHAPES[key] for key in ("8", "hot", "batch")}
THREADS_SHOWN: Final = 6
CATCH_UP_SECONDS_MAX: Final = 120.0
SERVE: Final = "from app.cli import main; main()"


@dataclass
class Side:
    name: str
    source: Path  # where its code is imported from (and its processes run)
    server: Server | None = None
    key: str = ""


@dataclass
class Phase:
    result: Result
    serve_us: float
    child_us: float
    threads: list[tuple[str, float]] = field(default_factory=list)
    caught_up_s: float | None = None


def baseline_worktree(commit: str, workdir: Path) -> Path:
    source = workdir / "baseline-src"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(source), commit],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return source


@contextlib.contextmanager
def serving(side: Side, argv: Sequence[str], workdir: Path) -> Iterator[Server]:
    """Start a server of ``side`` on a free port (its code first on the path, its
    processes in its own directory); stop it on the way out."""
    port = free_port()
    data = workdir / side.name
    data.mkdir()
    env = {**os.environ, "LEDGER_DATA_DIR": str(data / "data"), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(side.source), env.get("PYTHONPATH", "")])
    for name in ("LEDGER_EVENT_STORE", "LEDGER_READ_MODEL"):
        env.pop(name, None)
    stdout, stderr = data / "stdout", data / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*argv, "--port", str(port)],
            cwd=side.source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    server = Server(side.name, process, port, stdout, stderr)
    try:
        wait_until_up(server)
        yield server
    finally:
        stop(server)


def thread_cpu(pid: int) -> dict[int, float]:
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from ``py-spy dump`` (empty without py-spy)."""
    beside = Path(sys.executable).parent / "py-spy"
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        return {}
    dump = subprocess.run(
        [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return {
        int(match[1]): match[2] for match in re.finditer(r'Thread (\d+) \([^)]*\): "([^"]*)"', dump)
    }


def caught_up(base_url: str) -> float | None:
    """Seconds until the views and the public feed hold every write (None: not within
    the bound)."""
    started = time.perf_counter()
    while time.perf_counter() - started < CATCH_UP_SECONDS_MAX:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            ready = httpx.get(f"{base_url}/v1/ready", timeout=10).json()
            if ready["lag_positions"] == 0 and ready["events"]["feed_lag_positions"] == 0:
                return time.perf_counter() - started
        time.sleep(0.05)
    return None


def measure(side: Side, shape: Shape, tag: str, seconds: float) -> Phase:
    """The load for ``seconds``; the CPU counted until the views and the feed have
    caught up with it (what the child does after the phase is still the phase's)."""
    assert side.server is not None
    pid = side.server.process.pid
    children = child_pids(pid)
    child = children[0] if children else None
    serve_before = cpu_seconds(pid)
    child_before = cpu_seconds(child) if child else 0.0
    threads_before = thread_cpu(child) if child else {}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(load(side.server.port, side.key, shape, tag, seconds))
    after = caught_up(side.server.base_url)
    per_transfer = 1e6 / max(1, result.created)
    serve_us = (cpu_seconds(pid) - serve_before) * per_transfer
    child_us = ((cpu_seconds(child) - child_before) if child else 0.0) * per_transfer
    threads: list[tuple[str, float]] = []
    if child:
        names = thread_names(child)
        spent = {
            tid: (seconds_now - threads_before.get(tid, 0.0)) * per_transfer
            for tid, seconds_now in thread_cpu(child).items()
        }
        threads = [
            (names.get(tid, str(tid)), us)
            for tid, us in sorted(spent.items(), key=lambda item: -item[1])
            if us > 0
        ]
    return Phase(result, serve_us, child_us, threads, after)


def describe(name: str, phase: Phase, naive: Result) -> str:
    ratio = phase.result.transfers_per_s / naive.transfers_per_s
    threads = ", ".join(f"{thread} {us:,.0f}" for thread, us in phase.threads[:THREADS_SHOWN])
    caught = "—" if phase.caught_up_s is None else f"{phase.caught_up_s:.2f} s"
    return (
        f"  {name}: {phase.result.transfers_per_s:,.0f}/s (x{ratio:.2f} naive, p99 "
        f"{phase.result.p99_ms:.1f} ms); CPU µs/transfer serve {phase.serve_us:,.0f} + child "
        f"{phase.child_us:,.0f}; views and feed caught up after {caught}\n"
        f"    child threads: {threads}"
    )


def run(baseline: str, shapes: Sequence[Shape], rounds: int, seconds: float, warmup: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-projections-live-") as temp:
        workdir = Path(temp)
        old = Side("baseline", baseline_worktree(baseline, workdir))
        new = Side("this tree", REPO)
        naive = Side("naive", REPO)
        ledger_argv = [sys.executable, "-c", SERVE, "serve", "--host", HOST]
        try:
            with (
                serving(naive, naive_argv(workdir / "naive" / "naive.sqlite"), workdir) as n,
                serving(old, ledger_argv, workdir) as o,
                serving(new, ledger_argv, workdir) as t,
            ):
                naive.server, old.server, new.server = n, o, t
                for side in (old, new):
                    side.key = admin_key(side.server)  # type: ignore[arg-type]
                    open_accounts(side.server.base_url, side.key)  # type: ignore[union-attr]
                naive.key = new.key
                open_accounts(n.base_url, naive.key)
                for side in (old, new):
                    caught_up(side.server.base_url)  # type: ignore[union-attr]
                for number in range(rounds):
                    for shape in shapes:
                        ledgers = (old, new) if number % 2 == 0 else (new, old)
                        phases: dict[str, Phase] = {}
                        for side in (naive, *ledgers):
                            measure(side, shape, f"w{number}{side.name[0]}", warmup)
                            phases[side.name] = measure(
                                side, shape, f"m{number}{side.name[0]}", seconds
                            )
                        base = phases["naive"].result
                        child_ratio = phases[new.name].child_us / phases[old.name].child_us
                        print(
                            f"{shape.name}, round {number + 1} (load {os.getloadavg()[0]:.1f}):"
                            f" child CPU per transfer, this tree / baseline: {child_ratio:.2f}",
                            flush=True,
                        )
                        for side in ledgers:
                            print(describe(side.name, phases[side.name], base), flush=True)
                        print(f"  naive: {base.transfers_per_s:,.0f}/s", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old.source)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )
    print(f"machine: {machine()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shapes", default="8,batch", help=f"of {','.join(SHAPES)}")
    args = parser.parse_args(argv)
    shapes = [SHAPES[key.strip()] for key in str(args.shapes).split(",")]
    run(args.baseline, shapes, args.rounds, args.seconds, args.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
