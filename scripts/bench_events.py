"""Event feed and webhook throughput and latency, in one run.

  .venv/bin/python scripts/bench_events.py [--rate 500] [--seconds 10] [--backlog 5000]
      [--batch 1]

1. Ceiling (baseline): one client POSTing ready-made event bodies to the same local
   receiver as fast as it answers — what delivery could reach with no ledger at all.
2. Steady: transfers written at ``--rate``/s for ``--seconds`` (several paced writer
   threads, SQLite store, the embedded default) while `ledger deliver` runs in its own
   process (as in the compose stack) with a webhook endpoint on the local receiver (its
   own process too), and a feed reader follows the feed. Latency from commit (the write
   returned) to receipt, p50/p99, for both; whether delivery kept up (backlog when the
   writers stop).
3. Catch-up: ``--backlog`` transfers written while the deliveries are stopped, then the
   time to deliver them all (first to last receipt): events/s, and its ratio to the
   ceiling measured before and after it (the two sides alternate; absolute figures drift
   on a shared machine).
"""

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from benchlib import machine

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.events.service import EventServices
from app.settings import Settings

ISSUER = "system:issuance"
WRITER_THREADS = 4
CEILING_REQUESTS = 3000
BATCH_SIZE = 500
DRAIN_TIMEOUT_SECONDS = 120.0


class Receiver:
    """A local receiver in its own process (as a downstream service would be), which
    reports when each transfer's event first arrived (wall clock, same machine)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        self._reports: multiprocessing.Queue[tuple[str, float]] = multiprocessing.Queue()
        ready: multiprocessing.Queue[int] = multiprocessing.Queue()
        self.process = multiprocessing.Process(
            target=serve_receiver, args=(ready, self._reports), daemon=True
        )
        self.process.start()
        self.url = f"http://127.0.0.1:{ready.get(timeout=30)}/hook"
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while True:
            transfer_id, at = self._reports.get()
            with self.lock:
                self.arrived.setdefault(transfer_id, at)

    def close(self) -> None:
        self.process.terminate()
        self.process.join()


def serve_receiver(
    ready: "multiprocessing.Queue[int]", reports: "multiprocessing.Queue[tuple[str, float]]"
) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            now = time.time()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
            transfer = json.loads(body).get("data", {}).get("transfer", {})
            reports.put((transfer.get("id", ""), now))

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready.put(server.server_address[1])
    server.serve_forever()


class Deliver:
    """`ledger deliver` in its own process, as the compose stack runs it."""

    def __init__(self, data_dir: Path) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        environment |= {"LEDGER_DATA_DIR": str(data_dir), "LEDGER_LOG_FORMAT": "json"}
        ledger = Path(sys.executable).with_name("ledger")
        heartbeat = data_dir / "deliver.heartbeat"
        heartbeat.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [str(ledger), "deliver"], env=environment, stderr=subprocess.DEVNULL
        )
        # Ready once its first heartbeat is written (its workers started before that).
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while not heartbeat.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("ledger deliver did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def ceiling(receiver: Receiver) -> float:
    body = json.dumps({"id": "x", "type": "transfer.recorded", "data": {"transfer": {}}})
    with httpx.Client() as client:
        started = time.perf_counter()
        for _ in range(CEILING_REQUESTS):
            client.post(receiver.url, content=body, headers={"content-type": "application/json"})
        return CEILING_REQUESTS / (time.perf_counter() - started)


def write_paced(
    ledger: Ledger,
    prefix: str,
    rate: float,
    seconds: float,
    committed: dict[str, float],
    batch: int = 1,
) -> None:
    """``rate`` transfers/s in total over ``WRITER_THREADS`` threads, each on its own
    schedule (a late one catches up rather than drifting); ``batch`` transfers per write
    (one request of a client that batches)."""
    writes_per_thread = rate / WRITER_THREADS / batch
    total = int(writes_per_thread * seconds)

    def writer(index: int) -> None:
        start = time.perf_counter()
        for n in range(total):
            due = start + n / writes_per_thread
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            commands = [
                RecordTransfer(
                    id=f"{prefix}-{index}-{n}-{k}",
                    debit_account_id=ISSUER,
                    credit_account_id=f"user:{index}:{(n * batch + k) % 50}",
                    amount=1,
                )
                for k in range(batch)
            ]
            if batch == 1:
                ledger.record_transfer(commands[0])
            else:
                ledger.record_batch(commands, atomic=False)
            done = time.time()
            for command in commands:
                committed[command.id] = done

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def write_backlog(ledger: Ledger, count: int) -> set[str]:
    ids = [f"backlog-{n}" for n in range(count)]
    for start in range(0, count, BATCH_SIZE):
        chunk = ids[start : start + BATCH_SIZE]
        commands = [
            RecordTransfer(
                id=transfer_id,
                debit_account_id=ISSUER,
                credit_account_id=f"user:0:{n % 50}",
                amount=1,
            )
            for n, transfer_id in enumerate(chunk)
        ]
        ledger.record_batch(commands, atomic=False)
    return set(ids)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def follow_feed(events: EventServices, stop: threading.Event, seen: dict[str, float]) -> None:
    """A feed consumer as a downstream service runs it: page after page from its cursor."""
    after = events.feed_store.head().sequence
    while not stop.is_set():
        rows = events.feed_store.page(after, 500, ("transfer.recorded",))
        if not rows:
            time.sleep(0.02)
            continue
        now = time.time()
        for row in rows:
            seen.setdefault(row.event()["data"]["transfer"]["id"], now)
        after = rows[-1].sequence


@contextmanager
def ledger_with_events(data_dir: Path) -> Iterator[tuple[Ledger, EventServices]]:
    settings = Settings(data_dir=data_dir, log_format="console")
    ledger = Ledger(settings.ledger_env())
    events = EventServices.build(settings, ledger, run_workers=False)
    try:
        yield ledger, events
    finally:
        events.close()
        ledger.close()


def wait_delivered(receiver: Receiver, wanted: set[str]) -> float:
    """When the last of ``wanted`` arrived (wall clock)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with receiver.lock:
            if wanted <= receiver.arrived.keys():
                return max(receiver.arrived[transfer_id] for transfer_id in wanted)
        time.sleep(0.01)
    raise SystemExit("delivery did not finish within the drain timeout")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1, help="transfers per write")
    arguments = parser.parse_args()
    print(json.dumps({"machine": machine(), **vars(arguments)}))
    receiver = Receiver()
    ceiling_before = ceiling(receiver)

    with (
        tempfile.TemporaryDirectory() as directory,
        ledger_with_events(Path(directory)) as (ledger, events),
    ):
        ledger.open_account(OpenAccount(id=ISSUER, unit="CREDITS", allow_negative=True))
        for index in range(WRITER_THREADS):
            for n in range(50):
                ledger.open_account(OpenAccount(id=f"user:{index}:{n}", unit="CREDITS"))
        events.webhooks.create(receiver.url, ["transfer.recorded"], "benchmark")
        running = Deliver(Path(directory))

        # Steady: paced writes, deliveries and a feed reader running.
        committed: dict[str, float] = {}
        feed_seen: dict[str, float] = {}
        stop_feed = threading.Event()
        reader = threading.Thread(target=follow_feed, args=(events, stop_feed, feed_seen))
        reader.start()
        started = time.perf_counter()
        write_paced(ledger, "steady", arguments.rate, arguments.seconds, committed, arguments.batch)
        written_in = time.perf_counter() - started
        backlog_at_stop = len(committed.keys() - receiver.arrived.keys())
        wait_delivered(receiver, set(committed))
        stop_feed.set()
        reader.join()
        webhook_latency = [receiver.arrived[t] - committed[t] for t in committed]
        feed_latency = [feed_seen[t] - committed[t] for t in committed if t in feed_seen]
        print(
            json.dumps(
                {
                    "phase": "steady",
                    "transfers": len(committed),
                    "write_rate_per_second": round(len(committed) / written_in, 1),
                    "webhook_p50_ms": round(statistics.median(webhook_latency) * 1000, 1),
                    "webhook_p99_ms": round(percentile(webhook_latency, 0.99) * 1000, 1),
                    "webhook_max_ms": round(max(webhook_latency) * 1000, 1),
                    "feed_p50_ms": round(statistics.median(feed_latency) * 1000, 1),
                    "feed_p99_ms": round(percentile(feed_latency, 0.99) * 1000, 1),
                    "undelivered_when_writes_stopped": backlog_at_stop,
                }
            )
        )

        # Catch-up: a backlog written while deliveries are stopped, then delivered.
        running.stop()
        backlog_ids = write_backlog(ledger, arguments.backlog)
        running = Deliver(Path(directory))
        finished = wait_delivered(receiver, backlog_ids)
        with receiver.lock:
            started = min(receiver.arrived[transfer_id] for transfer_id in backlog_ids)
        running.stop()
        rate = len(backlog_ids) / (finished - started)

    ceiling_after = ceiling(receiver)
    receiver.close()
    ceiling_mean = (ceiling_before + ceiling_after) / 2
    print(
        json.dumps(
            {
                "phase": "catch-up",
                "events": len(backlog_ids),
                "delivered_per_second": round(rate, 1),
                "ceiling_before_per_second": round(ceiling_before, 1),
                "ceiling_after_per_second": round(ceiling_after, 1),
                "ratio_to_ceiling": round(rate / ceiling_mean, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
