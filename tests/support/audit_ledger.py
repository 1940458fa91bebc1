"""A healthy ledger with every kind of history the audit tools must understand, on
SQLite or on a real PostgreSQL server, with its projections caught up.

Shared by the audit end-to-end tests and the replay property tests. The history holds
holds posted in full, posted in part, voided, expired and still pending; a reversal;
atomic and non-atomic batches (one item refused); a refused transfer; an overdraft; a
closed account; a second and a third unit (one that needs mapping to be a journal
commodity); an account that never moved; ids that need mapping to journal names.
"""

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.log import read_log
from app.domain.errors import LedgerError
from app.persistence.stores import event_store_env
from projections.runner import GenerationPointer, ProjectionWorkers, open_view
from projections.views import LedgerViewMixin
from tests.support.pgserver import PostgresServer

PROJECTION_TIMEOUT_SECONDS: Final = 60.0

UNIT: Final = "CREDITS"
ISSUANCE: Final = "system:issuance"
ALICE: Final = "user:1:credits"
BOB: Final = "user:2:credits"
SHOP: Final = "merchant.shop"
OVERDRAWN: Final = "Overdraft-Account"
CLOSED: Final = "closed_account"
IDLE: Final = "idle"
USD_BANK: Final = "usd:bank"
USD_ALICE: Final = "usd:alice"
ODD_ISSUER: Final = "9"
ODD_HOLDER: Final = "odd-unit-holder"
ODD_UNIT: Final = "9_"

EXPIRED_HOLD: Final = "hold:expired"
VOIDED_HOLD: Final = "hold:voided"
POSTED_HOLD: Final = "hold:posted"
PARTIAL_HOLD: Final = "hold:partial"
OPEN_HOLD: Final = "hold:open"
REVERSED: Final = "spend:reversed"
REVERSAL: Final = "refund:1"


@dataclass(frozen=True)
class Stores:
    """Where one ledger lives: its event store and its read model."""

    backend: str
    event_store_url: str
    read_model_url: str
    data_dir: Path

    def cli_env(self) -> dict[str, str]:
        """The environment a `ledger` subprocess needs to find these stores."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(
            LEDGER_DATA_DIR=str(self.data_dir),
            LEDGER_EVENT_STORE=self.event_store_url,
            LEDGER_READ_MODEL=self.read_model_url,
            COLUMNS="200",
        )
        return env

    def open_ledger(self) -> Ledger:
        return Ledger(event_store_env(self.event_store_url))

    def open_view(self) -> LedgerViewMixin:
        return open_view(self.read_model_url, GenerationPointer(self.read_model_url).current)


def make_stores(backend: str, folder: Path, postgres: PostgresServer | None, name: str) -> Stores:
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        return Stores(
            backend,
            f"sqlite:///{folder / 'events.sqlite'}",
            f"sqlite:///{folder / 'views.sqlite'}",
            folder,
        )
    assert backend == "postgres"
    assert postgres is not None
    return Stores(
        backend,
        postgres.create_database(f"{name}_events"),
        postgres.create_database(f"{name}_views"),
        folder,
    )


@dataclass
class History:
    """What the builder did, for the tests to aim at."""

    account_ids: list[str] = field(default_factory=list)
    # The position each command's commit ended at (every write is one commit).
    commit_positions: list[int] = field(default_factory=list)
    head: int = 0
    # Named commit positions: the last commit before something happened.
    marks: dict[str, int] = field(default_factory=dict)

    def note(self, position: int) -> None:
        self.commit_positions.append(position)


def build_history(ledger: Ledger) -> History:
    history = History()

    def open_account(command: OpenAccount) -> None:
        history.account_ids.append(command.id)
        history.note(ledger.open_account(command).position)

    def transfer(
        transfer_id: str,
        debit: str,
        credit: str,
        amount: int,
        **options: Any,
    ) -> None:
        outcome = ledger.record_transfer(
            RecordTransfer(transfer_id, debit, credit, amount, **options)
        )
        history.note(outcome.position)

    open_account(OpenAccount(ISSUANCE, UNIT, allow_negative=True))
    open_account(OpenAccount(ALICE, UNIT, metadata={"plan": "pro"}))
    open_account(OpenAccount(BOB, UNIT))
    open_account(OpenAccount(SHOP, UNIT))
    open_account(OpenAccount(OVERDRAWN, UNIT, overdraft_limit=50))
    open_account(OpenAccount(CLOSED, UNIT))
    open_account(OpenAccount(IDLE, UNIT))
    open_account(OpenAccount(USD_BANK, "USD", allow_negative=True))
    open_account(OpenAccount(USD_ALICE, "USD"))

    transfer("fund:alice", ISSUANCE, ALICE, 1000, metadata={"reason": "top-up"})
    transfer("fund:bob", ISSUANCE, BOB, 300)
    transfer("fund:usd", USD_BANK, USD_ALICE, 2**62)
    transfer("spend:1", ALICE, SHOP, 37, metadata={"order": "A-1"})
    transfer(REVERSED, BOB, SHOP, 120)
    history.note(ledger.reverse_transfer(REVERSED, REVERSAL, {"why": "refund"}).position)
    transfer("overdraw", OVERDRAWN, SHOP, 30)

    transfer(POSTED_HOLD, ALICE, SHOP, 100, pending=True, timeout_seconds=3600)
    transfer(PARTIAL_HOLD, BOB, SHOP, 80, pending=True)
    transfer(VOIDED_HOLD, ALICE, BOB, 50, pending=True)
    transfer(EXPIRED_HOLD, BOB, SHOP, 25, pending=True, timeout_seconds=60)
    transfer(OPEN_HOLD, ALICE, SHOP, 11, pending=True, timeout_seconds=3600)
    history.note(ledger.post_pending(POSTED_HOLD).position)
    history.note(ledger.post_pending(PARTIAL_HOLD, 30).position)
    history.note(ledger.void_pending(VOIDED_HOLD).position)
    history.marks["before_expiry"] = history.commit_positions[-1]
    real_clock = ledger.clock
    ledger.clock = lambda: real_clock() + timedelta(seconds=120)
    try:
        history.note(ledger.expire_pending(EXPIRED_HOLD).position)
    finally:
        ledger.clock = real_clock

    batch = ledger.record_batch(
        [
            RecordTransfer("batch:1", ALICE, BOB, 10),
            RecordTransfer("batch:2", BOB, SHOP, 20),
            RecordTransfer("batch:3", SHOP, ALICE, 5, metadata={"leg": "3"}),
        ],
        atomic=True,
    )
    history.note(max(result.position for result in batch.results))  # type: ignore[union-attr]
    mixed = ledger.record_batch(
        [
            RecordTransfer("mixed:ok", ALICE, SHOP, 1),
            RecordTransfer("mixed:refused", IDLE, SHOP, 1),  # IDLE has nothing
        ],
        atomic=False,
    )
    history.note(mixed.results[0].position)  # type: ignore[union-attr]
    assert isinstance(mixed.results[1], LedgerError)
    try:
        ledger.record_transfer(RecordTransfer("refused", BOB, SHOP, 10**6))
    except LedgerError:
        pass
    else:  # pragma: no cover
        raise AssertionError("an overspend was accepted")

    transfer("fund:closed", ISSUANCE, CLOSED, 40)
    transfer("drain:closed", CLOSED, SHOP, 40)
    history.note(ledger.close_account(CLOSED).position)
    transfer("late:1", SHOP, BOB, 3)
    history.marks["before_odd_unit"] = history.commit_positions[-1]
    open_account(OpenAccount(ODD_ISSUER, ODD_UNIT, allow_negative=True))
    open_account(OpenAccount(ODD_HOLDER, ODD_UNIT))
    transfer("fund:odd", ODD_ISSUER, ODD_HOLDER, 7)
    history.head = ledger.recorder.max_notification_id() or 0
    assert history.head == history.commit_positions[-1]
    return history


def project_to_head(stores: Stores, ledger: Ledger) -> None:
    """Run the projection workers (no expiry) until the views reach the log's head."""
    workers = ProjectionWorkers(
        stores.event_store_url, stores.read_model_url, ledger, expire_holds=False
    ).start()
    try:
        head = ledger.recorder.max_notification_id() or 0
        assert workers.view.wait_for(head, PROJECTION_TIMEOUT_SECONDS), "views never caught up"
        workers.check()
    finally:
        workers.stop()


@contextmanager
def healthy_ledger(stores: Stores) -> Iterator[tuple[Ledger, History]]:
    """Build the history, project it, and hand out a ledger on it (closed afterwards)."""
    ledger = stores.open_ledger()
    try:
        history = build_history(ledger)
        project_to_head(stores, ledger)
        yield ledger, history
    finally:
        ledger.close()


def release_connections(stores: Stores, postgres: PostgresServer | None) -> None:
    """End every session still open on a PostgreSQL store (idle pool connections that
    closed applications leave behind), so that it can serve as a template."""
    if stores.backend != "postgres":
        return
    assert postgres is not None
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as connection:
        for url in (stores.event_store_url, stores.read_model_url):
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (_database_name(url),),
            )


def clone_stores(
    template: Stores, folder: Path, postgres: PostgresServer | None, name: str
) -> Stores:
    """An independent copy of ``template`` (which nothing may be connected to)."""
    folder.mkdir(parents=True, exist_ok=True)
    if template.backend == "sqlite":
        for source in template.data_dir.glob("*.sqlite"):
            with (
                closing(sqlite3.connect(source)) as reader,
                closing(sqlite3.connect(folder / source.name)) as writer,
            ):
                reader.backup(writer)
        return make_stores("sqlite", folder, None, name)
    assert postgres is not None
    urls = []
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as connection:
        for url, suffix in (
            (template.event_store_url, "events"),
            (template.read_model_url, "views"),
        ):
            database = f"{name}_{suffix}"
            connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
            connection.execute(f'CREATE DATABASE "{database}" TEMPLATE "{_database_name(url)}"')
            urls.append(postgres.url(database))
    return Stores("postgres", urls[0], urls[1], folder)


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def event_times(ledger: Ledger) -> list[tuple[int, datetime]]:
    """(position, recorded time) of every event of the log."""
    return [(position, event.timestamp) for position, event in read_log(ledger)]


def commit_boundary_times(ledger: Ledger, commit_positions: list[int]) -> list[datetime]:
    """For each commit, a moment after all its events and before any later event: an
    as-of time that cuts the log between two commits."""
    times = event_times(ledger)
    moments = []
    for end in commit_positions:
        before = max(moment for position, moment in times if position <= end)
        after = [moment for position, moment in times if position > end]
        if after and min(after) > before:
            moments.append(before + (min(after) - before) / 2)
    return moments
