"""Code the grant tests run in spawned OS processes (importable on its own)."""

import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Final

from app.application.commands import RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import LedgerError
from app.persistence.stores import event_store_env

START_TIMEOUT_SECONDS: Final = 150.0  # spawned interpreters start slowly on a busy machine
SPEND_PAUSE_SECONDS: Final = 0.005


def spend_until(
    url: str,
    source: str,
    sink: str,
    prefix: str,
    start: Barrier,
    instants: "Queue[float]",
    reports: "Queue[tuple[str, list[str], list[str]]]",
) -> None:
    """Once all are started, learn the expiry instant, then spend 1 credit at a time
    from ``source`` until a second past it; report the ids written and every refusal."""
    created: list[str] = []
    problems: list[str] = []
    try:
        ledger = Ledger(event_store_env(url))
        try:
            start.wait(START_TIMEOUT_SECONDS)
            until = instants.get(timeout=START_TIMEOUT_SECONDS)
            number = 0
            while time.time() < until + 1.0:
                number += 1
                transfer_id = f"{prefix}:{number}"
                try:
                    ledger.record_transfer(RecordTransfer(transfer_id, source, sink, 1))
                except LedgerError as error:
                    problems.append(error.code)
                else:
                    created.append(transfer_id)
                time.sleep(SPEND_PAUSE_SECONDS)
        finally:
            ledger.close()
    except Exception as error:  # noqa: BLE001  # reported, so the parent fails loudly
        problems.append(f"unexpected: {type(error).__name__}: {error}")
    reports.put((prefix, created, problems))


def expire_when_due(
    url: str,
    grant_id: str,
    start: Barrier,
    instants: "Queue[float]",
    reports: "Queue[tuple[str, list[str], list[str]]]",
) -> None:
    """Run the grant's expiry as soon as it is due, like a second expiry worker would;
    report whether this process wrote it or found it written."""
    outcome: list[str] = []
    problems: list[str] = []
    try:
        ledger = Ledger(event_store_env(url))
        try:
            start.wait(START_TIMEOUT_SECONDS)
            at = instants.get(timeout=START_TIMEOUT_SECONDS)
            time.sleep(max(0.0, at - time.time()))
            moved = ledger.expire_grant(grant_id)
            outcome.append("none" if moved is None else "created" if moved.created else "replayed")
        finally:
            ledger.close()
    except Exception as error:  # noqa: BLE001  # reported, so the parent fails loudly
        problems.append(f"unexpected: {type(error).__name__}: {error}")
    reports.put((f"expiry:{grant_id}", outcome, problems))
