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
