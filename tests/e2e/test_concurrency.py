"""Real concurrency against real databases (a SQLite file and a PostgreSQL server).

Many threads, then many OS processes, race to spend one hot account's last credits; then
many threads race to record the very same transfer id. Whatever the interleaving, the
floor holds, every credit moves exactly once, and the books balance.
"""

import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pytest
from eventsourcing.utils import get_topic

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import TransferOutcome
from app.domain.account import Account
from app.domain.errors import TransferNotFoundError
from app.domain.transfer import Transfer
from app.persistence.stores import event_store_env
from tests.conftest import store_url
from tests.e2e.ledger_workers import ISSUANCE, UNIT, SpendReport, spend_in_process, spend_one_each
from tests.e2e.store_reads import posted_transfer_ids, running_balances, topics_recorded

SOURCE: Final = "user:hot:credits"
SINK: Final = "merchant:sink"
FUNDING_ID: Final = "funding:source"
ALL_ACCOUNTS: Final = (ISSUANCE, SOURCE, SINK)

THREADS: Final = 16
CREDITS: Final = 200
ATTEMPTS_PER_THREAD: Final = 25  # 16 x 25 = 400 attempts for 200 credits

PROCESSES: Final = 4
ATTEMPTS_PER_PROCESS: Final = 100  # 4 x 100 = 400 attempts for 200 credits
PROCESS_TIMEOUT_SECONDS: Final = 200.0

SAME_ID_ROUNDS: Final = 12
SAME_ID_THREADS: Final = 8

TRANSFER_RECORDED_TOPIC: Final = get_topic(Transfer.TransferRecorded)
CONTENDED_TIMEOUT: Final = "60"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(str(request.param), tmp_path, request)


# Set-up and checks ---------------------------------------------------------------------


def open_funded_source(url: str, credits: int) -> None:
    ledger = Ledger(event_store_env(url))
    try:
        ledger.open_account(OpenAccount(ISSUANCE, UNIT, allow_negative=True))
        ledger.open_account(OpenAccount(SOURCE, UNIT))
        ledger.open_account(OpenAccount(SINK, UNIT))
        if credits:
            ledger.record_transfer(RecordTransfer(FUNDING_ID, ISSUANCE, SOURCE, credits))
    finally:
        ledger.close()


def open_ledger(url: str) -> Ledger:
    # Sixteen independent writers on one stream of a shared two-core machine: each write
    # may wait out many conflicts. What is tested is exactly-once, not the deadline.
    return Ledger({**event_store_env(url), "LEDGER_WRITE_TIMEOUT_SECONDS": CONTENDED_TIMEOUT})


def existing_transfer_ids(ledger: Ledger, transfer_ids: list[str]) -> set[str]:
    existing: set[str] = set()
    for transfer_id in transfer_ids:
        try:
            transfer = ledger.get_transfer(transfer_id)
        except TransferNotFoundError:
            continue
        assert (transfer.debit_account_id, transfer.credit_account_id) == (SOURCE, SINK)
        assert (transfer.amount, transfer.status) == (1, "posted")
        existing.add(transfer_id)
    return existing


def assert_spent_exactly_once(
    ledger: Ledger, attempted: list[str], report: SpendReport, credits: int
) -> None:
    """Exactly ``credits`` of the attempts moved one credit each; every other attempt was
    refused for lack of funds; the store agrees with what the callers were told."""
    assert report.unexpected == []
    assert report.replayed == []
    assert len(report.created) == credits
    assert len(set(report.created)) == credits
    assert Counter(report.rejected_codes) == {"insufficient_funds": len(attempted) - credits}

    assert existing_transfer_ids(ledger, attempted) == set(report.created)
    assert topics_recorded(ledger)[TRANSFER_RECORDED_TOPIC] == credits + 1  # + the funding
    assert sorted(posted_transfer_ids(ledger, SINK, Account.Credited)) == sorted(report.created)

    source = ledger.get_account(SOURCE)
    assert (source.balance, source.available, source.debits_posted) == (0, 0, credits)
    assert min(running_balances(ledger, SOURCE)) >= 0
    assert running_balances(ledger, SOURCE)[-1] == source.balance
    assert ledger.get_account(SINK).balance == credits
    assert sum(ledger.get_account(account_id).balance for account_id in ALL_ACCOUNTS) == 0


def spend_ids(worker: int, attempts: int) -> list[str]:
    return [f"spend:{worker}:{attempt}" for attempt in range(attempts)]


def race_in_threads(url: str, one_ledger_per_thread: bool, work: list[list[str]]) -> SpendReport:
    """Run one spender thread per id list, all released at the same instant."""
    if one_ledger_per_thread:
        ledgers = [open_ledger(url) for _ in work]
    else:
        ledgers = [open_ledger(url)] * len(work)
    start = threading.Barrier(len(work))

    def spend(ledger: Ledger, transfer_ids: list[str]) -> SpendReport:
        start.wait(timeout=30)
        return spend_one_each(ledger, SOURCE, SINK, transfer_ids)

    try:
        with ThreadPoolExecutor(max_workers=len(work)) as pool:
            futures = [pool.submit(spend, *job) for job in zip(ledgers, work, strict=True)]
            report = SpendReport()
            for future in futures:
                report.merge(future.result())
    finally:
        for ledger in set(ledgers):
            ledger.close()
    return report


# Many threads spend one account ----------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "one_ledger_per_thread", [False, True], ids=["shared-ledger", "ledger-per-thread"]
)
def test_sixteen_threads_racing_for_the_last_credits_spend_each_credit_exactly_once(
    shared_store_url: str, one_ledger_per_thread: bool
) -> None:
    open_funded_source(shared_store_url, CREDITS)
    work = [spend_ids(thread, ATTEMPTS_PER_THREAD) for thread in range(THREADS)]

    report = race_in_threads(shared_store_url, one_ledger_per_thread, work)

    attempted = [transfer_id for ids in work for transfer_id in ids]
    with open_ledger(shared_store_url) as ledger:
        assert_spent_exactly_once(ledger, attempted, report, CREDITS)


# Many processes spend one account --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_four_processes_racing_for_the_last_credits_spend_each_credit_exactly_once(
    shared_store_url: str,
) -> None:
    open_funded_source(shared_store_url, CREDITS)
    work = [spend_ids(process, ATTEMPTS_PER_PROCESS) for process in range(PROCESSES)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    reports: multiprocessing.queues.Queue[SpendReport] = context.Queue()
    processes = [
        context.Process(
            target=spend_in_process,
            args=(shared_store_url, SOURCE, SINK, transfer_ids, start, reports),
            name=f"spender-{number}",
        )
        for number, transfer_ids in enumerate(work)
    ]
    for process in processes:
        process.start()
    try:
        report = SpendReport()
        for _ in processes:
            report.merge(reports.get(timeout=PROCESS_TIMEOUT_SECONDS))
        for process in processes:
            process.join(timeout=PROCESS_TIMEOUT_SECONDS)
            assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    attempted = [transfer_id for ids in work for transfer_id in ids]
    with open_ledger(shared_store_url) as ledger:
        assert_spent_exactly_once(ledger, attempted, report, CREDITS)


# Many threads send the same transfer id --------------------------------------------------


def race_same_transfer(
    ledgers: list[Ledger], command: RecordTransfer
) -> list[TransferOutcome | BaseException]:
    start = threading.Barrier(len(ledgers))

    def send(ledger: Ledger) -> TransferOutcome:
        start.wait(timeout=30)
        return ledger.record_transfer(command)

    with ThreadPoolExecutor(max_workers=len(ledgers)) as pool:
        futures = [pool.submit(send, ledger) for ledger in ledgers]
        results: list[TransferOutcome | BaseException] = []
        for future in futures:
            error = future.exception()
            results.append(error if error is not None else future.result())
    return results


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "one_ledger_per_thread", [False, True], ids=["shared-ledger", "ledger-per-thread"]
)
def test_threads_sending_the_same_transfer_id_together_move_the_money_once(
    shared_store_url: str, one_ledger_per_thread: bool
) -> None:
    """Each round tops the source up with exactly what the raced transfer spends, so a
    duplicate that moved money again would also fail for lack of funds."""
    open_funded_source(shared_store_url, 0)
    if one_ledger_per_thread:
        ledgers = [open_ledger(shared_store_url) for _ in range(SAME_ID_THREADS)]
    else:
        ledgers = [open_ledger(shared_store_url)] * SAME_ID_THREADS
    commands = [
        RecordTransfer(f"same:{round_}", SOURCE, SINK, amount=round_)
        for round_ in range(1, SAME_ID_ROUNDS + 1)
    ]
    try:
        for command in commands:
            ledgers[0].record_transfer(
                RecordTransfer(f"top-up:{command.id}", ISSUANCE, SOURCE, command.amount)
            )

            results = race_same_transfer(ledgers, command)

            refusals = [result for result in results if not isinstance(result, TransferOutcome)]
            assert refusals == [], f"{command.id}: a resent id must replay, not be refused"
            outcomes = [result for result in results if isinstance(result, TransferOutcome)]
            assert [outcome.created for outcome in outcomes].count(True) == 1
            assert {outcome.transfer.amount for outcome in outcomes} == {command.amount}
            assert len({outcome.transfer.recorded_at for outcome in outcomes}) == 1
            assert len({outcome.position for outcome in outcomes}) == 1
    finally:
        for ledger in set(ledgers):
            ledger.close()

    credits = sum(command.amount for command in commands)
    with open_ledger(shared_store_url) as ledger:
        # The raced transfers and their top-ups, each recorded once.
        assert topics_recorded(ledger)[TRANSFER_RECORDED_TOPIC] == 2 * SAME_ID_ROUNDS
        assert sorted(posted_transfer_ids(ledger, SINK, Account.Credited)) == sorted(
            c.id for c in commands
        )
        assert ledger.get_account(SINK).balance == credits
        assert min(running_balances(ledger, SOURCE)) >= 0
        assert ledger.get_account(SOURCE).balance == 0
        assert sum(ledger.get_account(account_id).balance for account_id in ALL_ACCOUNTS) == 0
