"""The read side end to end: projection workers over real stores (SQLite files and a real
PostgreSQL server), checked against from-scratch replays of the log.

- Exactly-once: a worker catching up on a large log is SIGKILLed at random moments and
  restarted again and again; at every kill its views hold exactly the events up to its
  checkpoint, and at the end they equal a from-scratch fold of the log row for row, and
  the write side.
- Read-your-writes: a read that waits for a write's position always sees the write; with
  no worker running the wait answers False instead of stale data.
- Gaps: a store whose positions are spaced out (as KurrentDB commit positions are).
- Rebuild beside live workers (which follow the switch) and an interrupted rebuild that
  resumes; lag; expiry of holds by the workers.

SQLite files live on tmpfs when there is one and the PostgreSQL databases commit without
waiting for the WAL flush (``synchronous_commit = off``): the views commit once per
event, and these tests are about processes dying (SIGKILL), which neither setting
weakens; they only spare the disk an fsync per event.
"""

import functools
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import psycopg
import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import TransferOutcome
from app.domain.limits import BATCH_SIZE_MAX
from app.domain.transfer import Transfer
from app.domain.values import transfer_uuid
from app.persistence.stores import event_store_env
from projections.runner import (
    GenerationPointer,
    Lag,
    ProjectionWorkers,
    expire_due_holds,
    measure_lag,
    open_view,
    rebuild,
    start_runner,
    wait_until,
)
from projections.views import LedgerViewMixin
from tests.e2e.gapped_store import (
    GAPPED_RECORDER_TOPIC,
    STRIDE,
    GappedSQLiteApplicationRecorder,
    is_position,
)
from tests.e2e.view_replay import (
    CheckpointProbe,
    Replay,
    assert_dump_equals_replay,
    assert_replay_matches_write_side,
    assert_views_equal_replay,
    dump_views,
    replay_log,
)
from tests.support.pgserver import PostgresServer
from tests.support.threads import run_in_threads

REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
UNIT: Final = "CREDITS"
ISSUER: Final = "issuer"
FUNDING: Final = 10**9
SHM: Final = Path("/dev/shm")

CATCH_UP_TIMEOUT_SECONDS: Final = 120.0
WAIT_SECONDS: Final = 15.0
PROBE_INTERVAL_SECONDS: Final = 0.005
KILL_JITTER_SECONDS: Final = 0.01
EARLY_KILL_WINDOW_SECONDS: Final = 1.0
# The early kills land before the checkpoint passes this fraction of the log.
EARLY_KILL_FRACTION_MAX: Final = 0.1
# Of the kills asked for, at least this many must land before the catch-up ends (the two
# early ones and one past a mark, at the least).
MID_CATCH_UP_KILLS_MIN: Final = 3

_database_numbers = iter(range(10**9))


# Stores --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stores:
    backend: str
    event_store_url: str
    read_model_url: str
    workdir: Path


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch folder on tmpfs when there is one (SQLite fsyncs every commit)."""
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="ledger-projections-", dir=SHM))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def fast_postgres_database(server: PostgresServer, purpose: str) -> str:
    name = f"projections_{purpose}_{next(_database_numbers)}_{uuid.uuid4().hex[:6]}"
    url = server.create_database(name)
    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" SET synchronous_commit TO off')
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, fast_dir: Path) -> Stores:
    if request.param == "sqlite":
        return Stores(
            "sqlite",
            f"sqlite:///{fast_dir / 'events.sqlite'}",
            f"sqlite:///{fast_dir / 'views.sqlite'}",
            fast_dir,
        )
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Stores(
        "postgres",
        fast_postgres_database(server, "events"),
        fast_postgres_database(server, "views"),
        fast_dir,
    )


def sized(stores: Stores, sqlite: int, postgres: int) -> int:
    """PostgreSQL pays a few network round trips per event: smaller logs there."""
    return sqlite if stores.backend == "sqlite" else postgres


# Building a log ------------------------------------------------------------------------


@dataclass
class BuiltLog:
    accounts: list[str]
    transfers: list[str] = field(default_factory=list)
    holds_pending: list[str] = field(default_factory=list)
    head: int = 0


def user(number: int) -> str:
    return f"acct:{number:03d}"


def open_accounts(ledger: Ledger, count: int) -> list[str]:
    ledger.open_account(OpenAccount(ISSUER, UNIT, allow_negative=True, metadata={"role": "mint"}))
    names = [user(number) for number in range(count)]
    for number, name in enumerate(names):
        ledger.open_account(
            OpenAccount(
                name,
                UNIT,
                overdraft_limit=100 if number % 7 == 0 else 0,
                metadata={"number": str(number)},
            )
        )
    ledger.record_batch(
        [RecordTransfer(f"fund:{name}", ISSUER, name, FUNDING) for name in names], atomic=True
    )
    return names


def build_log(
    ledger: Ledger,
    rng: random.Random,
    *,
    accounts: int,
    transfers: int,
    holds: int,
    reversals: int,
) -> BuiltLog:
    """Accounts, then ``transfers`` posted transfers and ``holds`` holds in atomic
    batches; then two thirds of the holds posted (some partly) or voided, a few
    reversals, and one account closed."""
    log = BuiltLog(open_accounts(ledger, accounts))
    log.transfers.extend(f"fund:{name}" for name in log.accounts)
    commands: list[RecordTransfer] = []
    hold_ids: list[str] = []
    hold_every = max(1, transfers // max(1, holds))
    for number in range(transfers):
        debit, credit = rng.sample(log.accounts, 2)
        commands.append(
            RecordTransfer(
                f"t:{number}",
                debit,
                credit,
                rng.randint(1, 100),
                metadata={"n": str(number)} if number % 10 == 0 else {},
            )
        )
        if number % hold_every == 0 and len(hold_ids) < holds:
            debit, credit = rng.sample(log.accounts, 2)
            hold_id = f"h:{len(hold_ids)}"
            hold_ids.append(hold_id)
            commands.append(
                RecordTransfer(
                    hold_id,
                    debit,
                    credit,
                    rng.randint(1, 100),
                    pending=True,
                    timeout_seconds=3600 if len(hold_ids) % 2 else None,
                )
            )
    for start in range(0, len(commands), BATCH_SIZE_MAX):
        ledger.record_batch(commands[start : start + BATCH_SIZE_MAX], atomic=True)
    log.transfers.extend(command.id for command in commands)
    for number, hold_id in enumerate(hold_ids):
        if number % 3 == 0:
            ledger.post_pending(hold_id)
        elif number % 3 == 1 and number % 2:
            ledger.post_pending(hold_id, amount=1)
        elif number % 3 == 1:
            ledger.void_pending(hold_id)
        else:
            log.holds_pending.append(hold_id)
    for number in range(reversals):
        original = f"t:{number * 7}"
        ledger.reverse_transfer(original, f"rev:{original}", metadata={"why": "refund"})
        log.transfers.append(f"rev:{original}")
    ledger.open_account(OpenAccount("closing", UNIT))
    ledger.record_transfer(RecordTransfer("to-closing", ISSUER, "closing", 5))
    ledger.close_account("closing")
    log.accounts.append("closing")
    log.transfers.append("to-closing")
    log.head = ledger.recorder.max_notification_id() or 0
    return log


# Processes -----------------------------------------------------------------------------


def start_worker(mode: str, stores: Stores, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.e2e.projection_worker",
                mode,
                stores.event_store_url,
                stores.read_model_url,
            ],
            cwd=REPOSITORY_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def wait_for_checkpoint(
    probe: CheckpointProbe,
    process: subprocess.Popen[bytes],
    at_least: int,
    log: Path,
) -> int:
    """Poll the checkpoint from outside until it reaches ``at_least``; the worker must
    stay alive meanwhile."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_SECONDS
    while True:
        checkpoint = probe.checkpoint() or 0
        if checkpoint >= at_least:
            return checkpoint
        assert process.poll() is None, f"the worker died on its own:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"stuck at {checkpoint} < {at_least}"
        time.sleep(PROBE_INTERVAL_SECONDS)


def assert_views_hold_exactly_the_prefix(probe: CheckpointProbe, replay: Replay) -> int:
    """At whatever instant the worker died, the views hold each event up to their
    checkpoint once, and nothing after it."""
    checkpoint = probe.checkpoint() or 0
    count, totals = replay.totals_at(checkpoint)
    assert probe.totals() == (count, totals, totals), f"at checkpoint {checkpoint}"
    return checkpoint


def kill_during_catch_up(stores: Stores, replay: Replay, kills: int, rng: random.Random) -> None:
    """Start the worker, SIGKILL it, start it again ... ``kills`` times, then let it catch
    up. The first two kills land at random instants after the start (maybe before the
    worker has done anything); the others once the checkpoint has passed random marks
    spread over the log, a few milliseconds later (mid-transaction or not)."""
    log = stores.workdir / "worker.log"
    open_view(stores.read_model_url, 1)  # create the tables before the first worker
    probe = CheckpointProbe(stores.read_model_url, 1)
    checkpoints: list[int] = []
    try:
        for round_ in range(kills):
            worker = start_worker("project", stores, log)
            try:
                if round_ < 2:
                    # A random instant, but early in the catch-up whatever its speed.
                    deadline = time.monotonic() + rng.uniform(0, EARLY_KILL_WINDOW_SECONDS)
                    early = EARLY_KILL_FRACTION_MAX * replay.head
                    while time.monotonic() < deadline and (probe.checkpoint() or 0) < early:
                        time.sleep(0.005)
                else:
                    # A few percent of the log further on each time, stopping well short
                    # of the head: the last kill must still land mid-catch-up (the worker
                    # commits several hundred events at a time).
                    current = checkpoints[-1] if checkpoints else 0
                    mark = current + rng.uniform(0.02, 0.12) * replay.head
                    wait_for_checkpoint(probe, worker, int(min(mark, 0.8 * replay.head)), log)
                    time.sleep(rng.uniform(0, KILL_JITTER_SECONDS))
                assert worker.poll() is None, f"the worker died on its own:\n{log.read_text()}"
            finally:
                kill(worker)
            checkpoint = assert_views_hold_exactly_the_prefix(probe, replay)
            if checkpoint == replay.head:
                # The catch-up ended before the kill landed (one commit of several hundred
                # events from the mark, or this process kept off the cores past it under
                # load): a worker started again would have nothing to do.
                break
            checkpoints.append(checkpoint)
        assert checkpoints == sorted(checkpoints), checkpoints
        assert len(checkpoints) >= min(kills, MID_CATCH_UP_KILLS_MIN), (
            f"too few kills landed during the catch-up: {checkpoints}, head {replay.head}"
        )
        worker = start_worker("project", stores, log)
        try:
            wait_for_checkpoint(probe, worker, replay.head, log)
        finally:
            kill(worker)
        print(f"checkpoints at the kills: {checkpoints}, head {replay.head}")
    finally:
        probe.close()


# 1. Exactly-once under SIGKILL ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_killed_at_random_moments_of_a_large_catch_up_applies_every_event_once(
    fast_dir: Path,
) -> None:
    stores = Stores(
        "sqlite",
        f"sqlite:///{fast_dir / 'events.sqlite'}",
        f"sqlite:///{fast_dir / 'views.sqlite'}",
        fast_dir,
    )
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        log = build_log(ledger, rng, accounts=49, transfers=8_000, holds=300, reversals=20)
        replay = replay_log(ledger)
        assert replay.events == log.head > 25_000
        assert len(replay.balances) == 51
        kill_during_catch_up(stores, replay, kills=8, rng=rng)
        assert_dump_equals_replay(dump_views(stores.read_model_url, 1), replay)
        assert_replay_matches_write_side(ledger, replay, position_checks_max=500)
        assert sorted(replay.transfers) == sorted(log.transfers)
        statuses = Counter(row["status"] for row in replay.transfers.values())
        assert statuses["pending"] == len(log.holds_pending) > 0
        assert statuses["voided"] > 0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_a_worker_killed_during_catch_up_on_postgres_applies_every_event_once(
    postgres_server: PostgresServer, fast_dir: Path
) -> None:
    stores = Stores(
        "postgres",
        fast_postgres_database(postgres_server, "events"),
        fast_postgres_database(postgres_server, "views"),
        fast_dir,
    )
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        log = build_log(ledger, rng, accounts=19, transfers=1_000, holds=60, reversals=5)
        replay = replay_log(ledger)
        assert replay.events == log.head > 3_000
        kill_during_catch_up(stores, replay, kills=6, rng=rng)
        assert_dump_equals_replay(dump_views(stores.read_model_url, 1), replay)
        assert_replay_matches_write_side(ledger, replay, position_checks_max=200)


# 2. Read-your-writes -------------------------------------------------------------------


@dataclass
class Written:
    position: int
    accounts: tuple[str, ...]
    transfer_id: str | None


class RandomWriter:
    """One random command at a time, remembering holds and posted transfers to act on."""

    def __init__(self, ledger: Ledger, accounts: list[str], rng: random.Random) -> None:
        self.ledger = ledger
        self.accounts = accounts
        self.rng = rng
        self.number = 0
        self.holds: list[str] = []
        self.posted: list[str] = []

    def _id(self, kind: str) -> str:
        self.number += 1
        return f"{kind}:{self.number}"

    def _command(self, *, pending: bool = False) -> RecordTransfer:
        debit, credit = self.rng.sample(self.accounts, 2)
        return RecordTransfer(
            self._id("hold" if pending else "pay"),
            debit,
            credit,
            self.rng.randint(1, 50),
            pending=pending,
            timeout_seconds=3600 if pending else None,
        )

    def write(self) -> Written:
        choice = self.rng.choice(["pay", "pay", "hold", "settle", "batch", "reverse", "open"])
        if choice == "settle" and self.holds:
            hold = self.holds.pop(self.rng.randrange(len(self.holds)))
            if self.rng.random() < 0.5:
                outcome = self.ledger.void_pending(hold)
            else:
                outcome = self.ledger.post_pending(hold)
                self.posted.append(hold)
            view = outcome.transfer
            return Written(outcome.position, (view.debit_account_id, view.credit_account_id), hold)
        if choice == "reverse" and self.posted:
            original = self.posted.pop(self.rng.randrange(len(self.posted)))
            outcome = self.ledger.reverse_transfer(original, self._id("rev"))
            view = outcome.transfer
            return Written(
                outcome.position, (view.debit_account_id, view.credit_account_id), view.id
            )
        if choice == "batch":
            commands = [self._command() for _ in range(3)]
            batch = self.ledger.record_batch(commands, atomic=True)
            positions = [getattr(result, "position", None) for result in batch.results]
            # One atomic write: each item answers its record's position; the last ends it.
            assert positions == sorted(set(positions)), positions  # type: ignore[type-var]
            self.posted.extend(command.id for command in commands)
            touched = {a for c in commands for a in (c.debit_account_id, c.credit_account_id)}
            position = positions[-1]
            assert isinstance(position, int)
            return Written(position, tuple(sorted(touched)), commands[-1].id)
        if choice == "open":
            name = self._id("acct")
            opened = self.ledger.open_account(OpenAccount(name, UNIT, allow_negative=True))
            self.accounts.append(name)
            return Written(opened.position, (name,), None)
        command = self._command(pending=choice == "hold")
        outcome = self.ledger.record_transfer(command)
        (self.holds if command.pending else self.posted).append(command.id)
        return Written(
            outcome.position, (command.debit_account_id, command.credit_account_id), command.id
        )


def assert_read_sees(view: LedgerViewMixin, ledger: Ledger, written: Written) -> None:
    assert view.wait_for(written.position, WAIT_SECONDS), f"view stuck before {written}"
    assert view.checkpoint() >= written.position
    for account_id in written.accounts:
        row = view.balance(account_id)
        expected = ledger.get_account(account_id)
        assert row is not None, account_id
        assert (
            row.debits_posted,
            row.credits_posted,
            row.debits_pending,
            row.credits_pending,
        ) == (
            expected.debits_posted,
            expected.credits_posted,
            expected.debits_pending,
            expected.credits_pending,
        ), (account_id, written)
        assert row.position is not None
        assert row.position <= written.position
    if written.transfer_id is not None:
        transfer = view.transfer(written.transfer_id)
        assert transfer is not None, written
        expected_transfer = ledger.get_transfer(written.transfer_id)
        assert (transfer.status, transfer.amount_posted, transfer.reversed_by) == (
            expected_transfer.status,
            expected_transfer.amount_posted,
            expected_transfer.reversed_by,
        )


@pytest.mark.timeout(180)
def test_a_read_naming_the_position_of_a_write_always_sees_it(stores: Stores) -> None:
    rng = random.Random(7)
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        accounts = open_accounts(ledger, 5)
        workers = ProjectionWorkers(
            stores.event_store_url, stores.read_model_url, ledger, expire_holds=False
        ).start()
        # Read as the API does: through its own connection, not the worker's.
        reader = open_view(stores.read_model_url, workers.generation)
        try:
            writer = RandomWriter(ledger, accounts, rng)
            for _ in range(sized(stores, 80, 40)):
                assert_read_sees(reader, ledger, writer.write())

            # Several writers at once, each reading back its own account's running total.
            errors: list[str] = []

            def write_and_read(number: int) -> None:
                payee = f"payee:{number}"
                ledger.open_account(OpenAccount(payee, UNIT))
                total = 0
                for step in range(sized(stores, 25, 15)):
                    outcome = ledger.record_transfer(
                        RecordTransfer(f"par:{number}:{step}", ISSUER, payee, step + 1)
                    )
                    total += step + 1
                    if not reader.wait_for(outcome.position, WAIT_SECONDS):
                        errors.append(f"{payee}: timed out at {outcome.position}")
                        return
                    row = reader.balance(payee)
                    if row is None or row.balance != total:
                        errors.append(f"{payee}: {row} after {total}")
                        return

            run_in_threads(
                [functools.partial(write_and_read, n) for n in range(4)],
                timeout=CATCH_UP_TIMEOUT_SECONDS,
            )
            assert errors == []

            # An idempotent replay answers the original's position: already visible.
            first = ledger.record_transfer(RecordTransfer("par:0:0", ISSUER, "payee:0", 1))
            assert not first.created
            assert reader.wait_for(first.position, 0)
        finally:
            workers.stop()

        # No worker: the wait says no, rather than passing stale data off as fresh.
        before = reader.balance(accounts[0])
        outcome = ledger.record_transfer(RecordTransfer("unseen", ISSUER, accounts[0], 3))
        assert reader.wait_for(outcome.position, 0.3) is False
        assert reader.checkpoint() < outcome.position
        assert reader.balance(accounts[0]) == before

        # A worker again: it resumes from its checkpoint and the write shows.
        workers = ProjectionWorkers(
            stores.event_store_url, stores.read_model_url, ledger, expire_holds=False
        ).start()
        try:
            assert_read_sees(reader, ledger, Written(outcome.position, (accounts[0],), "unseen"))
        finally:
            workers.stop()
        assert_views_equal_replay(ledger, stores.read_model_url, 1)


# 4. Gaps -------------------------------------------------------------------------------


def scenario_writes(ledger: Ledger, prefix: str) -> list[int]:
    """A bit of everything; the positions of the writes."""
    positions = [
        ledger.open_account(OpenAccount(f"{prefix}a", UNIT, allow_negative=True)).position,
        ledger.open_account(OpenAccount(f"{prefix}b", UNIT)).position,
        ledger.open_account(OpenAccount(f"{prefix}c", UNIT, overdraft_limit=10)).position,
    ]
    a, b, c = f"{prefix}a", f"{prefix}b", f"{prefix}c"
    positions.append(ledger.record_transfer(RecordTransfer(f"{prefix}1", a, b, 100)).position)
    batch = ledger.record_batch(
        [RecordTransfer(f"{prefix}2", b, c, 30), RecordTransfer(f"{prefix}3", c, a, 35)],
        atomic=True,
    )
    assert all(isinstance(result, TransferOutcome) for result in batch.results)
    first = batch.results[0]
    assert isinstance(first, TransferOutcome)
    positions.append(first.position)
    positions.append(
        ledger.record_transfer(
            RecordTransfer(f"{prefix}h1", b, a, 20, pending=True, timeout_seconds=600)
        ).position
    )
    positions.append(
        ledger.record_transfer(RecordTransfer(f"{prefix}h2", a, c, 7, pending=True)).position
    )
    positions.append(ledger.post_pending(f"{prefix}h1", amount=15).position)
    positions.append(ledger.void_pending(f"{prefix}h2").position)
    positions.append(ledger.reverse_transfer(f"{prefix}3", f"{prefix}r3").position)
    positions.append(ledger.open_account(OpenAccount(f"{prefix}d", UNIT)).position)
    positions.append(
        ledger.record_transfer(RecordTransfer(f"{prefix}4", a, f"{prefix}d", 1)).position
    )
    positions.append(ledger.close_account(f"{prefix}d").position)
    return positions


def expected_counters_at(replay: Replay, account_id: str, position: int) -> tuple[int, ...]:
    rows = [row for (account, at), row in replay.entries.items() if account == account_id]
    before = [row for row in rows if row["position"] <= position]
    if not before:
        return (0, 0, 0, 0)
    last = max(before, key=lambda row: row["position"])
    return (
        last["debits_posted"],
        last["credits_posted"],
        last["debits_pending"],
        last["credits_pending"],
    )


@pytest.mark.timeout(120)
def test_a_store_whose_positions_have_gaps_is_projected_correctly(
    fast_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The application's name-prefixed key wins over the unprefixed one the URL sets.
    monkeypatch.setenv("LEDGER_APPLICATION_RECORDER_TOPIC", GAPPED_RECORDER_TOPIC)
    event_store_url = f"sqlite:///{fast_dir / 'events.sqlite'}"
    read_model_url = f"sqlite:///{fast_dir / 'views.sqlite'}"
    with Ledger(event_store_env(event_store_url)) as ledger:
        assert isinstance(ledger.recorder, GappedSQLiteApplicationRecorder)
        positions = scenario_writes(ledger, "x")
        head = ledger.recorder.max_notification_id()
        assert head == positions[-1]
        assert all(is_position(position) for position in positions), positions
        assert positions == sorted(set(positions))
        logged = [n.id for n in ledger.recorder.select_notifications(start=None, limit=10_000)]
        assert all(later - earlier == STRIDE for earlier, later in itertools.pairwise(logged))

        runner = start_runner(event_store_url, read_model_url, 1)
        try:
            view: LedgerViewMixin = runner.view
            for position in positions:
                assert view.wait_for(position, WAIT_SECONDS)
            assert view.wait_for(head, WAIT_SECONDS)
            assert view.checkpoint() == head
            assert view.wait_for(head + 1, 0.2) is False  # no event there (yet)
            assert measure_lag(ledger, view, 1) == Lag(1, head, head, 0, 0.0)
        finally:
            runner.__exit__(None, None, None)
        # Replays answer with SQLite rowids (positions.py asks the recorder in its own
        # terms), so positions are compared through the log, not transfer_position.
        replay = assert_views_equal_replay(ledger, read_model_url, 1, check_positions=False)
        assert sorted(row["position"] for row in replay.balances.values()) == sorted(
            row["position"] for row in dump_views(read_model_url, 1).balances.values()
        )

        # As-of by position, on positions of the log and in the gaps between them.
        reader = open_view(read_model_url, 1)
        for account_id, balance in replay.balances.items():
            for position in range(0, head + 2 * STRIDE):
                row = reader.balance_at_position(account_id, position)
                if position < balance["opened_position"]:
                    assert row is None, (account_id, position)
                    continue
                assert row is not None, (account_id, position)
                assert (
                    row.debits_posted,
                    row.credits_posted,
                    row.debits_pending,
                    row.credits_pending,
                ) == expected_counters_at(replay, account_id, position), (account_id, position)

        # Stopped worker, more writes: lag in gapped positions; then it resumes from a
        # gapped checkpoint without skipping or repeating anything.
        more = scenario_writes(ledger, "y")
        new_head = more[-1]
        lag = measure_lag(ledger, reader, 1)
        assert (lag.checkpoint, lag.head, lag.positions) == (head, new_head, new_head - head)
        assert lag.seconds > 0
        assert reader.wait_for(head + 1, 0.1) is False
        runner = start_runner(event_store_url, read_model_url, 1)
        try:
            assert reader.wait_for(head + 1, WAIT_SECONDS)  # reached by position head + 7
            assert reader.wait_for(new_head, WAIT_SECONDS)
            assert reader.checkpoint() == new_head
        finally:
            runner.__exit__(None, None, None)
        assert_views_equal_replay(ledger, read_model_url, 1, check_positions=False)


# 5. Rebuild ----------------------------------------------------------------------------


@dataclass
class ReadsDuringRebuild:
    phase: str = "before"
    reads: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def keep_reading(
    workers: ProjectionWorkers, accounts: list[str], state: ReadsDuringRebuild
) -> None:
    """What an API would do meanwhile: read every account through the live view."""
    checkpoints: dict[int, int] = {}
    while not state.stop.is_set():
        phase = state.phase
        try:
            generation, view = workers.generation, workers.view
            rows = {row.id: row for row in view.all_balances()}
            missing = [account for account in accounts if account not in rows]
            assert not missing, f"generation {generation} lacks {missing[:3]}"
            checkpoint = view.checkpoint()
            assert checkpoint >= checkpoints.get(generation, 0), "checkpoint went back"
            checkpoints[generation] = checkpoint
        except Exception as error:  # noqa: BLE001  # every failed read is reported
            state.errors.append(f"{phase}: {type(error).__name__}: {error}")
        else:
            state.reads[phase] += 1
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_rebuild_fills_a_new_generation_beside_the_live_one_and_workers_follow_the_switch(
    stores: Stores,
) -> None:
    rng = random.Random(11)
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        log = build_log(
            ledger,
            rng,
            accounts=19,
            transfers=sized(stores, 800, 200),
            holds=30,
            reversals=3,
        )
        workers = ProjectionWorkers(
            stores.event_store_url, stores.read_model_url, ledger, expire_holds=False
        ).start()
        state = ReadsDuringRebuild()
        reader = threading.Thread(target=keep_reading, args=(workers, log.accounts, state))
        try:
            assert workers.generation == 1
            assert workers.view.wait_for(log.head, CATCH_UP_TIMEOUT_SECONDS)
            reader.start()
            assert wait_until(lambda: state.reads["before"] > 0, WAIT_SECONDS)

            # Generation 2 does not exist yet: the rebuild starts from position zero.
            assert CheckpointProbe(stores.read_model_url, 2).checkpoint() is None
            state.phase = "during"
            writes_done = threading.Event()

            def write_meanwhile() -> None:
                open_accounts = [account for account in log.accounts if account != "closing"]
                writer = RandomWriter(ledger, open_accounts, random.Random(5))
                for _ in range(40):
                    writer.write()
                    time.sleep(0.01)
                writes_done.set()

            writer_thread = threading.Thread(target=write_meanwhile)
            writer_thread.start()
            progress: list[tuple[int, int]] = []
            generation = rebuild(
                stores.event_store_url,
                stores.read_model_url,
                on_progress=lambda checkpoint, head: progress.append((checkpoint, head)),
            )
            assert generation == 2
            assert GenerationPointer(stores.read_model_url).read() == (2, None)
            assert progress[-1][0] >= progress[-1][1] >= log.head
            assert [c for c, _ in progress] == sorted(c for c, _ in progress)

            state.phase = "switching"
            assert wait_until(lambda: workers.generation == 2, WAIT_SECONDS), (
                "workers did not follow"
            )
            state.phase = "after"
            writer_thread.join()
            assert writes_done.is_set()
            head = ledger.recorder.max_notification_id() or 0
            assert workers.view.wait_for(head, CATCH_UP_TIMEOUT_SECONDS)
            assert wait_until(lambda: state.reads["after"] > 5, WAIT_SECONDS)
        finally:
            state.stop.set()
            if reader.is_alive():
                reader.join()
            workers.stop()
        assert state.errors == []
        assert state.reads["before"] > 0
        assert state.reads["during"] > 0
        assert state.reads["after"] > 0

        # Generation 1 stopped at the switch; brought to the same head, it holds the very
        # same rows as generation 2, and both equal the replay.
        runner = start_runner(stores.event_store_url, stores.read_model_url, 1)
        try:
            assert runner.view.wait_for(head, CATCH_UP_TIMEOUT_SECONDS)
        finally:
            runner.__exit__(None, None, None)
        old, new = dump_views(stores.read_model_url, 1), dump_views(stores.read_model_url, 2)
        assert old == new
        assert_views_equal_replay(ledger, stores.read_model_url, 2)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_interrupted_rebuild_resumes_from_its_checkpoint_and_switches(stores: Stores) -> None:
    rng = random.Random(13)
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        build_log(
            ledger,
            rng,
            accounts=19,
            transfers=sized(stores, 1_500, 400),
            holds=30,
            reversals=3,
        )
        replay = replay_log(ledger)
        pointer = GenerationPointer(stores.read_model_url)
        assert pointer.read() == (1, None)

        log = stores.workdir / "rebuild.log"
        probe = CheckpointProbe(stores.read_model_url, 2)
        try:
            killed_at: list[int] = []
            for fraction in (0.2, 0.5):
                process = start_worker("rebuild", stores, log)
                try:
                    wait_for_checkpoint(probe, process, int(replay.head * fraction), log)
                    time.sleep(rng.uniform(0, KILL_JITTER_SECONDS))
                finally:
                    kill(process)
                killed_at.append(assert_views_hold_exactly_the_prefix(probe, replay))
                # Still building generation 2; readers still on generation 1.
                assert pointer.read() == (1, 2)
            assert killed_at[0] <= killed_at[1] < replay.head
        finally:
            probe.close()

        progress: list[int] = []
        generation = rebuild(
            stores.event_store_url,
            stores.read_model_url,
            on_progress=lambda checkpoint, head: progress.append(checkpoint),
        )
        assert generation == 2
        assert progress[0] >= killed_at[-1] > 0, "it resumed rather than starting over"
        assert pointer.read() == (2, None)
        assert_dump_equals_replay(dump_views(stores.read_model_url, 2), replay)


# 6. Lag --------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_lag_is_reported_in_positions_and_seconds_and_is_zero_once_caught_up(
    stores: Stores,
) -> None:
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        accounts = open_accounts(ledger, 2)
        workers = ProjectionWorkers(
            stores.event_store_url, stores.read_model_url, ledger, expire_holds=False
        ).start()
        try:
            head = ledger.recorder.max_notification_id() or 0
            assert workers.view.wait_for(head, WAIT_SECONDS)
            assert workers.lag() == Lag(1, head, head, 0, 0.0)
        finally:
            workers.stop()

        view = open_view(stores.read_model_url, 1)
        first_write = datetime.now(tz=UTC)
        for number in range(5):
            ledger.record_transfer(RecordTransfer(f"lag:{number}", ISSUER, accounts[0], 1))
        time.sleep(0.3)
        new_head = ledger.recorder.max_notification_id() or 0
        lag = measure_lag(ledger, view, 1)
        assert (lag.generation, lag.checkpoint, lag.head) == (1, head, new_head)
        assert lag.positions == new_head - head > 0
        elapsed = (datetime.now(tz=UTC) - first_write).total_seconds()
        assert 0.3 <= lag.seconds <= elapsed + 0.1
        time.sleep(0.2)
        assert measure_lag(ledger, view, 1).seconds >= lag.seconds + 0.2

        workers = ProjectionWorkers(
            stores.event_store_url, stores.read_model_url, ledger, expire_holds=False
        ).start()
        try:
            assert workers.view.wait_for(new_head, WAIT_SECONDS)
            assert workers.lag() == Lag(1, new_head, new_head, 0, 0.0)
        finally:
            workers.stop()


# 7. Expiry -----------------------------------------------------------------------------


def expired_events(ledger: Ledger, transfer_id: str) -> int:
    return sum(
        isinstance(event, Transfer.PendingExpired)
        for event in ledger.events.get(transfer_uuid(transfer_id))
    )


@pytest.mark.timeout(120)
def test_workers_expire_a_hold_past_its_timeout_without_any_client_action(
    stores: Stores,
) -> None:
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        payer, payee = open_accounts(ledger, 2)
        workers = ProjectionWorkers(
            stores.event_store_url, stores.read_model_url, ledger, expire_holds=True
        ).start()
        try:
            ledger.record_transfer(
                RecordTransfer("hold", payer, payee, 30, pending=True, timeout_seconds=1)
            )
            ledger.record_transfer(
                RecordTransfer("long-hold", payer, payee, 5, pending=True, timeout_seconds=3600)
            )
            assert ledger.get_account(payer).debits_pending == 35
            assert wait_until(lambda: ledger.get_transfer("hold").status == "expired", 10.0)
            assert ledger.get_transfer("long-hold").status == "pending"
            head = ledger.recorder.max_notification_id() or 0
            assert workers.view.wait_for(head, WAIT_SECONDS)
            row = workers.view.transfer("hold")
            assert row is not None
            assert row.status == "expired"
        finally:
            workers.stop()
        payer_view, payee_view = ledger.get_account(payer), ledger.get_account(payee)
        assert (payer_view.balance, payer_view.debits_pending) == (FUNDING, 5)
        assert payer_view.available == FUNDING - 5
        assert (payee_view.balance, payee_view.credits_pending) == (FUNDING, 5)
        assert expired_events(ledger, "hold") == 1

        # Running it again, twice, changes nothing.
        view = open_view(stores.read_model_url, 1)
        now = datetime.now(tz=UTC)
        assert expire_due_holds(ledger, view, now) == []
        assert expire_due_holds(ledger, view, now) == []
        assert ledger.recorder.max_notification_id() == head
        assert_views_equal_replay(ledger, stores.read_model_url, 1)


# Long enough for the runner's catch-up and the void to come before the holds' end on a
# loaded machine (the void of an ended hold is refused).
LAGGING_HOLD_TIMEOUT_SECONDS: Final = 4


@pytest.mark.timeout(120)
def test_expiring_twice_from_a_lagging_view_is_harmless(stores: Stores) -> None:
    with Ledger(event_store_env(stores.event_store_url)) as ledger:
        payer, payee = open_accounts(ledger, 2)
        for hold in ("hold", "voided-hold"):
            ledger.record_transfer(
                RecordTransfer(
                    hold,
                    payer,
                    payee,
                    30,
                    pending=True,
                    timeout_seconds=LAGGING_HOLD_TIMEOUT_SECONDS,
                )
            )
        runner = start_runner(stores.event_store_url, stores.read_model_url, 1)
        try:
            assert runner.view.wait_for(ledger.recorder.max_notification_id() or 0, WAIT_SECONDS)
        finally:
            runner.__exit__(None, None, None)
        # From here on the view lags: it still shows both holds pending.
        view = open_view(stores.read_model_url, 1)
        ledger.void_pending("voided-hold")
        due_at = max(ledger.get_transfer(hold).recorded_at for hold in ("hold", "voided-hold"))
        elapsed = (datetime.now(tz=UTC) - due_at).total_seconds()
        due_in = LAGGING_HOLD_TIMEOUT_SECONDS + 0.05 - elapsed
        time.sleep(max(0.0, due_in))

        now = datetime.now(tz=UTC)
        assert sorted(view.due_expiries(now, 10)) == ["hold", "voided-hold"]
        assert expire_due_holds(ledger, view, now) == ["hold"]
        head = ledger.recorder.max_notification_id()
        # The view still says pending: the second run asks again and writes nothing.
        assert expire_due_holds(ledger, view, now) == ["hold"]
        assert ledger.recorder.max_notification_id() == head
        assert expired_events(ledger, "hold") == 1
        account = ledger.get_account(payer)
        assert (account.debits_pending, account.balance) == (0, FUNDING)

        runner = start_runner(stores.event_store_url, stores.read_model_url, 1)
        try:
            assert view.wait_for(head or 0, WAIT_SECONDS)
        finally:
            runner.__exit__(None, None, None)
        assert view.due_expiries(datetime.now(tz=UTC), 10) == []
        assert expire_due_holds(ledger, view, datetime.now(tz=UTC)) == []
        assert ledger.recorder.max_notification_id() == head
        assert_views_equal_replay(ledger, stores.read_model_url, 1)
