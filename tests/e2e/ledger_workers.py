"""Code the end-to-end tests run in other threads and other OS processes.

It lives in its own importable module (not in a test module) so that a ``spawn``ed
process or ``python -m tests.e2e.ledger_workers`` imports only what it needs.
"""

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Final

from app.application.commands import RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import LedgerError, OverloadedError
from app.persistence.stores import event_store_env

UNIT: Final = "CREDITS"
ISSUANCE: Final = "system:issuance"
START_TIMEOUT_SECONDS: Final = 150.0  # spawned interpreters start slowly on a busy machine


@dataclass
class SpendReport:
    """What one worker saw: every outcome, sorted by kind, nothing dropped."""

    created: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    rejected_codes: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def merge(self, other: "SpendReport") -> None:
        self.created.extend(other.created)
        self.replayed.extend(other.replayed)
        self.rejected_codes.extend(other.rejected_codes)
        self.unexpected.extend(other.unexpected)


def spend_one_each(
    ledger: Ledger, source: str, sink: str, transfer_ids: Sequence[str]
) -> SpendReport:
    """Try to move 1 credit from ``source`` to ``sink`` once per id; report every outcome."""
    report = SpendReport()
    for transfer_id in transfer_ids:
        try:
            outcome = ledger.record_transfer(RecordTransfer(transfer_id, source, sink, 1))
        except LedgerError as error:
            report.rejected_codes.append(error.code)
        except Exception as error:  # noqa: BLE001  # the test must see every surprise
            report.unexpected.append(f"{transfer_id}: {type(error).__name__}: {error}")
        else:
            (report.created if outcome.created else report.replayed).append(transfer_id)
    return report


def spend_in_process(
    url: str,
    source: str,
    sink: str,
    transfer_ids: list[str],
    start: Barrier,
    reports: "Queue[SpendReport]",
) -> None:
    """Entry point of a spawned process: its own Ledger, started together with the others."""
    report = SpendReport()
    try:
        ledger = Ledger(event_store_env(url))
        try:
            start.wait(START_TIMEOUT_SECONDS)
            report = spend_one_each(ledger, source, sink, transfer_ids)
        finally:
            ledger.close()
    except Exception as error:  # noqa: BLE001  # reported, so the parent fails loudly
        report.unexpected.append(f"worker: {type(error).__name__}: {error}")
    reports.put(report)


# The crash writer ------------------------------------------------------------------------


def crash_plan(prefix: str, count: int, user_count: int) -> list[RecordTransfer]:
    """The burst the crash writer attempts, in order: amounts differ so that a transfer
    recorded with a wrong or partial amount cannot pass for another one."""
    return [
        RecordTransfer(
            id=f"{prefix}:{index}",
            debit_account_id=ISSUANCE,
            credit_account_id=user_account(index % user_count),
            amount=1 + index % 97,
        )
        for index in range(count)
    ]


def user_account(number: int) -> str:
    return f"user:{number}:credits"


def write_burst(url: str, prefix: str, count: int, user_count: int) -> None:
    """Record the plan one transfer at a time; acknowledge each on stdout once recorded."""
    ledger = Ledger(event_store_env(url))
    print("ready", flush=True)
    for command in crash_plan(prefix, count, user_count):
        ledger.record_transfer(command)
        print(command.id, flush=True)
    ledger.close()
    print("done", flush=True)


FLOOD_THREADS: Final = 24
FLOOD_QUEUE_MAX: Final = 8
OVERLOADED_PAUSE_SECONDS: Final = 0.001


def write_flood(url: str, prefix: str, count: int, user_count: int) -> None:
    """Many threads send the plan at once into a small write queue, so that the committer
    holds a full queue all along: each thread resends a refused (overloaded) transfer
    until it is recorded, and acknowledges it on stdout (``overloaded`` lines mark the
    refusals)."""
    env = {**event_store_env(url), "LEDGER_WRITE_QUEUE_MAX": str(FLOOD_QUEUE_MAX)}
    ledger = Ledger(env)
    plan = iter(crash_plan(prefix, count, user_count))
    plan_lock = threading.Lock()
    print_lock = threading.Lock()

    def say(line: str) -> None:
        with print_lock:
            print(line, flush=True)

    def send() -> None:
        while True:
            with plan_lock:
                command = next(plan, None)
            if command is None:
                return
            while True:
                try:
                    ledger.record_transfer(command)
                except OverloadedError:
                    say("overloaded")
                    time.sleep(OVERLOADED_PAUSE_SECONDS)
                    continue
                say(command.id)
                break

    say("ready")
    threads = [threading.Thread(target=send) for _ in range(FLOOD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    say("done")


MODES: Final = {"write-burst": write_burst, "write-flood": write_flood}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 5 or argv[0] not in MODES:
        print(
            "usage: python -m tests.e2e.ledger_workers write-burst|write-flood "
            "URL PREFIX COUNT USERS",
            file=sys.stderr,
        )
        return 2
    mode, url, prefix, count, user_count = argv
    MODES[mode](url, prefix, int(count), int(user_count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
