"""The events database's schema versions (decision 0037): a feed made by the version
before versions were recorded (its ``event_id`` unique) opens under today's code and
loses that index, every row as it was (events, their ids and sequences, the head, the
accounts' states, the waiting effects, monitors, webhooks); processes opening it at once
upgrade it once; opening it again changes nothing; and a feed event is never stored
twice, even by a projector killed at random moments and run again."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import psycopg
import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.events import store as feed_schema
from app.events.database import Database, PartSchema, SchemaStep, SchemaTooNewError
from app.events.monitors import MonitorStore
from app.events.projector import FeedProjector
from app.events.store import FeedRow, FeedStore
from app.persistence.stores import sqlite_env
from app.webhooks import store as webhooks_schema
from app.webhooks.store import Attempt, WebhookStore
from tests.support.view_log import Log, every_kind_log

FEED_BACKENDS: Final = ["sqlite", "postgres"]
REPOSITORY: Final = Path(__file__).resolve().parents[2]
# The events database as the ledger made it before schema versions were recorded
# (6b6987c: ``app/events/store.py`` and ``app/webhooks/store.py``), word for word.
VERSION_1_STATEMENTS: Final = [
    """CREATE TABLE IF NOT EXISTS ledger_feed_head (
        id INTEGER PRIMARY KEY,
        checkpoint BIGINT NOT NULL,
        sequence BIGINT NOT NULL
    )""",
    "INSERT INTO ledger_feed_head VALUES (1, 0, 0) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS ledger_feed_events (
        sequence BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        position BIGINT NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_feed_events_by_type ON ledger_feed_events (type, sequence)",
    "CREATE INDEX IF NOT EXISTS ledger_feed_events_by_position "
    "ON ledger_feed_events (position, sequence)",
    """CREATE TABLE IF NOT EXISTS ledger_feed_event_accounts (
        account_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        PRIMARY KEY (account_id, sequence)
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_feed_accounts (
        stream_id TEXT PRIMARY KEY,
        body TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_feed_effects (
        transfer_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (transfer_id, account_id)
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_monitors (
        monitor_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        field TEXT NOT NULL,
        operator TEXT NOT NULL,
        threshold BIGINT NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        since_position BIGINT NOT NULL,
        holds INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_monitors_by_account ON ledger_monitors (account_id)",
    """CREATE TABLE IF NOT EXISTS ledger_webhooks (
        webhook_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        types TEXT NOT NULL,
        description TEXT NOT NULL,
        secret TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        cursor BIGINT NOT NULL,
        failures INTEGER NOT NULL,
        next_attempt_at DOUBLE PRECISION,
        last_error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_webhook_deliveries (
        webhook_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        position BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        response_status INTEGER,
        latency_ms DOUBLE PRECISION,
        last_error TEXT,
        last_attempt_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION,
        PRIMARY KEY (webhook_id, sequence)
    )""",
]
TABLES: Final = (
    "ledger_feed_head",
    "ledger_feed_events",
    "ledger_feed_event_accounts",
    "ledger_feed_accounts",
    "ledger_feed_effects",
    "ledger_monitors",
    "ledger_webhooks",
    "ledger_webhook_deliveries",
)
# Processes opening a version-1 feed at once, each as ``EventServices.build`` does.
OPENERS: Final = 4
OPENER: Final = """
import sys, time
from pathlib import Path
from app.events.database import Database
from app.events import store
from app.webhooks import store as webhooks
url, go, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
database = Database(url)
ready.touch()
while not go.exists():
    time.sleep(0.001)
print(database.create(store.SCHEMA), database.create(webhooks.SCHEMA))
database.close()
"""
# A projector in a process of its own, one small batch a step, saying each step done.
PROJECTOR: Final = """
import sys
from app.application.ledger import Ledger
from app.events.database import Database
from app.events.projector import FeedProjector
from app.events.store import FeedStore
from app.persistence.stores import sqlite_env
ledger = Ledger(sqlite_env(sys.argv[1]))
projector = FeedProjector(ledger, FeedStore(Database(sys.argv[2])))
while projector.step(int(sys.argv[3])):
    print("step", flush=True)
"""
KILL_STEP_EVENTS: Final = 4
KILLS: Final = 5
# Of the kills, at least this many must land before the projector reaches the end.
MID_WORK_KILLS_MIN: Final = 3
CHILD_SECONDS_MAX: Final = 120.0


def feed_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_server").create_database(name))
    return f"sqlite:///{tmp_path / f'{name}.sqlite'}"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    with every_kind_log(tmp_path_factory.mktemp("log")) as log:
        yield log


def rows(database: Database, tables: Sequence[str] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the events database's tables, in each table's key order."""
    found = {}
    with database.transaction() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
            found[table] = [tuple(row) for row in cursor.fetchall()]
    return found


def versions(database: Database) -> dict[str, int]:
    with database.transaction() as cursor:
        cursor.execute("SELECT part, version FROM ledger_events_schema")
        return {str(part): int(version) for part, version in cursor.fetchall()}


def shape(database: Database) -> list[tuple[Any, ...]]:
    """The events database's columns and indexes (by what they index, not their names:
    SQLite names a constraint's index after the table it was made on)."""
    if database.is_postgres:
        with psycopg.connect(database.url) as connection:
            columns = connection.execute(
                "SELECT table_name, column_name, data_type, is_nullable "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "ORDER BY 1, ordinal_position"
            ).fetchall()
            indexes = connection.execute(
                "SELECT tablename, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() ORDER BY 1, 2"
            ).fetchall()
            return [*map(tuple, columns), *map(tuple, indexes)]
    found: list[tuple[Any, ...]] = []
    with sqlite3.connect(database.url.removeprefix("sqlite:///")) as connection:
        tables = connection.execute(
            "SELECT name, wr FROM pragma_table_list WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        for table, without_rowid in tables:
            found.append((table, without_rowid))
            found += connection.execute(f"PRAGMA table_info({table})").fetchall()
            for _, index, unique, origin, partial in connection.execute(
                f"PRAGMA index_list({table})"
            ).fetchall():
                columns = connection.execute(f"PRAGMA index_info({index})").fetchall()
                named = index if origin == "c" else origin
                found.append((table, named, unique, partial, [c[2] for c in columns]))
    return sorted(found, key=repr)


def event_id_indexes(database: Database) -> list[str]:
    return [str(entry) for entry in shape(database) if "event_id" in str(entry[-1])]


def version_1_feed(url: str, log: Log, tmp_path: Path, events: int) -> dict[str, Any]:
    """A feed as the version before schema versions made it, holding the first
    ``events`` of ``log`` projected (effects left waiting, a monitor, a webhook with a
    delivery): its tables by ``VERSION_1_STATEMENTS``, its rows as today's projector
    writes them (the same columns and values). The rows, as written."""
    ledger, _ = log
    source = Database(f"sqlite:///{tmp_path / 'source.sqlite'}")
    feed, webhooks = FeedStore(source), WebhookStore(source)
    MonitorStore(source).create("bob", "balance", "below", 290, "low", 0)
    endpoint, _ = webhooks.create("http://127.0.0.1:9/", ["transfer.recorded"], "old")
    FeedProjector(ledger, feed).step(events)
    delivered = feed.page(0, 1)[0]
    webhooks.record_delivered(endpoint, [delivered_attempt(delivered)])
    written = rows(source)
    source.close()
    old = Database(url)
    with old.transaction(write=True) as cursor:
        for statement in VERSION_1_STATEMENTS:
            cursor.execute(statement)
        cursor.execute("DELETE FROM ledger_feed_head")
        for table, table_rows in written.items():
            if table_rows:
                marks = ", ".join("?" * len(table_rows[0]))
                cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
    old.close()
    return written


def version_1_database(
    backend: str, log: Log, tmp_path: Path, request: pytest.FixtureRequest, share: float
) -> tuple[str, dict[str, Any]]:
    """``version_1_feed`` of ``share`` of the log on ``backend``: its URL and rows."""
    url = feed_url(backend, tmp_path, request, f"{tmp_path.name[:40]}_old")
    return url, version_1_feed(url, log, tmp_path, int(len(log[1]) * share))


def delivered_attempt(row: FeedRow) -> Attempt:
    return Attempt(row.sequence, row.event_id, row.event_type, row.position, True, 200, 1.0, None)


def opened(url: str) -> tuple[Database, FeedStore]:
    database = Database(url)
    store = FeedStore(database)
    WebhookStore(database)
    return database, store


@pytest.mark.parametrize("backend", FEED_BACKENDS)
def test_a_version_1_feed_opens_without_its_event_id_index_and_every_row_as_it_was(
    backend: str, log: Log, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ledger, _ = log
    url, written = version_1_database(backend, log, tmp_path, request, 1 / 2)
    assert written["ledger_feed_effects"], "the half-way cut leaves effects waiting"
    old = Database(url)
    assert event_id_indexes(old), "version 1 indexes event_id"
    assert rows(old) == written
    old.close()

    database, store = opened(url)
    try:
        assert rows(database) == written  # every row, events in their sequence
        assert versions(database) == {"feed": 2, "webhooks": 1}
        assert event_id_indexes(database) == []
        fresh = Database(feed_url(backend, tmp_path, request, f"{tmp_path.name[:40]}_new"))
        FeedStore(fresh), WebhookStore(fresh)
        assert shape(database) == shape(fresh)
        fresh.close()

        # The projector carries on from the old checkpoint: the events database is the
        # one whose rows were copied, carried on by the same projector, row for row.
        FeedProjector(ledger, store).catch_up()
        source, source_store = opened(f"sqlite:///{tmp_path / 'source.sqlite'}")
        FeedProjector(ledger, source_store).catch_up()
        events = rows(database)["ledger_feed_events"]
        assert len(events) > len(written["ledger_feed_events"])
        assert rows(database) == rows(source)
        assert [row[0] for row in events] == list(range(1, len(events) + 1))
        source.close()
    finally:
        database.close()


@pytest.mark.parametrize("backend", FEED_BACKENDS)
def test_processes_opening_a_version_1_feed_at_once_upgrade_it_once(
    backend: str, log: Log, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, written = version_1_database(backend, log, tmp_path, request, 1)
    go = tmp_path / "go"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, url, str(go), str(tmp_path / f"ready-{number}")],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(OPENERS)
    ]
    deadline = time.monotonic() + CHILD_SECONDS_MAX
    while len(list(tmp_path.glob("ready-*"))) < OPENERS:  # their imports done
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    found = []
    for opener in openers:
        out, err = opener.communicate(timeout=CHILD_SECONDS_MAX)
        assert opener.returncode == 0, err[-2000:]
        found.append(out.splitlines()[-1].split())  # after the upgrade's log line
    # One of them found version 1 and upgraded it; the others found version 2.
    assert sorted(found) == [["1", "1"]] + [["2", "1"]] * (OPENERS - 1)
    database = Database(url)
    try:
        assert rows(database) == written
        assert versions(database) == {"feed": 2, "webhooks": 1}
        assert event_id_indexes(database) == []
    finally:
        database.close()


@pytest.mark.parametrize("backend", FEED_BACKENDS)
def test_opening_an_upgraded_feed_again_changes_nothing(
    backend: str, log: Log, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, written = version_1_database(backend, log, tmp_path, request, 1 / 3)
    database, _ = opened(url)
    before = (rows(database), shape(database), table_identity(database))
    database.close()

    database = Database(url)
    try:
        assert database.create(feed_schema.SCHEMA) == 2
        assert database.create(webhooks_schema.SCHEMA) == 1
        # The same rows in the same table (SQLite: not copied again to a new one).
        assert (rows(database), shape(database), table_identity(database)) == before
        assert before[0] == written
    finally:
        database.close()


def table_identity(database: Database) -> int:
    """Where the events table's rows are stored: a rebuild moves them."""
    with database.transaction() as cursor:
        if database.is_postgres:
            cursor.execute("SELECT relfilenode FROM pg_class WHERE relname = 'ledger_feed_events'")
        else:
            cursor.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ledger_feed_events'")
        return int(cursor.fetchone()[0])


def test_a_feed_a_newer_version_upgraded_is_refused_not_changed(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'feed.sqlite'}")
    try:
        FeedStore(database)
        newer = PartSchema(
            "feed",
            feed_schema.STATEMENTS,
            "ledger_feed_head",
            [*feed_schema.SCHEMA.steps, SchemaStep(3, [], [])],
        )
        assert database.create(newer) == 2
        with pytest.raises(SchemaTooNewError, match="version 3"):
            FeedStore(database)
        assert versions(database)["feed"] == 3
    finally:
        database.close()


def a_log_of_many_batches(path: Path) -> int:
    """Transfers in atomic batches (their accounts' events before their own: effects
    wait across a projector's small steps); the log's length."""
    with Ledger(sqlite_env(str(path))) as ledger:
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        for name in ("alice", "bob", "carol"):
            ledger.open_account(OpenAccount(name, "CREDITS"))
        for batch in range(30):
            ledger.record_batch(
                [
                    RecordTransfer(f"t{batch}-{n}", "bank", ("alice", "bob", "carol")[n % 3], 1)
                    for n in range(10)
                ],
                atomic=True,
            )
        return ledger.recorder.max_notification_id() or 0


@pytest.mark.parametrize("backend", FEED_BACKENDS)
def test_a_projector_killed_at_random_moments_and_run_again_stores_each_event_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    log_path = tmp_path / "log.sqlite"
    head = a_log_of_many_batches(log_path)
    url = feed_url(backend, tmp_path, request, f"{tmp_path.name[:40]}_feed")
    seed = random.randrange(2**32)
    chooser = random.Random(seed)
    checkpoints = []
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", PROJECTOR, str(log_path), url, str(KILL_STEP_EVENTS)],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        steps = chooser.randint(1, 12)
        lines = [child.stdout.readline() for _ in range(steps)]
        child.send_signal(signal.SIGKILL)  # during the next steps, or between two
        returncode = child.wait(timeout=CHILD_SECONDS_MAX)
        database = Database(url)
        checkpoint = FeedStore(database).head().checkpoint
        database.close()
        if checkpoint == head:
            # The projector reached the end before the kill landed (it runs ahead of this
            # process's reads, more so with this process kept off the cores under load):
            # one started again would have nothing to do.
            break
        assert lines == ["step\n"] * steps, f"stopped on its own ({returncode}), seed {seed}"
        checkpoints.append(checkpoint)
    assert checkpoints == sorted(checkpoints), f"seed {seed}"
    assert len(checkpoints) >= MID_WORK_KILLS_MIN, (
        f"too few kills landed before the end: {checkpoints}, head {head} (seed {seed})"
    )
    subprocess.run(
        [sys.executable, "-c", PROJECTOR, str(log_path), url, str(KILL_STEP_EVENTS)],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
        timeout=CHILD_SECONDS_MAX,
    )

    database = Database(url)
    with Ledger(sqlite_env(str(log_path))) as ledger:
        in_one_go = FeedStore(Database(f"sqlite:///{tmp_path / 'one-go.sqlite'}"))
        FeedProjector(ledger, in_one_go).catch_up()
    try:
        feed_tables = TABLES[:5]
        events = rows(database, feed_tables)["ledger_feed_events"]
        assert len({row[1] for row in events}) == len(events) == 30 * 10 + 4, f"seed {seed}"
        assert rows(database, feed_tables) == rows(in_one_go.database, feed_tables), seed
        assert FeedStore(database).head().checkpoint == head
    finally:
        database.close()
        in_one_go.database.close()
