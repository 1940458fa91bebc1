"""The catch-up's reading of stored events (``domain_event_reader``) gives what the
library's mapper gives, event for event: every kind the ledger writes, and an event
stored at an older class version (upcast the same way)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.account import Account
from app.persistence.decoding import domain_event_reader
from app.persistence.stores import sqlite_env


def write_every_kind(ledger: Ledger) -> None:
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS", metadata={"tier": "gold", "ü": "ß"}))
    ledger.open_account(OpenAccount("bob", "CREDITS"))
    terms = GrantTerms(expires_at=datetime.now(tz=UTC) + timedelta(days=30))
    ledger.record_transfer(RecordTransfer("grant", "bank", "alice", 500, grant=terms))
    ledger.record_transfer(RecordTransfer("hold", "alice", "bob", 40, pending=True))
    ledger.post_pending("hold", 30)
    ledger.record_transfer(RecordTransfer("hold2", "alice", "bob", 5, pending=True))
    ledger.void_pending("hold2")
    ledger.record_transfer(RecordTransfer("spend", "alice", "bob", 5, metadata={"k": "v"}))
    ledger.reverse_transfer("spend", "refund")
    ledger.update_account("bob", {"tier": "silver"})
    ledger.close_account("bob")


def test_every_event_reads_as_the_librarys_mapper_reads_it(tmp_path: Path) -> None:
    with Ledger(sqlite_env(str(tmp_path / "events.sqlite"))) as ledger:
        write_every_kind(ledger)
        stored = ledger.recorder.select_notifications(start=0, limit=1_000)
        read = domain_event_reader(ledger.mapper)
        kinds = set()
        for notification in stored:
            ours, library = read(notification), ledger.mapper.to_domain_event(notification)
            assert type(ours) is type(library)
            assert vars(ours) == vars(library)
            kinds.add(type(ours).__qualname__)
    assert len(kinds) >= 10, kinds


def test_an_event_stored_at_an_older_class_version_is_upcast_as_the_library_upcasts_it(
    tmp_path: Path,
) -> None:
    with Ledger(sqlite_env(str(tmp_path / "events.sqlite"))) as ledger:
        write_every_kind(ledger)
        stored = ledger.recorder.select_notifications(start=0, limit=1_000)
        debit = next(n for n in stored if n.topic.endswith("Account.Debited"))
        state = orjson.loads(debit.state)
        assert state.pop("class_version") == Account.Debited.class_version == 2
        del state["allocations"]  # version 1 had none
        old = replace(debit, state=orjson.dumps(state))
        ours = domain_event_reader(ledger.mapper)(old)
        library = ledger.mapper.to_domain_event(old)
        assert vars(ours) == vars(library)
        assert ours.allocations is None
