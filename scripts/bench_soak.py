"""Soak: `ledger serve` on the embedded default (SQLite files, projections in-process)
under steady single-transfer load for a long time; prints, per interval, the write
throughput, the server's resident memory and the store files' sizes.

    .venv/bin/python scripts/bench_soak.py                 # 30 minutes, a line a minute
    .venv/bin/python scripts/bench_soak.py --minutes 3 --interval-seconds 20

The goal (issue 11): throughput flat within ±10% and memory bounded. The last line
compares the last interval with the first (same run, same machine).
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port, machine

KEY_PATTERN: Final = re.compile(r"lk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")
ISSUER: Final = "system:issuance"
UNIT: Final = "CREDITS"
USERS: Final = 200
THREADS: Final = 8
START_TIMEOUT_SECONDS: Final = 60.0
REQUEST_TIMEOUT_SECONDS: Final = 30.0


@dataclass
class Sample:
    minute: float
    transfers_per_second: float
    errors: int
    rss_mb: float
    events_mb: float
    views_mb: float


def ledger_argv() -> list[str]:
    script = Path(sys.executable).with_name("ledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def files_mb(folder: Path, pattern: str) -> float:
    return sum(path.stat().st_size for path in folder.glob(pattern)) / 1e6


class Load:
    """Threads sending single transfers between random users as fast as answered."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key
        self.done = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self, number: int) -> None:
        chooser = random.Random(number)  # load shape, not security
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(
            base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS
        ) as client:
            sequence = 0
            while not self.stopping.is_set():
                sequence += 1
                debit, credit = chooser.sample(range(USERS), 2)
                response = client.post(
                    "/v1/transfers",
                    json={
                        "id": f"soak-{number}-{sequence}",
                        "debit_account_id": f"user:{debit}",
                        "credit_account_id": f"user:{credit}",
                        "amount": 1,
                    },
                )
                with self.lock:
                    if response.status_code == 201:
                        self.done += 1
                    else:
                        self.errors += 1

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.done, self.errors


def set_up(base_url: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as http:
        http.post("/v1/accounts", json={"id": ISSUER, "unit": UNIT, "allow_negative": True})
        for user in range(USERS):
            http.post("/v1/accounts", json={"id": f"user:{user}", "unit": UNIT})
            http.post(
                "/v1/transfers",
                json={
                    "id": f"fund:{user}",
                    "debit_account_id": ISSUER,
                    "credit_account_id": f"user:{user}",
                    "amount": 10**12,
                },
            )


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATA_DIR": str(data_dir), "LEDGER_LOG_FORMAT": "json"}
    log = (data_dir / "serve.err").open("w")
    process = subprocess.Popen(  # our own console script
        [*ledger_argv(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    key = ""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not key and time.monotonic() < deadline:
        line = process.stdout.readline()
        found = KEY_PATTERN.search(line)
        key = found.group(0) if found else key
    base_url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200:
                return process, base_url, key
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"ledger serve did not start; see {data_dir / 'serve.err'}")


def soak(minutes: float, interval_seconds: float, threads: int) -> list[Sample]:
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-soak-"))
    process, base_url, key = start_server(data_dir)
    samples: list[Sample] = []
    try:
        set_up(base_url, key)
        load = Load(base_url, key)
        workers = [
            threading.Thread(target=load.run, args=(n,), daemon=True) for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        previous_done, previous_errors, previous_at = 0, 0, started
        while time.monotonic() - started < minutes * 60:
            time.sleep(interval_seconds)
            done, errors = load.counts()
            now = time.monotonic()
            sample = Sample(
                minute=round((now - started) / 60, 2),
                transfers_per_second=round((done - previous_done) / (now - previous_at), 1),
                errors=errors - previous_errors,
                rss_mb=round(rss_mb(process.pid), 1),
                events_mb=round(files_mb(data_dir, "events.sqlite*"), 1),
                views_mb=round(files_mb(data_dir, "views*.sqlite*"), 1),
            )
            samples.append(sample)
            print(json.dumps(asdict(sample)), flush=True)
            previous_done, previous_errors, previous_at = done, errors, now
        load.stopping.set()
        for worker in workers:
            worker.join(REQUEST_TIMEOUT_SECONDS)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=THREADS)
    arguments = parser.parse_args()
    print(json.dumps({"machine": machine(), "threads": arguments.threads, "users": USERS}))
    samples = soak(arguments.minutes, arguments.interval_seconds, arguments.threads)
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        print(
            json.dumps(
                {
                    "throughput_last_over_first": round(
                        last.transfers_per_second / max(first.transfers_per_second, 0.1), 3
                    ),
                    "rss_first_mb": first.rss_mb,
                    "rss_last_mb": last.rss_mb,
                    "rss_max_mb": max(sample.rss_mb for sample in samples),
                }
            )
        )


if __name__ == "__main__":
    main()
