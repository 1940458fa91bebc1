"""Replay: fold the log from the start to an instant; every account as it stood then."""

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from app.application.ledger import Ledger
from app.audit.log import Instant, read_at
from app.domain.account import Account
from app.domain.postings import DerivedBalances, post


@dataclass
class ReplayedAccount(DerivedBalances):
    id: str
    unit: str
    status: str
    allow_negative: bool
    overdraft_limit: int
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0
    version: int = 0
    position: int = 0

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "balance": self.balance, "available": self.available}


class Replayer:
    """Folds events into accounts; O(accounts) memory whatever the log length."""

    def __init__(self) -> None:
        self.accounts: dict[UUID, ReplayedAccount] = {}

    def apply(self, position: int, event: Any) -> ReplayedAccount | None:
        if isinstance(event, Account.Opened):
            account = ReplayedAccount(
                event.account_id,
                event.unit,
                "open",
                event.allow_negative,
                event.overdraft_limit,
            )
            self.accounts[event.originator_id] = account
        elif isinstance(event, Account.Event) and event.originator_id in self.accounts:
            account = self.accounts[event.originator_id]
            if isinstance(event, Account.BalanceChanged):
                post(account, event.delta())
            elif isinstance(event, Account.Closed):
                account.status = "closed"
        else:
            return None
        account.version = event.originator_version
        account.position = position
        return account


def replay(
    ledger: Ledger,
    instant: Instant,
    *,
    on_page: Callable[[int, int], None] | None = None,
) -> list[ReplayedAccount]:
    replayer = Replayer()
    for position, event in read_at(ledger, instant, on_page=on_page):
        replayer.apply(position, event)
    return sorted(replayer.accounts.values(), key=lambda account: account.id)


COLUMNS = [
    "id",
    "unit",
    "status",
    "balance",
    "available",
    "debits_posted",
    "credits_posted",
    "debits_pending",
    "credits_pending",
    "position",
]


def render(accounts: list[ReplayedAccount], output_format: str) -> str:
    rows = [{column: account.row()[column] for column in COLUMNS} for account in accounts]
    if output_format == "json":
        return json.dumps(rows, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename: an interrupted run leaves no half file."""
    with atomic_text_file(path) as stream:
        stream.write(text)


@contextmanager
def atomic_text_file(path: Path) -> Iterator[TextIO]:
    """A file that appears whole or not at all (written beside, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
