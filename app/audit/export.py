"""Export the posted movements as a plain-text accounting journal.

beancount (checked by its own ``bean-check``, with a balance assertion per account so
beancount itself proves that its balances equal ours) and hledger journal format.
Only posted amounts are exported: journals have no notion of a pending hold, and a
hold enters the journal when (and as much as) it is posted.

Each account sits under the root of its type (``account_type``, set at opening:
Assets, Liabilities, Income, Expenses, Equity). Amounts follow the journals' own
convention, debits positive and credits negative, so a wallet holding 100 credits is a
liability of -100 (a credit balance: credits the operator owes) and an issuer that
minted them is equity of +100. A journal balance is therefore always minus the ledger's
``balance`` (credits minus debits), and the balance assertions say exactly that.
Transfer metadata and reversal links travel as transaction metadata (beancount) or
tags and comments (hledger); a closed account gets beancount's ``close``.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final, TextIO
from uuid import UUID

from app.application.ledger import Ledger
from app.audit.log import Instant, read_at
from app.audit.replay import Replayer
from app.domain.account import Account, default_account_type
from app.domain.transfer import Transfer

BOOK: Final = "Ledger"
ROOTS: Final = {
    "asset": "Assets",
    "liability": "Liabilities",
    "income": "Income",
    "expense": "Expenses",
    "equity": "Equity",
}
# hledger's account types (``account … ; type: L``): Asset, Liability, Equity, Revenue, eXpense.
HLEDGER_TYPES: Final = {
    "asset": "A",
    "liability": "L",
    "income": "R",
    "expense": "X",
    "equity": "E",
}
_COMPONENT: Final = re.compile(r"[A-Z0-9][A-Za-z0-9-]*")
_COMMODITY: Final = re.compile(r"[A-Z]([A-Z0-9'._-]{0,22}[A-Z0-9])?")
FORMATS: Final = ("beancount", "hledger")


def account_name(account_id: str, account_type: str) -> str:
    """A journal account for a ledger id, under its type's root: readable, and unique
    even when the mapping to the journal's narrower alphabet loses information (a short
    hash then says which)."""
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", account_id) if part]
    readable = "-".join(part[:1].upper() + part[1:] for part in parts) or "Account"
    if not readable[0].isalnum():
        readable = "A" + readable
    # Always suffixed: the readable part alone could collide ("a.b" and "A-B" both read
    # "A-B"), and an id could itself look like a suffixed name.
    readable += "-" + hashlib.sha256(account_id.encode()).hexdigest()[:8]
    return f"{ROOTS[account_type]}:{BOOK}:{readable}"


def commodity(unit: str) -> str:
    """Units are [A-Z0-9_]{1,16}; a journal commodity must start with a letter and end
    with a letter or digit."""
    if _COMMODITY.fullmatch(unit):
        return unit
    fixed = unit if unit[0].isalpha() else "U" + unit
    return fixed if fixed[-1].isalnum() else fixed + "X"


@dataclass(frozen=True)
class Movement:
    day: date
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    metadata: dict[str, str]
    reversal_of: str | None


@dataclass(frozen=True)
class Opening:
    day: date
    account_id: str
    unit: str
    account_type: str


@dataclass(frozen=True)
class Closing:
    day: date
    account_id: str


def journal_items(
    ledger: Ledger,
    instant: Instant,
    replayer: Replayer,
    on_page: Callable[[int, int], None] | None = None,
) -> Iterator[Opening | Movement | Closing]:
    """Openings, posted movements and closings in log order; holds are remembered until
    settled."""
    holds: dict[UUID, Any] = {}
    for position, event in read_at(ledger, instant, on_page=on_page):
        replayer.apply(position, event)
        day = event.timestamp.date()
        if isinstance(event, Account.Opened):
            # Version 1 events carry no type: the default for the account's floor.
            account_type = event.account_type or default_account_type(event.allow_negative)
            yield Opening(day, event.account_id, event.unit, account_type)
        elif isinstance(event, Account.Closed):
            yield Closing(day, replayer.accounts[event.originator_id].id)
        elif isinstance(event, Transfer.TransferRecorded):
            if event.pending:
                holds[event.originator_id] = event
            else:
                yield _movement(day, event, event.amount)
        elif isinstance(event, Transfer.PendingPosted):
            hold = holds.pop(event.originator_id, None)
            if hold is not None:
                yield _movement(day, hold, event.amount)
        elif isinstance(event, Transfer.PendingVoided | Transfer.PendingExpired):
            holds.pop(event.originator_id, None)


def _movement(day: date, recorded: Any, amount: int) -> Movement:
    return Movement(
        day,
        recorded.transfer_id,
        recorded.debit_account_id,
        recorded.credit_account_id,
        amount,
        recorded.unit,
        dict(recorded.metadata),
        recorded.reversal_of,
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_journal(
    ledger: Ledger,
    instant: Instant,
    output: TextIO,
    journal_format: str,
    on_page: Callable[[int, int], None] | None = None,
) -> int:
    """Write the journal; returns the number of transactions."""
    if journal_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    beancount = journal_format == "beancount"
    replayer = Replayer()
    names: dict[str, str] = {}
    closed: list[str] = []
    last_day: date | None = None
    transactions = 0
    output.write("; exported by the credits ledger; only posted amounts; debits +, credits -\n")
    for item in journal_items(ledger, instant, replayer, on_page):
        last_day = item.day
        if isinstance(item, Opening):
            names[item.account_id] = account_name(item.account_id, item.account_type)
            _write_opening(output, item, names[item.account_id], beancount)
        elif isinstance(item, Closing):
            closed.append(item.account_id)
        else:
            transactions += 1
            _write_movement(output, item, names, beancount)
    if last_day is not None:
        _write_ending(output, replayer, names, closed, last_day + timedelta(days=1), beancount)
    return transactions


def _write_opening(output: TextIO, item: Opening, name: str, beancount: bool) -> None:
    if beancount:
        output.write(
            f"{item.day} open {name} {commodity(item.unit)}\n"
            f"  ledger_id: {_quote(item.account_id)}\n"
            f"  account_type: {_quote(item.account_type)}\n"
        )
    else:
        output.write(
            f"account {name}  ; type:{HLEDGER_TYPES[item.account_type]}, "
            f"ledger_id:{item.account_id}\n"
        )


def _write_movement(output: TextIO, item: Movement, names: dict[str, str], beancount: bool) -> None:
    unit = commodity(item.unit)
    if not beancount and not unit.isalpha():
        unit = f'"{unit}"'  # hledger reads a commodity with digits only when quoted
    debit, credit = names[item.debit_account_id], names[item.credit_account_id]
    metadata = json.dumps(item.metadata, sort_keys=True, ensure_ascii=False)
    if beancount:
        output.write(f"{item.day} * {_quote('transfer ' + item.transfer_id)}\n")
        output.write(f"  transfer_id: {_quote(item.transfer_id)}\n")
        if item.reversal_of is not None:
            output.write(f"  reversal_of: {_quote(item.reversal_of)}\n")
        if item.metadata:
            output.write(f"  metadata: {_quote(metadata)}\n")
    else:
        reversal = f", reversal_of:{item.reversal_of}" if item.reversal_of else ""
        output.write(
            f"{item.day} transfer {item.transfer_id}  ; transfer_id:{item.transfer_id}{reversal}\n"
        )
        if item.metadata:
            output.write(f"    ; metadata {metadata}\n")  # a comment: JSON holds commas
    output.write(f"  {debit}  {item.amount} {unit}\n  {credit}  -{item.amount} {unit}\n\n")


def _write_ending(
    output: TextIO,
    replayer: Replayer,
    names: dict[str, str],
    closed: list[str],
    day: date,
    beancount: bool,
) -> None:
    """beancount checks each balance at the start of its day, the day after the last
    item, and sorts a day's ``balance`` before its ``close``: assert, then close."""
    if not beancount:
        for account_id in closed:
            output.write(f"; {names[account_id]} was closed\n")
        return
    for account in sorted(replayer.accounts.values(), key=lambda a: a.id):
        output.write(
            f"{day} balance {names[account.id]} {-account.balance} {commodity(account.unit)}\n"
        )
    for account_id in closed:
        output.write(f"{day} close {names[account_id]}\n")
