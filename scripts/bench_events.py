"""Event feed and webhook throughput and latency, in one run.

  .venv/bin/python scripts/bench_events.py [--rate 500] [--seconds 10] [--backlog 5000]

1. Ceiling (baseline): one client POSTing ready-made event bodies to the same local
   receiver as fast as it answers — what delivery could reach with no ledger at all.
2. Steady: transfers written at ``--rate``/s for ``--seconds`` (several paced writer
   threads, SQLite store, the embedded default); a webhook endpoint on the local receiver
   and a long-polling feed reader. Latency from commit (the write returned) to receipt,
   p50/p99, for both; whether delivery kept up (backlog when the writers stop).
3. Catch-up: ``--backlog`` transfers written while the deliveries are stopped, then the
   time to deliver them all: events/s, and its ratio to the ceiling measured before and
   after it (the two sides alternate; absolute figures drift on a shared machine).
"""

import argparse
import json
import statistics
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
from app.events.service import EventServices, EventWorkers, delivery_policy
from app.settings import Settings

ISSUER = "system:issuance"
WRITER_THREADS = 4
CEILING_REQUESTS = 3000
BATCH_SIZE = 500
DRAIN_TIMEOUT_SECONDS = 120.0


class Receiver:
    """Records when each event (by transfer id) first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                now = time.perf_counter()
                transfer = json.loads(body).get("data", {}).get("transfer", {})
                with receiver.lock:
                    receiver.count += 1
                    receiver.arrived.setdefault(transfer.get("id", ""), now)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def ceiling(receiver: Receiver) -> float:
    body = json.dumps({"id": "x", "type": "transfer.recorded", "data": {"transfer": {}}})
    with httpx.Client() as client:
        started = time.perf_counter()
        for _ in range(CEILING_REQUESTS):
            client.post(receiver.url, content=body, headers={"content-type": "application/json"})
        return CEILING_REQUESTS / (time.perf_counter() - started)


def write_paced(
    ledger: Ledger, prefix: str, rate: float, seconds: float, committed: dict[str, float]
) -> None:
    """``rate`` transfers/s in total over ``WRITER_THREADS`` threads, each on its own
    schedule (a late one catches up rather than drifting)."""
    per_thread = rate / WRITER_THREADS
    total = int(per_thread * seconds)

    def writer(index: int) -> None:
        start = time.perf_counter()
        for n in range(total):
            due = start + n / per_thread
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            transfer_id = f"{prefix}-{index}-{n}"
            ledger.record_transfer(
                RecordTransfer(
                    id=transfer_id,
                    debit_account_id=ISSUER,
                    credit_account_id=f"user:{index}:{n % 50}",
                    amount=1,
                )
            )
            committed[transfer_id] = time.perf_counter()

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
        now = time.perf_counter()
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
    deadline = time.perf_counter() + DRAIN_TIMEOUT_SECONDS
    while time.perf_counter() < deadline:
        with receiver.lock:
            if wanted <= receiver.arrived.keys():
                return time.perf_counter()
        time.sleep(0.005)
    raise SystemExit("delivery did not finish within the drain timeout")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=5000)
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
        settings = Settings(data_dir=Path(directory), log_format="console")
        running = EventWorkers(
            ledger, events.feed_store, events.webhooks, delivery_policy(settings)
        ).start()

        # Steady: paced writes, deliveries and a feed reader running.
        committed: dict[str, float] = {}
        feed_seen: dict[str, float] = {}
        stop_feed = threading.Event()
        reader = threading.Thread(target=follow_feed, args=(events, stop_feed, feed_seen))
        reader.start()
        started = time.perf_counter()
        write_paced(ledger, "steady", arguments.rate, arguments.seconds, committed)
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
        running = EventWorkers(
            ledger, events.feed_store, events.webhooks, delivery_policy(settings)
        ).start()
        started = time.perf_counter()
        finished = wait_delivered(receiver, backlog_ids)
        running.stop()
        rate = len(backlog_ids) / (finished - started)

    ceiling_after = ceiling(receiver)
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
