"""Shared by the benchmark scripts: what machine and which commit a figure belongs to."""

import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "commit": git_commit(),
    }


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


def postgres_server_cpu_seconds(datadir: Path) -> float:
    """User + system CPU of a PostgreSQL server so far, from /proc: its postmaster's, the
    backends it has reaped (its children's times) and every live process below it. A
    backend that exits between two readings moves into the children's times, so the
    figure never goes back."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    total, pending = 0.0, [postmaster]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue  # gone meanwhile: its time is in the postmaster's children's times
        ticks = int(fields[11]) + int(fields[12])
        if pid == postmaster:
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / os.sysconf("SC_CLK_TCK")
        pending += [int(child) for child in children]
    return total
