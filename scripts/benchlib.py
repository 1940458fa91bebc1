"""Shared by the benchmark scripts (and the tests' servers): what machine and which
commit a figure belongs to; ports for the servers they start."""

import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")


def measured_in_tree(tree: Path, script: str, arguments: Sequence[str]) -> dict[str, Any]:
    """The figures ``script`` prints (JSON, its last line) when run with ``arguments`` in a
    process of its own that imports ``tree``'s code (``PYTHONPATH``: a baseline tree's
    side of a same-run comparison); the side must say so (``imported_tree``)."""
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(__file__).parent}"}
    argv = [sys.executable, str(Path(script).resolve()), *arguments]
    done = subprocess.run(argv, cwd=tree, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: measuring failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["imported"] != str(tree):
        raise SystemExit(f"{tree}: the side imported the code of {figures['imported']}")
    return figures


def imported_tree() -> str:
    """The root of the tree whose ``app`` this process imports (``measured_in_tree``)."""
    import app  # noqa: PLC0415  # the side's own, by its PYTHONPATH

    return str(Path(app.__file__).resolve().parent.parent)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "commit": git_commit(),
    }


def in_turn(sides: Sequence[T], round_number: int) -> list[T]:
    """The sides in the order round ``round_number`` measures them: as given in even
    rounds, reversed in odd ones, so that no side always runs first (on a warming or
    cooling machine the first phase of a round is not like the second)."""
    return list(sides) if round_number % 2 == 0 else list(reversed(sides))


def git_commit() -> str:
    """HEAD, marked ``+dirty`` when app/ or projections/ differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*arguments: str) -> str:
        try:
            return subprocess.run(
                ["git", *arguments], cwd=root, capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "app", "projections")
    return f"{head}+dirty" if dirty else head or "unknown"


def tree_cpu_seconds(pid: int, *, with_reaped: bool = False) -> float:
    """User + system CPU of a process and every live process below it so far, from
    /proc; ``with_reaped`` adds the times of the root's children it has already reaped
    (a process that exits between two readings moves there, so the figure never goes
    back)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # gone meanwhile (under with_reaped, its time is in the root's)
        ticks = int(fields[11]) + int(fields[12])
        if with_reaped and current == pid:
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / os.sysconf("SC_CLK_TCK")
        pending += [int(child) for child in children]
    return total


def main_and_other_threads_cpu_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """User + system CPU so far of these processes' main threads (a ``ledger serve``
    worker's event loop) and of all their other threads (its committer and helpers), from
    /proc; a thread or process gone meanwhile counts for nothing."""
    main = other = 0.0
    for pid in pids:
        try:
            tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if tid == pid:
                main += seconds
            else:
                other += seconds
    return main, other


def run_queue_seconds(task_directory: Path = Path("/proc/self/task")) -> float:
    """Seconds the threads of this process (or of the process whose ``task`` directory
    is given) have spent so far runnable but waiting for a core: the second field of
    each thread's ``schedstat`` (Linux). Over a phase, the part of its wall time that the
    machine's other load took from it; a thread gone meanwhile counts for nothing."""
    total = 0
    for task in task_directory.iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def machine_busy_seconds(stat: str | None = None) -> float:
    """CPU seconds every core of the machine has spent busy so far (all but idle and
    iowait, from /proc/stat, or the ``stat`` text given): over a phase, divided by its
    wall time, how many cores its processes and everything else running beside them
    kept busy."""
    text = Path("/proc/stat").read_text() if stat is None else stat
    fields = text.split("\n", 1)[0].split()[1:]
    ticks = [int(field) for field in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# The kernel's TCP counters a stalled request is looked for in (``TcpExt:`` of
# /proc/net/netstat): connections a full listen queue dropped (ListenOverflows: the
# accept queue; ListenDrops: every drop at a listener; TCPReqQFullDrop: the SYN queue),
# SYNs and SYN-ACKs sent again (TCPSynRetrans: the first resend waits 1 s, the initial
# retransmission timeout) and retransmission timeouts on established connections
# (TCPTimeouts: 200 ms at least on loopback).
TCP_STALL_COUNTERS: Final = (
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPSynRetrans",
    "TCPTimeouts",
)


def tcp_counters(netstat: str | None = None) -> dict[str, int]:
    """The machine's ``TcpExt:`` counters so far (/proc/net/netstat, or the ``netstat``
    text given), by name."""
    text = Path("/proc/net/netstat").read_text() if netstat is None else netstat
    names, values = (line.split() for line in text.splitlines() if line.startswith("TcpExt:"))
    return {name: int(value) for name, value in zip(names[1:], values[1:], strict=True)}


def tcp_stall_counters_moved(before: dict[str, int], after: dict[str, int]) -> str:
    """How much each of ``TCP_STALL_COUNTERS`` rose between two readings, as
    ``name +n`` joined by commas (``none moved`` if none did)."""
    moved = [
        f"{name} +{after[name] - before[name]}"
        for name in TCP_STALL_COUNTERS
        if after.get(name, 0) != before.get(name, 0)
    ]
    return ", ".join(moved) or "none moved"


def syn_retransmits(netstat: str | None = None) -> int:
    """How many TCP SYNs the kernel has sent again so far, machine-wide (``TcpExt:``
    ``TCPSynRetrans`` of /proc/net/netstat, or the ``netstat`` text given). A SYN's first
    resend comes after 1 s (the initial retransmission timeout): over a phase, one that
    rose says a connection opened in it may have waited that second."""
    return tcp_counters(netstat)["TCPSynRetrans"]


def postgres_server_cpu_seconds(datadir: Path) -> float:
    """User + system CPU of a PostgreSQL server so far: its postmaster's, the backends
    it has reaped and every live process below it."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    return tree_cpu_seconds(postmaster, with_reaped=True)


# Ports ------------------------------------------------------------------------------------
# A port found free and let go is free only until someone binds it: a server started on
# it a moment later can find it taken, and whoever polls the port then talks to the
# process that took it (a test or a benchmark measuring another's server). So a port
# handed out here stays reserved: a socket of this process keeps it bound, with
# SO_REUSEADDR and not listening. Another process looking for a free port (a bind to port
# 0, as every probe does) is never given it, while the server meant for it binds it as
# usual, since uvicorn, PostgreSQL, ``http.server`` and ``ledger serve --workers`` all
# bind with SO_REUSEADDR; it stays reserved also while that server restarts. Nothing
# listens on a reserved port until the server does: a connection to it is refused.

# How many of the ports ``free_port`` handed out a process keeps reserved (the oldest
# reservation ends when one more is taken): one socket each.
RESERVATIONS_KEPT: Final = 128

_reservations: deque[socket.socket] = deque()
_reserving = threading.Lock()


def _reservation() -> socket.socket:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    return holder


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on, reserved for the server this
    process starts on it, until ``RESERVATIONS_KEPT`` more ports were taken."""
    holder = _reservation()
    with _reserving:
        _reservations.append(holder)
        while len(_reservations) > RESERVATIONS_KEPT:
            _reservations.popleft().close()
    port: int = holder.getsockname()[1]
    return port


@contextmanager
def reserved_port() -> Iterator[int]:
    """A port like ``free_port``'s, reserved until the block ends (a server that lives
    as long as a test session, and restarts on the same port)."""
    with _reservation() as holder:
        port: int = holder.getsockname()[1]
        yield port
