"""Shared by the benchmark scripts: what machine and which commit a figure belongs to."""

import os
import platform
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


def postgres_server_cpu_seconds(datadir: Path) -> float:
    """User + system CPU of a PostgreSQL server so far: its postmaster's, the backends
    it has reaped and every live process below it."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    return tree_cpu_seconds(postmaster, with_reaped=True)
