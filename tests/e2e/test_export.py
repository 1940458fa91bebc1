"""The accounting export as an accountant reads it: each account under the root of the
type it was opened with (defaults: an issuer is equity, a wallet a liability); metadata
and reversal links carried; closed accounts closed; `bean-check` and `hledger check`
accept the journals, and both tools' balances are ours (debits positive, so minus the
ledger's credits-minus-debits balance). Old `Opened` events without a type still export."""

import csv
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest
from beancount import loader
from beancount.core import realization

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.export import account_name, write_journal
from app.audit.log import Instant
from app.audit.replay import replay
from app.domain.errors import ValidationError
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env, sqlite_url

BEAN_CHECK: Final = str(Path(sys.executable).with_name("bean-check"))
TYPES: Final = {
    "issuance": "equity",
    "cash": "asset",
    "user:42": "liability",
    "revenue": "income",
    "promotions": "expense",
}


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(sqlite_url(tmp_path / "events.sqlite")))
    ledger.open_account(OpenAccount("issuance", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("cash", "CREDITS", allow_negative=True, account_type="asset"))
    ledger.open_account(OpenAccount("user:42", "CREDITS"))
    ledger.open_account(OpenAccount("revenue", "CREDITS", account_type="income"))
    ledger.open_account(
        OpenAccount("promotions", "CREDITS", allow_negative=True, account_type="expense")
    )
    ledger.open_account(OpenAccount("trial", "CREDITS"))
    moves = [
        RecordTransfer("sale-1", "cash", "user:42", 500, metadata={"invoice": "in-7, paid"}),
        RecordTransfer("promo-1", "promotions", "user:42", 50, metadata={"campaign": "spring"}),
        RecordTransfer("mint-1", "issuance", "cash", 10),
        RecordTransfer("use-1", "user:42", "revenue", 120, metadata={"order": '98"1'}),
    ]
    for move in moves:
        ledger.record_transfer(move)
    ledger.reverse_transfer("use-1", "refund-1", {"reason": "cancelled"})
    ledger.close_account("trial")
    yield ledger
    ledger.close()


def journal(books: Ledger, path: Path, journal_format: str) -> str:
    with path.open("w") as out:
        write_journal(books, Instant(), out, journal_format)
    return path.read_text()


def beancount_balances(path: Path) -> dict[str, Decimal]:
    entries, errors, _ = loader.load_file(str(path))
    assert errors == [], errors
    root = realization.realize(entries)  # type: ignore[no-untyped-call]
    return {
        real.account: sum((p.units.number for p in real.balance), Decimal(0))
        for real in realization.iter_children(root)  # type: ignore[no-untyped-call]
        if real.account.count(":") == 2
    }


def hledger(*args: str) -> str:
    done = subprocess.run(
        ["hledger", *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_accounts_sit_under_the_root_of_their_type(books: Ledger, tmp_path: Path) -> None:
    text = journal(books, tmp_path / "books.beancount", "beancount")
    opened = re.findall(r"open (\w+):Ledger:\S+ CREDITS\n  ledger_id: \"([^\"]+)\"", text)
    assert {account_id: root for root, account_id in opened} == {
        "issuance": "Equity",  # the default for an account with no floor
        "cash": "Assets",
        "user:42": "Liabilities",  # the default for any other
        "revenue": "Income",
        "promotions": "Expenses",
        "trial": "Liabilities",
    }


def test_an_unknown_type_is_refused_and_reopening_with_another_type_conflicts(
    books: Ledger,
) -> None:
    with pytest.raises(ValidationError):
        books.open_account(OpenAccount("x", "CREDITS", account_type="revenue"))
    same = books.open_account(OpenAccount("revenue", "CREDITS", account_type="income"))
    assert not same.created
    with pytest.raises(Exception, match="different body"):
        books.open_account(OpenAccount("revenue", "CREDITS", account_type="asset"))
    # The default is the same as saying it.
    assert not books.open_account(
        OpenAccount("user:42", "CREDITS", account_type="liability")
    ).created


def test_bean_check_accepts_the_journal_and_its_balances_are_ours(
    books: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "books.beancount"
    text = journal(books, path, "beancount")
    check = subprocess.run([BEAN_CHECK, str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    balances = beancount_balances(path)
    for account in replay(books, Instant()):
        name = account_name(account.id, TYPES.get(account.id, "liability"))
        assert balances.get(name, Decimal(0)) == -account.balance, account.id
    # An accountant's reading: the wallet is a credit balance (owed), the sale an asset.
    wallet = account_name("user:42", "liability")
    assert balances[wallet] == -(500 + 50 - 120 + 120)
    assert balances[account_name("cash", "asset")] == 500 - 10  # a debit balance
    # Metadata and the reversal link travel with their transactions; closed is closed.
    assert '  metadata: "{\\"invoice\\": \\"in-7, paid\\"}"' in text
    assert '  reversal_of: "use-1"' in text
    assert f"close {account_name('trial', 'liability')}" in text
    entries, _, _ = loader.load_file(str(path))
    refund = next(e for e in entries if getattr(e, "narration", "") == "transfer refund-1")
    assert refund.meta["reversal_of"] == "use-1"
    use = next(e for e in entries if getattr(e, "narration", "") == "transfer use-1")
    assert json.loads(use.meta["metadata"]) == {"order": '98"1'}


@pytest.mark.skipif(shutil.which("hledger") is None, reason="hledger is installed by .ci/run")
def test_hledger_check_accepts_the_journal_and_its_balances_are_ours(
    books: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "books.journal"
    text = journal(books, path, "hledger")
    hledger("-f", str(path), "check", "accounts", "balanced", "parseable")
    rows = csv.DictReader(
        io.StringIO(hledger("-f", str(path), "balance", "--flat", "-E", "--no-total", "-O", "csv"))
    )
    reported = {row["account"]: int(row["balance"].split()[0] or 0) for row in rows}
    for account in replay(books, Instant()):
        name = account_name(account.id, TYPES.get(account.id, "liability"))
        assert reported.get(name, 0) == -account.balance, account.id
    # hledger knows each account's type from its declaration.
    liabilities = hledger("-f", str(path), "accounts", "type:L")
    assert account_name("user:42", "liability") in liabilities
    assert account_name("revenue", "income") in hledger("-f", str(path), "accounts", "type:R")
    assert "reversal_of:use-1" in text
    assert '; metadata {"campaign": "spring"}' in text
    tags = hledger("-f", str(path), "register", "tag:reversal_of=use-1", "-O", "csv")
    assert "refund-1" in tags


def test_an_opening_written_before_account_types_exports_with_the_default(
    tmp_path: Path,
) -> None:
    """A version 1 `Opened` event (no account_type, no class_version) upcasts to None,
    which the aggregate and the exports read as the default for the account's floor."""
    path = tmp_path / "events.sqlite"
    ledger = Ledger(event_store_env(sqlite_url(path)))
    ledger.open_account(OpenAccount("old:issuer", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("old:wallet", "CREDITS"))
    ledger.record_transfer(RecordTransfer("old-1", "old:issuer", "old:wallet", 7))
    ledger.close()
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT originator_id, state FROM stored_events WHERE originator_version = 0 "
            "AND topic LIKE '%Account.Opened'"
        ).fetchall()
        assert len(rows) == 2
        for originator_id, state in rows:
            fields = json.loads(state)
            assert fields.pop("account_type") in ("equity", "liability")
            fields.pop("class_version", None)
            connection.execute(
                "UPDATE stored_events SET state = ? WHERE originator_id = ? "
                "AND originator_version = 0",
                (json.dumps(fields).encode(), originator_id),
            )
    ledger = Ledger(event_store_env(sqlite_url(path)))
    try:
        assert ledger.repository.get(account_uuid("old:issuer")).account_type == "equity"
        assert ledger.repository.get(account_uuid("old:wallet")).account_type == "liability"
        text = journal(ledger, tmp_path / "old.beancount", "beancount")
    finally:
        ledger.close()
    assert f"open {account_name('old:issuer', 'equity')} CREDITS" in text
    assert f"balance {account_name('old:wallet', 'liability')} -7 CREDITS" in text
