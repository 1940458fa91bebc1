"""Every stream is a hash chain: the write path links events, and any edit shows."""

import dataclasses
import itertools
from typing import Any

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.chain import GENESIS, expected_chain, first_broken_link
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env


def recorded_ledger() -> Ledger:
    ledger = Ledger(event_store_env("memory://"))
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS"))
    for number in range(5):
        ledger.record_transfer(RecordTransfer(f"t{number}", "bank", "alice", number + 1))
    return ledger


def test_each_event_links_to_the_one_before_it() -> None:
    events: list[Any] = list(recorded_ledger().events.get(account_uuid("alice")))
    assert len(events) == 6
    assert events[0].chain == expected_chain(GENESIS, events[0])
    for previous, event in itertools.pairwise(events):
        assert event.chain == expected_chain(previous.chain, event)
    assert first_broken_link(events) is None


def test_an_edited_amount_breaks_its_own_link() -> None:
    events: list[Any] = list(recorded_ledger().events.get(account_uuid("alice")))
    events[3] = dataclasses.replace(events[3], amount=999)
    assert first_broken_link(events) == 3


def test_re_chaining_an_edit_breaks_the_next_link() -> None:
    events: list[Any] = list(recorded_ledger().events.get(account_uuid("alice")))
    forged = dataclasses.replace(events[3], amount=999)
    events[3] = dataclasses.replace(
        forged,
        chain=expected_chain(events[2].chain, forged),
    )
    assert first_broken_link(events) == 4


def test_a_removed_event_breaks_the_chain() -> None:
    events: list[Any] = list(recorded_ledger().events.get(account_uuid("alice")))
    del events[2]
    assert first_broken_link(events) == 3


def test_the_aggregate_remembers_the_head_of_its_chain() -> None:
    ledger = recorded_ledger()
    events: list[Any] = list(ledger.events.get(account_uuid("alice")))
    account: Any = ledger.repository.get(account_uuid("alice"))
    assert account.chain == events[-1].chain
