"""The audit's scratch database takes a page's writes in one transaction: its
connection commits each statement on its own, and each row of an ``executemany`` is a
statement, so a page of 2,000 events was thousands of transactions."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit import audit as audit_module
from app.audit import log as log_module
from app.audit.audit import Auditor
from app.audit.log import Instant
from app.persistence.stores import event_store_env

UNIT: Final = "CREDITS"
PAGE_SIZE: Final = 4
TRANSFERS: Final = 5
WRITES: Final = ("INSERT", "UPDATE")


def test_each_page_of_the_log_is_written_to_the_scratch_database_in_one_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statements: list[str] = []
    real_scratch = audit_module.scratch_database

    @contextmanager
    def traced_scratch() -> Iterator[sqlite3.Connection]:
        with real_scratch() as connection:
            connection.set_trace_callback(statements.append)
            yield connection

    monkeypatch.setattr(audit_module, "scratch_database", traced_scratch)
    monkeypatch.setattr(audit_module, "LOG_PAGE_SIZE", PAGE_SIZE)
    monkeypatch.setattr(log_module, "LOG_PAGE_SIZE", PAGE_SIZE)
    with Ledger(event_store_env("memory://")) as ledger:
        ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
        ledger.open_account(OpenAccount("a", UNIT))
        for number in range(TRANSFERS):
            ledger.record_transfer(RecordTransfer(f"t{number}", "bank", "a", number + 1))
        report = Auditor(ledger, Instant(), None).run()
    assert report.violation_count == 0
    assert report.transfers == TRANSFERS
    pages = -(-report.events // PAGE_SIZE)
    assert pages > 2
    in_transaction = False
    transactions = 0
    for statement in statements:
        if statement == "BEGIN":
            assert not in_transaction
            in_transaction, transactions = True, transactions + 1
        elif statement == "COMMIT":
            assert in_transaction
            in_transaction = False
        elif statement.lstrip().upper().startswith(WRITES):
            assert in_transaction, f"written outside a page's transaction: {statement}"
    assert not in_transaction
    assert transactions == pages
