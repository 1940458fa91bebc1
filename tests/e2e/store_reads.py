"""Reads straight from the event store, bypassing snapshots and caches, for the checks."""

from collections import Counter
from typing import Final

from app.application.ledger import Ledger
from app.domain.account import Account
from app.domain.values import account_uuid

NOTIFICATION_PAGE: Final = 500


def topics_recorded(ledger: Ledger) -> Counter[str]:
    """How many events of each topic the whole log holds."""
    counts: Counter[str] = Counter()
    start = 1
    while True:
        page = ledger.recorder.select_notifications(start=start, limit=NOTIFICATION_PAGE)
        counts.update(notification.topic for notification in page)
        if len(page) < NOTIFICATION_PAGE:
            return counts
        start = page[-1].id + 1


def running_balances(ledger: Ledger, account_id: str) -> list[int]:
    """The account's balance after each event of its own stream, folded from scratch."""
    balance = 0
    balances: list[int] = []
    for event in ledger.events.get(account_uuid(account_id)):
        if isinstance(event, Account.BalanceChanged):
            balance += event.delta().balance
        balances.append(balance)
    return balances


def posted_transfer_ids(
    ledger: Ledger, account_id: str, kind: type[Account.BalanceChanged]
) -> list[str]:
    """The transfer named by each ``kind`` event (e.g. Credited) of the account's stream."""
    return [
        event.transfer_id
        for event in ledger.events.get(account_uuid(account_id))
        if isinstance(event, kind)
    ]
