"""A writer process is killed (SIGKILL) in the middle of a burst of transfers, three times.

The writer acknowledges each transfer on stdout right after ``record_transfer`` returns.
After each kill a fresh Ledger must find every acknowledged transfer whole, at most the
one transfer that was in flight beyond them, nothing half-applied, and balanced books.
"""

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import pytest
from eventsourcing.utils import get_topic

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.account import Account
from app.domain.errors import TransferNotFoundError
from app.domain.transfer import Transfer
from app.persistence.stores import event_store_env
from tests.conftest import store_url
from tests.e2e.ledger_workers import FLOOD_THREADS, ISSUANCE, UNIT, crash_plan, user_account
from tests.e2e.store_reads import posted_transfer_ids, running_balances, topics_recorded

REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
USERS: Final = 12
BURST: Final = 2_000
# Acknowledgements read before each kill: right after start-up, early, well into the burst
# (past the account snapshot interval of the issuance account).
KILL_AFTER_ACKS: Final = (1, 300, 700)
ACK_TIMEOUT_SECONDS: Final = 120.0
KILL_JITTER_SECONDS: Final = 0.01
TRANSFER_RECORDED_TOPIC: Final = get_topic(Transfer.TransferRecorded)
ACCOUNTS: Final = (ISSUANCE, *(user_account(number) for number in range(USERS)))


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def crash_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(str(request.param), tmp_path, request)


class LineReader:
    """Collects the writer's stdout lines on a thread, so the test can wait with a deadline.
    Only whole lines count: a line cut off by the kill was never an acknowledgement."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.endswith("\n"):
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str | None:
        return self.lines.get(timeout=ACK_TIMEOUT_SECONDS)

    def rest(self) -> list[str]:
        """Every line still buffered, once the writer is dead."""
        self.thread.join(timeout=ACK_TIMEOUT_SECONDS)
        rest: list[str] = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        return rest


@dataclass(frozen=True)
class KilledBurst:
    plan: list[RecordTransfer]
    acknowledged: list[str]
    overloaded: int = 0


OVERLOADED_LINE: Final = "overloaded"
FLOOD_ACKS_BEFORE_KILL: Final = 400


def kill_writer_after(
    url: str, prefix: str, acks_before_kill: int, log: Path, mode: str = "write-burst"
) -> KilledBurst:
    """Start a writer, read ``acks_before_kill`` acknowledgements, SIGKILL it at once."""
    command = [sys.executable, "-m", "tests.e2e.ledger_workers", mode, url, prefix]
    with log.open("w") as stderr:
        writer = subprocess.Popen(
            [*command, str(BURST), str(USERS)],
            cwd=REPOSITORY_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert writer.stdout is not None
    reader = LineReader(writer.stdout)
    overloaded = 0
    try:
        assert reader.next_line() == "ready", log.read_text()
        acknowledged: list[str] = []
        while len(acknowledged) < acks_before_kill:
            line = reader.next_line()
            assert line is not None, f"the writer died on its own:\n{log.read_text()}"
            if line == OVERLOADED_LINE:
                overloaded += 1
            else:
                acknowledged.append(line)
        # A few milliseconds more, so the kill lands anywhere within the next transfers
        # (their reads, their commit, their acknowledgement), not always at one spot.
        time.sleep(random.uniform(0, KILL_JITTER_SECONDS))
        assert writer.poll() is None, "the writer finished before it could be killed"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=ACK_TIMEOUT_SECONDS)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    # Acknowledgements printed before the kill but not yet read count just the same.
    rest = reader.rest()
    acknowledged.extend(line for line in rest if line != OVERLOADED_LINE)
    assert "done" not in acknowledged, "the burst ended before the kill"
    return KilledBurst(crash_plan(prefix, BURST, USERS), acknowledged, overloaded)


def recorded_part(ledger: Ledger, burst: KilledBurst) -> list[RecordTransfer]:
    """The transfers of the burst the store holds, each checked whole against the plan.
    The writer is sequential, so they must be a prefix of the plan: every acknowledged
    one, plus at most the one in flight at the kill; nothing after that."""
    planned_ids = [command.id for command in burst.plan]
    assert burst.acknowledged == planned_ids[: len(burst.acknowledged)]
    recorded = recorded_whole(ledger, burst.plan)
    assert recorded == burst.plan[: len(recorded)], "a gap: a later transfer without an earlier"
    assert len(burst.acknowledged) <= len(recorded) <= len(burst.acknowledged) + 1
    return recorded


def recorded_whole(ledger: Ledger, plan: list[RecordTransfer]) -> list[RecordTransfer]:
    """The planned transfers the store holds, each checked whole against the plan."""
    recorded: list[RecordTransfer] = []
    for command in plan:
        try:
            transfer = ledger.get_transfer(command.id)
        except TransferNotFoundError:
            continue
        assert (transfer.debit_account_id, transfer.credit_account_id) == (
            command.debit_account_id,
            command.credit_account_id,
        )
        assert (transfer.amount, transfer.amount_posted) == (command.amount, command.amount)
        assert transfer.status == "posted"
        recorded.append(command)
    return recorded


def assert_books_match(ledger: Ledger, recorded: list[RecordTransfer]) -> None:
    """Every account equals the transfers that exist, no more, no less, and sums to 0."""
    credited: Counter[str] = Counter()
    for command in recorded:
        credited[command.credit_account_id] += command.amount
    total = sum(command.amount for command in recorded)

    issuance = ledger.get_account(ISSUANCE)
    assert (issuance.debits_posted, issuance.credits_posted) == (total, 0)
    assert sorted(posted_transfer_ids(ledger, ISSUANCE, Account.Debited)) == sorted(
        command.id for command in recorded
    )
    for number in range(USERS):
        account_id = user_account(number)
        account = ledger.get_account(account_id)
        assert (account.credits_posted, account.debits_posted) == (credited[account_id], 0)
        assert sorted(posted_transfer_ids(ledger, account_id, Account.Credited)) == sorted(
            command.id for command in recorded if command.credit_account_id == account_id
        )
    for account_id in ACCOUNTS:
        # Snapshots and the cache agree with a fold of the raw stream.
        assert ledger.get_account(account_id).balance == running_balances(ledger, account_id)[-1]
    assert sum(ledger.get_account(account_id).balance for account_id in ACCOUNTS) == 0
    assert topics_recorded(ledger)[TRANSFER_RECORDED_TOPIC] == len(recorded)


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_a_writer_killed_mid_burst_loses_no_acknowledged_transfer_and_half_applies_none(
    crash_store_url: str, tmp_path: Path
) -> None:
    with Ledger(event_store_env(crash_store_url)) as ledger:
        ledger.open_account(OpenAccount(ISSUANCE, UNIT, allow_negative=True))
        for number in range(USERS):
            ledger.open_account(OpenAccount(user_account(number), UNIT))

    recorded: list[RecordTransfer] = []
    for round_, acks_before_kill in enumerate(KILL_AFTER_ACKS):
        burst = kill_writer_after(
            crash_store_url, f"burst{round_}", acks_before_kill, tmp_path / f"writer{round_}.log"
        )

        with Ledger(event_store_env(crash_store_url)) as ledger:
            recorded_now = recorded_part(ledger, burst)
            assert_books_match(ledger, recorded + recorded_now)

            # The client of the cut-off request resends it: safe whether or not it landed.
            in_flight = burst.plan[len(burst.acknowledged)]
            outcome = ledger.record_transfer(in_flight)
            assert outcome.created == (in_flight not in recorded_now)
            recorded += burst.plan[: len(burst.acknowledged) + 1]
            assert_books_match(ledger, recorded)


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_a_writer_killed_while_its_write_queue_is_full_keeps_every_acknowledged_transfer_once(
    crash_store_url: str, tmp_path: Path
) -> None:
    with Ledger(event_store_env(crash_store_url)) as ledger:
        ledger.open_account(OpenAccount(ISSUANCE, UNIT, allow_negative=True))
        for number in range(USERS):
            ledger.open_account(OpenAccount(user_account(number), UNIT))

    burst = kill_writer_after(
        crash_store_url, "flood", FLOOD_ACKS_BEFORE_KILL, tmp_path / "flood.log", "write-flood"
    )
    assert burst.overloaded > 0, "the queue was never full before the kill"
    with Ledger(event_store_env(crash_store_url)) as ledger:
        recorded = recorded_whole(ledger, burst.plan)
        recorded_ids = {command.id for command in recorded}
        assert len(set(burst.acknowledged)) == len(burst.acknowledged)
        assert set(burst.acknowledged) <= recorded_ids
        # Beyond the acknowledged: at most what the writer held (a queue and a group).
        assert len(recorded) <= len(burst.acknowledged) + FLOOD_THREADS
        assert_books_match(ledger, recorded)  # each recorded once, books balanced
