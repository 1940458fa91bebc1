"""The soak in short form: `ledger serve` on the embedded default under steady load for
two minutes (scripts/bench_soak.py). Memory must stay bounded (the caches fill up to
their limits and stop); no request may fail. Throughput is the script's to report,
not a test's to time."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

SCRIPT: Final = Path(__file__).resolve().parents[2] / "scripts" / "bench_soak.py"
MINUTES: Final = 2
INTERVAL_SECONDS: Final = 30
THREADS: Final = 4
# Growth after the first sample: the bounded caches still filling (writer cache, stream
# ids, SQLite page caches) — a leak of a kilobyte per transfer would pass it in minutes.
RSS_GROWTH_MB_MAX: Final = 64
RSS_MB_MAX: Final = 400


@pytest.mark.slow
@pytest.mark.timeout(MINUTES * 60 + 240)
def test_a_short_soak_keeps_memory_bounded_and_answers_every_request() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--minutes",
            str(MINUTES),
            "--interval-seconds",
            str(INTERVAL_SECONDS),
            "--threads",
            str(THREADS),
        ],
        capture_output=True,
        text=True,
        timeout=MINUTES * 60 + 200,
        check=True,
    )
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    samples: list[dict[str, Any]] = [line for line in lines if "rss_mb" in line]
    assert len(samples) >= MINUTES * 60 // INTERVAL_SECONDS - 1, completed.stdout
    assert all(sample["errors"] == 0 for sample in samples), samples
    assert all(sample["transfers_per_second"] > 0 for sample in samples), samples
    first, last = samples[0], samples[-1]
    assert last["rss_mb"] - first["rss_mb"] <= RSS_GROWTH_MB_MAX, samples
    assert max(sample["rss_mb"] for sample in samples) <= RSS_MB_MAX, samples
