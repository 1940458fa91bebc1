"""Export the posted movements as a plain-text accounting journal.

beancount (checked by its own ``bean-check``, with a balance assertion per account so
beancount itself proves that its balances equal ours) and hledger journal format.
Only posted amounts are exported: journals have no notion of a pending hold, and a
hold enters the journal when (and as much as) it is posted.
"""

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final, TextIO
from uuid import UUID

from app.application.ledger import Ledger
from app.audit.log import Instant, read_at
from app.audit.replay import Replayer
from app.domain.account import Account
from app.domain.transfer import Transfer

ROOT: Final = "Assets:Ledger"
_COMPONENT: Final = re.compile(r"[A-Z0-9][A-Za-z0-9-]*")
_COMMODITY: Final = re.compile(r"[A-Z]([A-Z0-9'._-]{0,22}[A-Z0-9])?")
FORMATS: Final = ("beancount", "hledger")


def account_name(account_id: str) -> str:
    """A journal account for a ledger id: readable, and unique even when the mapping
    to the journal's narrower alphabet loses information (a short hash then says which)."""
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", account_id) if part]
    readable = "-".join(part[:1].upper() + part[1:] for part in parts) or "Account"
    if not readable[0].isalnum():
        readable = "A" + readable
    # Always suffixed: the readable part alone could collide ("a.b" and "A-B" both read
    # "A-B"), and an id could itself look like a suffixed name.
    readable += "-" + hashlib.sha256(account_id.encode()).hexdigest()[:8]
    return f"{ROOT}:{readable}"


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


@dataclass(frozen=True)
class Opening:
    day: date
    account_id: str
    unit: str


def journal_items(
    ledger: Ledger,
    instant: Instant,
    replayer: Replayer,
    on_page: Callable[[int, int], None] | None = None,
) -> Iterator[Opening | Movement]:
    """Openings and posted movements in log order; holds are remembered until settled."""
    holds: dict[UUID, Any] = {}
    for position, event in read_at(ledger, instant, on_page=on_page):
        replayer.apply(position, event)
        day = event.timestamp.date()
        if isinstance(event, Account.Opened):
            yield Opening(day, event.account_id, event.unit)
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
    last_day: date | None = None
    transactions = 0
    output.write("; exported by the credits ledger; only posted amounts\n")
    for item in journal_items(ledger, instant, replayer, on_page):
        last_day = item.day
        if isinstance(item, Opening):
            if beancount:
                output.write(
                    f"{item.day} open {account_name(item.account_id)} {commodity(item.unit)}\n"
                    f"  ledger_id: {_quote(item.account_id)}\n"
                )
            continue
        transactions += 1
        unit = commodity(item.unit)
        if not beancount and not unit.isalpha():
            unit = f'"{unit}"'  # hledger reads a commodity with digits only when quoted
        debit, credit = account_name(item.debit_account_id), account_name(item.credit_account_id)
        if beancount:
            output.write(f"{item.day} * {_quote('transfer ' + item.transfer_id)}\n")
            output.write(f"  transfer_id: {_quote(item.transfer_id)}\n")
        else:
            output.write(
                f"{item.day} transfer {item.transfer_id}  ; transfer_id:{item.transfer_id}\n"
            )
        output.write(f"  {credit}  {item.amount} {unit}\n  {debit}  -{item.amount} {unit}\n\n")
    if beancount:
        _write_balance_assertions(output, replayer, last_day)
    return transactions


def _write_balance_assertions(output: TextIO, replayer: Replayer, last_day: date | None) -> None:
    """beancount checks each at the start of its day: the day after the last movement."""
    if last_day is None:
        return
    day = last_day + timedelta(days=1)
    for account in sorted(replayer.accounts.values(), key=lambda a: a.id):
        output.write(
            f"{day} balance {account_name(account.id)} {account.balance} "
            f"{commodity(account.unit)}\n"
        )
