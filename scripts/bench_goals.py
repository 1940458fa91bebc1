"""The write path's goals (issue 9), each side measured in the same run, alternating:

* SQLite, atomic batches of 1,000 transfers against the floor: the very same event rows
  (three per transfer, the ledger's own sizes) written with one ``executemany`` per
  batch into the library's own table, same file settings. Goal: at least 60% of the floor.
  Reported beside it, not instead of it: the same floor when its rows are also encoded
  and hash-chained in the timed part (each event's state by orjson, its link by
  SHA-256 over orjson's bytes, a uuid5 per row), and the same floor with the least such
  work per row (``Floor.least_encoded_batches``: each row's state encoded once, its link
  hashed once over it, a uuid5 per transfer's new stream): what an event-sourced write
  of these rows cannot do without.
  Each SQLite line also prints the process CPU time per transfer of both sides (every
  thread's), and the time their threads waited for a core (runnable, not running: the
  machine's other load), both over the timed part only: what a side prepares before
  it (the floor's rows and ids, the ledger's commands) counts in neither its wall nor
  its CPU time. On a loaded machine the wall-time ratio favours the shorter phase (the
  scheduler's credit for a thread that just woke), the CPU ratio does not. A side's
  wall time less its CPU and its wait for a core is what it spent blocked (its commits'
  syncs, the ledger's hand-offs between its caller and its writer thread).
  The floor's connection is given the ledger's write connection's settings (journal
  mode, synchronous, page cache, checkpoint size).
* PostgreSQL, atomic batches of 1,000 against the naive column: 8 connections each doing
  single transfers as two ``UPDATE … credits_remaining`` in one transaction. Goal: at
  least 1.5 times the column.

Run from the repository root (``bench_core.py --goals`` runs the same)::

    .venv/bin/python scripts/bench_goals.py --rounds 3
"""

import argparse
import hashlib
import itertools
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import orjson
import psycopg
from eventsourcing.sqlite import SQLiteApplicationRecorder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import in_turn, machine, run_queue_seconds

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.chain import GENESIS
from app.domain.transfer import Transfer
from app.persistence.sqlite_subscription import SubscribableSQLiteApplicationRecorder
from app.persistence.stores import event_store_env, sqlite_url
from tests.support.pgserver import running_postgres

UNIT: Final = "CREDITS"
FUNDING: Final = 10**15
BATCH: Final = 1_000
USERS: Final = 1_000
CONNECTIONS: Final = 8
SQLITE_FLOOR_GOAL: Final = 0.60
ENCODED_BATCH_NUMBERS_STEP: Final = 1_000_000
# Stream ids of the encoded floor's rows (any fixed namespace: they only need to be new).
ENCODED_FLOOR_NAMESPACE: Final = uuid.UUID("0b5c3f3e-9a51-4f0e-8f5e-2f1b8c7d6a40")
POSTGRES_COLUMN_GOAL: Final = 1.5


@dataclass
class Goal:
    name: str
    baseline: str
    goal: float | None  # None: a figure for context, with no goal of its own
    ledger: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)
    # Process CPU time per transfer (µs) of each side's phases, where measured: less
    # sensitive to a loaded machine than wall time.
    ledger_cpu: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    # Time per transfer (µs) the side's threads waited for a core, where measured.
    ledger_waiting: list[float] = field(default_factory=list)
    other_waiting: list[float] = field(default_factory=list)

    def add(self, mine: "Phase", theirs: "Phase") -> None:
        self.ledger.append(mine.rate)
        self.ledger_cpu.append(mine.cpu_per_transfer)
        self.ledger_waiting.append(mine.waiting_per_transfer)
        self.other.append(theirs.rate)
        self.other_cpu.append(theirs.cpu_per_transfer)
        self.other_waiting.append(theirs.waiting_per_transfer)

    def ratios(self) -> list[float]:
        return [mine / theirs for mine, theirs in zip(self.ledger, self.other, strict=True)]

    def line(self) -> str:
        ratio = statistics.median(self.ratios())
        if self.goal is None:
            verdict = "no goal"
        else:
            verdict = f"goal {self.goal}: " + ("met" if ratio >= self.goal else "NOT met")
        cpu = ""
        if self.ledger_cpu and self.other_cpu:
            mine_cpu, theirs_cpu = (statistics.median(c) for c in (self.ledger_cpu, self.other_cpu))
            cpu = (
                f"; CPU per transfer {mine_cpu:,.1f} µs vs {theirs_cpu:,.1f} µs "
                f"(ratio {theirs_cpu / mine_cpu:.2f})"
            )
        if self.ledger_waiting and self.other_waiting:
            mine_wait, theirs_wait = (
                statistics.median(w) for w in (self.ledger_waiting, self.other_waiting)
            )
            cpu += f"; waiting for a core {mine_wait:,.1f} µs vs {theirs_wait:,.1f} µs"
        return (
            f"{self.name}: ledger {statistics.median(self.ledger):,.0f}/s, {self.baseline} "
            f"{statistics.median(self.other):,.0f}/s, ratio {ratio:.2f} ({verdict}); per round "
            + ", ".join(
                f"{mine:,.0f} vs {theirs:,.0f} = {mine / theirs:.2f}"
                for mine, theirs in zip(self.ledger, self.other, strict=True)
            )
            + cpu
        )


def user(index: int) -> str:
    return f"user:{index}"


def set_up(ledger: Ledger) -> None:
    ledger.open_account(OpenAccount("issuance", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("revenue", UNIT))
    for start in range(0, USERS, BATCH):
        for index in range(start, min(USERS, start + BATCH)):
            ledger.open_account(OpenAccount(user(index), UNIT))
    grants = [RecordTransfer(f"grant:{i}", "issuance", user(i), FUNDING) for i in range(USERS)]
    for start in range(0, len(grants), BATCH):
        ledger.record_batch(grants[start : start + BATCH], atomic=True)


def spend_batch(tag: str) -> list[RecordTransfer]:
    return [RecordTransfer(f"{tag}:{i}", user(i % USERS), "revenue", 1) for i in range(BATCH)]


@dataclass(frozen=True)
class Phase:
    """One side's timed part: its transfers per second, and per transfer the process CPU
    time and the time its threads waited for a core (µs, every thread's)."""

    rate: float
    cpu_per_transfer: float
    waiting_per_transfer: float


class Stopwatch:
    """Wall, process CPU and run-queue time from its start (``Phase`` at ``stop``)."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._waiting = run_queue_seconds()
        self._wall = time.perf_counter()

    def stop(self, transfers: int) -> Phase:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        waiting = run_queue_seconds() - self._waiting
        return Phase(transfers / wall, 1e6 * cpu / transfers, 1e6 * waiting / transfers)


def ledger_batches(ledger: Ledger, tag: str, count: int) -> float:
    return timed_ledger_batches(ledger, tag, count).rate


def timed_ledger_batches(ledger: Ledger, tag: str, count: int) -> Phase:
    """The batches' phase (not the commands' construction)."""
    batches = [spend_batch(f"{tag}:{n}") for n in range(count)]
    stopwatch = Stopwatch()
    for batch in batches:
        ledger.record_batch(batch, atomic=True)
    return stopwatch.stop(count * BATCH)


# SQLite: the floor -----------------------------------------------------------------------


# The write connection's settings the floor's connection is given, as the ledger's write
# connection has them after a large write.
WRITER_PRAGMAS: Final = ("journal_mode", "synchronous", "cache_size", "wal_autocheckpoint")


def library_pragmas(ledger: Ledger) -> dict[str, str]:
    """``WRITER_PRAGMAS`` as the ledger's write connection has them (after a batch)."""
    recorder = ledger.recorder
    assert isinstance(recorder, SubscribableSQLiteApplicationRecorder)
    return {name: str(recorder.writer_pragma(name)) for name in WRITER_PRAGMAS}


def sample_rows(ledger: Ledger) -> list[tuple[str, int, str, bytes]]:
    """The last batch's stored rows, as the ledger wrote them (three per transfer)."""
    recorder = ledger.recorder
    assert isinstance(recorder, SQLiteApplicationRecorder)
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(
            f"SELECT originator_id, originator_version, topic, state FROM "
            f"{recorder.events_table_name} ORDER BY rowid DESC LIMIT {3 * BATCH}"
        )
        return [(str(r[0]), int(r[1]), str(r[2]), bytes(r[3])) for r in cursor.fetchall()]


class Floor:
    """The library's events table in its own file, filled by ``executemany``."""

    def __init__(self, path: Path, pragmas: dict[str, str]) -> None:
        Ledger(event_store_env(sqlite_url(path))).close()  # the library creates its table
        self.connection = sqlite3.connect(path, isolation_level=None)
        for name, value in pragmas.items():
            self.connection.execute(f"PRAGMA {name}={value}")
        # Batches of the encoded floor are numbered apart (their stream ids derive from it).
        self._encoded_batch_numbers = itertools.count(0, ENCODED_BATCH_NUMBERS_STEP)

    def batches(self, sample: Sequence[tuple[str, int, str, bytes]], count: int) -> Phase:
        prepared = []
        for _ in range(count):
            # Fresh stream ids per batch, the same versions, topics and payloads.
            ids = {old: uuid.uuid4().hex for old in {row[0] for row in sample}}
            prepared.append([(ids[o], v, t, s) for o, v, t, s in sample])
        stopwatch = Stopwatch()
        for rows in prepared:
            self.connection.execute("BEGIN")
            self.connection.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", rows)
            self.connection.execute("COMMIT")
        return stopwatch.stop(count * BATCH)

    def encoded_batches(self, sample: Sequence[tuple[str, int, str, bytes]], count: int) -> Phase:
        """The floor, with each row's state encoded and hash-chained in the timed part."""
        states = [orjson.loads(state) for _, _, _, state in sample]
        first = next(self._encoded_batch_numbers)
        stopwatch = Stopwatch()
        for batch in range(first, first + count):
            rows = []
            for (old_id, version, topic, _), state in zip(sample, states, strict=True):
                stream_id = uuid.uuid5(ENCODED_FLOOR_NAMESPACE, f"{batch}:{old_id}").hex
                state["chain"] = hashlib.sha256(
                    orjson.dumps(
                        [GENESIS, topic, stream_id, version, state["timestamp"], state],
                        option=orjson.OPT_SORT_KEYS,
                    )
                ).hexdigest()
                rows.append((stream_id, version, topic, orjson.dumps(state)))
            self.connection.execute("BEGIN")
            self.connection.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", rows)
            self.connection.execute("COMMIT")
        return stopwatch.stop(count * BATCH)

    def least_encoded_batches(
        self, sample: Sequence[tuple[str, int, str, bytes]], count: int
    ) -> Phase:
        """The floor, with the least encoding and chaining per row in the timed part: each
        row's state (but its link) written once by orjson, its link one SHA-256 over a
        head and those bytes and joined in front of them, and the stream id of each
        transfer's first event a uuid5 (the other rows keep fresh ids made before the
        timed part, as the plain floor's). Rows of the sample's sizes."""
        states = [orjson.loads(state) for _, _, _, state in sample]
        for state in states:
            del state["chain"]
        prepared = []
        for _ in range(count):
            ids = {old: uuid.uuid4().hex for old in {row[0] for row in sample}}
            prepared.append([(ids[o], v, t) for o, v, t, _ in sample])
        first = next(self._encoded_batch_numbers)
        stopwatch = Stopwatch()
        for batch, keyed in enumerate(prepared, start=first):
            rows = []
            for (fresh_id, version, topic), state in zip(keyed, states, strict=True):
                stream_id = (
                    uuid.uuid5(ENCODED_FLOOR_NAMESPACE, f"{batch}:{fresh_id}").hex
                    if version == Transfer.INITIAL_VERSION  # a new transfer's stream
                    else fresh_id
                )
                encoded = orjson.dumps(state)
                link = hashlib.sha256(
                    f'["{GENESIS}","{topic}","{stream_id}",{version},"",'.encode() + encoded + b"]"
                ).hexdigest()
                stored = bytearray(b'{"chain":"%b",%b' % (link.encode(), encoded[1:]))
                rows.append((stream_id, version, topic, stored))
            self.connection.execute("BEGIN")
            self.connection.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", rows)
            self.connection.execute("COMMIT")
        return stopwatch.stop(count * BATCH)


def goal_sqlite(workdir: Path, rounds: int, count: int) -> tuple[Goal, Goal, Goal]:
    goal = Goal("SQLite atomic batches of 1,000", "executemany floor", SQLITE_FLOOR_GOAL)
    encoded = Goal(
        "SQLite atomic batches of 1,000, for context",
        "executemany floor with rows encoded and hash-chained",
        None,
    )
    least = Goal(
        "SQLite atomic batches of 1,000, for context",
        "executemany floor with each row encoded once and hash-chained once",
        None,
    )
    with Ledger(event_store_env(sqlite_url(workdir / "ledger.sqlite"))) as ledger:
        set_up(ledger)
        ledger_batches(ledger, "warm", 1)
        floor = Floor(workdir / "floor.sqlite", library_pragmas(ledger))
        sample = sample_rows(ledger)
        for round_number in range(rounds):
            # The goal's two sides in turn (the ledger first in even rounds, the floor
            # first in odd ones); the floors for context after them.
            sides = {
                "ledger": partial(timed_ledger_batches, ledger, f"r{round_number}", count),
                "floor": partial(floor.batches, sample, count),
            }
            phases = {name: sides[name]() for name in in_turn(list(sides), round_number)}
            mine = phases["ledger"]
            goal.add(mine, phases["floor"])
            encoded.add(mine, floor.encoded_batches(sample, count))
            least.add(mine, floor.least_encoded_batches(sample, count))
    return goal, encoded, least


# PostgreSQL: the naive column ---------------------------------------------------------------

TWO_UPDATES: Final = (
    "UPDATE users SET credits_remaining = credits_remaining - %s "
    "WHERE id = %s AND credits_remaining >= %s",
    "UPDATE users SET credits_remaining = credits_remaining + %s WHERE id = %s",
)


def naive_column(url: str, per_connection: int) -> float:
    """8 connections, each a thread of single transfers (two UPDATEs, one commit)."""
    connections = [psycopg.connect(url) for _ in range(CONNECTIONS)]
    barrier = threading.Barrier(CONNECTIONS + 1)

    def run(thread: int) -> None:
        connection = connections[thread]
        barrier.wait()
        for i in range(per_connection):
            with connection.cursor() as cursor:
                debit = (thread * per_connection + i) % USERS
                cursor.execute(TWO_UPDATES[0], (1, debit, 1), prepare=True)
                cursor.execute(TWO_UPDATES[1], (1, USERS), prepare=True)
            connection.commit()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return CONNECTIONS * per_connection / seconds


def create_column(url: str) -> None:
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE users (id BIGINT PRIMARY KEY, credits_remaining BIGINT)")
        cursor.executemany(
            "INSERT INTO users VALUES (%s, %s)", [(i, FUNDING) for i in range(USERS + 1)]
        )


def goal_postgres(rounds: int, count: int, per_connection: int) -> Goal:
    goal = Goal(
        "PostgreSQL atomic batches of 1,000",
        "naive two-UPDATE column, 8 connections",
        POSTGRES_COLUMN_GOAL,
    )
    with running_postgres(fsync=True) as server:
        url = server.create_database("goals")
        create_column(url)
        with Ledger(event_store_env(url)) as ledger:
            set_up(ledger)
            ledger_batches(ledger, "warm", 1)
            for round_number in range(rounds):
                goal.ledger.append(ledger_batches(ledger, f"r{round_number}", count))
                goal.other.append(naive_column(url, per_connection))
    return goal


def run_goals(rounds: int, count: int, per_connection: int, backends: set[str]) -> list[Goal]:
    goals: list[Goal] = []
    with tempfile.TemporaryDirectory(prefix="ledger-goals-") as tmp:
        if "sqlite" in backends:
            goals.extend(goal_sqlite(Path(tmp), rounds, count))
        if "postgres" in backends:
            goals.append(goal_postgres(rounds, count, per_connection))
    return goals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--batches", type=int, default=5, help="ledger batches per round")
    parser.add_argument(
        "--per-connection", type=int, default=250, help="naive transfers per connection"
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    backends = {name.strip() for name in str(args.backends).split(",")}
    goals = run_goals(args.rounds, args.batches, args.per_connection, backends)
    for goal in goals:
        print(goal.line())
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
