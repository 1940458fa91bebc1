"""A log holding every kind of event the views fold, for tests of the views' writer."""

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import psycopg
from eventsourcing.persistence import Notification, Tracking

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.decoding import domain_event_reader
from app.persistence.stores import sqlite_env
from projections.backends import LedgerView

ACCOUNTS: Final = ("alice", "bob", "carol", "dave")
# A ledger and the notifications of its log.
Log = tuple[Ledger, Sequence[Notification]]


def write_every_kind(ledger: Ledger) -> None:
    """Openings with metadata, a grant, funding, a hold posted in part, many transfers
    among a few accounts, a reversal, a metadata update, transfers with metadata and a
    closing."""
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    for name in ACCOUNTS:
        ledger.open_account(OpenAccount(name, "CREDITS", metadata={"tier": name[0]}))
    terms = GrantTerms(expires_at=datetime.now(tz=UTC) + timedelta(days=30))
    ledger.record_transfer(RecordTransfer("grant", "bank", "alice", 500, grant=terms))
    for name in ACCOUNTS[1:]:
        ledger.record_transfer(RecordTransfer(f"fund-{name}", "bank", name, 300))
    ledger.record_transfer(RecordTransfer("hold", "alice", "bob", 40, pending=True))
    chooser = random.Random(7)
    for n in range(40):
        debit, credit = chooser.sample(ACCOUNTS, 2)
        ledger.record_transfer(RecordTransfer(f"t{n}", debit, credit, chooser.randint(1, 5)))
    ledger.post_pending("hold", 30)
    ledger.record_transfer(RecordTransfer("spend", "alice", "carol", 5))
    ledger.reverse_transfer("spend", "refund")
    ledger.update_account("bob", {"tier": "silver"})
    for n in range(10):
        ledger.record_transfer(RecordTransfer(f"u{n}", "bob", "carol", 1, metadata={"n": str(n)}))
    ledger.close_account("dave")


def apply(view: LedgerView, ledger: Ledger, batch: Sequence[Notification]) -> None:
    """``batch`` of ``ledger``'s log applied to ``view`` in one transaction."""
    decode = domain_event_reader(ledger.mapper)
    view.apply_at_positions(
        [decode(n) for n in batch], [n.id for n in batch], Tracking(ledger.name, batch[-1].id)
    )


@contextmanager
def every_kind_log(directory: Path) -> Iterator[Log]:
    """A ledger on a SQLite log in ``directory`` that ``write_every_kind`` wrote, and
    its notifications."""
    with Ledger(sqlite_env(str(directory / "events.sqlite"))) as ledger:
        write_every_kind(ledger)
        yield ledger, ledger.recorder.select_notifications(start=0, limit=10_000)


def postgres_rows(url: str, tables: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Each of ``tables``' rows (names as SQL, schema-qualified where need be) in the
    database at ``url``, in a stable order."""
    with psycopg.connect(url) as connection:
        return {
            table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in tables
        }
