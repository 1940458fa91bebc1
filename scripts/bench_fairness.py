"""Fairness on a hot stream shared with another process (issue 9, decision 0018).

Another process records transfers from one hot account in a tight loop; meanwhile 4
threads of this process send transfers from the same account. For each contended
transfer: how long it took, how many races it lost, whether it failed. Measured with
the policy of decision 0018 (write lock for contended streams, catch-up of a stale
cache) and, as the baseline in the same run, with it switched off (every write
optimistic, a lost race reloads and retries up to ``CONFLICT_RETRIES_MAX`` within the
deadline), alternating, on PostgreSQL and on a SQLite file.

Run from the repository root::

    .venv/bin/python scripts/bench_fairness.py --transfers 30 --rounds 2
"""

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import machine

import app.application.ledger as ledger_module
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import LedgerError
from tests.conftest import store_env
from tests.support.pgserver import running_postgres

UNIT: Final = "CREDITS"
HOT: Final = "hot"
ISSUANCE: Final = "issuance"
SENDERS: Final = 4
FUNDS: Final = 10**12
START_SECONDS: Final = 120.0


@dataclass(frozen=True)
class Result:
    seconds: list[float]
    most_races_lost: int
    failed: int
    other_wrote: int

    def line(self) -> str:
        ordered = sorted(self.seconds)
        return (
            f"p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms, "
            f"most races lost by one {self.most_races_lost}, failed {self.failed} of "
            f"{len(ordered)} (the other process wrote {self.other_wrote})"
        )


POLICY: Final = ("LOCK_AFTER_CONFLICTS", "CONTENDED_SECONDS", "OTHER_WRITERS_SECONDS")


@contextmanager
def policy(on: bool) -> Iterator[None]:
    """Decision 0018's policy as shipped, or switched off (the baseline): its limits are
    module constants of the ledger, set aside here for the baseline's measurement."""
    saved = {name: getattr(ledger_module, name) for name in POLICY}
    if not on:
        off = (ledger_module.CONFLICT_RETRIES_MAX + 1, 0.0, 0.0)
        for name, value in zip(POLICY, off, strict=True):
            setattr(ledger_module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ledger_module, name, value)


def hammer(url: str, on: bool, stop: Any, count: Any) -> None:
    """The other process: one transfer after another from the hot account."""
    with policy(on), Ledger(store_env(url)) as other:
        while not stop.is_set():
            try:
                other.record_transfer(RecordTransfer(f"h:{on}:{count.value}", HOT, ISSUANCE, 1))
            except LedgerError:
                continue  # counted by the store, not here: only this process's answers matter
            count.value += 1


def measure(url: str, on: bool, transfers: int, tag: str) -> Result:
    context = multiprocessing.get_context("spawn")
    stop, count = context.Event(), context.Value("q", 0)
    other = context.Process(target=hammer, args=(url, on, stop, count))
    other.start()
    deadline = time.monotonic() + START_SECONDS
    while count.value == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    seconds: list[float] = []
    failed = 0
    try:
        with policy(on), Ledger(store_env(url)) as ledger:

            def send(thread: int) -> None:
                nonlocal failed
                for number in range(transfers):
                    started = time.monotonic()
                    try:
                        ledger.record_transfer(
                            RecordTransfer(f"{tag}:{thread}:{number}", HOT, ISSUANCE, 1)
                        )
                    except LedgerError:
                        failed += 1
                    seconds.append(time.monotonic() - started)

            with ThreadPoolExecutor(max_workers=SENDERS) as pool:
                list(pool.map(send, range(SENDERS)))
            most = ledger.most_races_lost
    finally:
        stop.set()
        other.join(START_SECONDS)
    return Result(seconds, most, failed, int(count.value))


def prepare(url: str) -> None:
    with Ledger(store_env(url)) as ledger:
        ledger.open_account(OpenAccount(ISSUANCE, UNIT, allow_negative=True))
        ledger.open_account(OpenAccount(HOT, UNIT))
        ledger.record_transfer(RecordTransfer("fund", ISSUANCE, HOT, FUNDS))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--transfers", type=int, default=30, help="per sending thread")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with running_postgres(fsync=True) as server, tempfile.TemporaryDirectory() as temp:
        urls = {
            "PostgreSQL": server.create_database("fairness"),
            "SQLite file": f"sqlite:///{Path(temp) / 'events.sqlite'}",
        }
        for url in urls.values():
            prepare(url)
        for round_number in range(args.rounds):
            for store, url in urls.items():
                for on in (False, True):
                    side = "decision 0018" if on else "baseline (optimistic only)"
                    result = measure(url, on, args.transfers, f"r{round_number}:{on}")
                    print(f"{store}, {side}: {result.line()}", flush=True)
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
