"""An atomic batch planned in one pass (app/application/lean_batch.py) stores the very rows
the ordinary path stores, answers the same, and leaves the aggregates in the same state:
two ledgers run the same random histories of batches (grants and their lots, holds,
floors and overdrafts, closed, missing and foreign-unit accounts, resent ids, refusals),
one planning plain batches in one pass and the other running every transfer through the
aggregates' commands, and everything they store, answer and hold is compared."""

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Final
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

import app.application.ledger as ledger_module
from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.lean_batch import lean_batch
from app.application.ledger import Ledger
from app.application.views import BatchOutcome
from app.domain import commits
from app.domain.account import Account
from app.domain.chain import EventPieces, chained_event
from app.domain.errors import LedgerError
from app.domain.lots import LotBook
from app.domain.transfer import Transfer
from app.persistence.stores import event_store_env, sqlite_url

START: Final = datetime(2026, 1, 1, tzinfo=UTC)
LATER: Final = START + timedelta(hours=2)  # the batches' time: some lots have expired
USERS: Final = ("u0", "u1", "u2", "u3")
ACCOUNTS: Final = ("issuer", *USERS, "eur", "shut", "nobody")  # nobody: never opened
FUNDING: Final = 40
EXAMPLES: Final = 60


@dataclass(frozen=True)
class Item:
    """One transfer of a batch: ``grant_hours`` makes it a grant expiring that many hours
    after the start (0: a grant without expiry); ``id_from`` resends an earlier id."""

    debit: str
    credit: str
    amount: int
    pending: bool = False
    grant_hours: int | None = None
    id_from: int | None = None
    timeout_seconds: int | None = None  # a hold's (given only to holds)
    note: str | None = None  # a metadata value; some are not of the plain shape (NOTES)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


# Metadata values: the events of a transfer carrying the first two are not of the plain
# shape (non-ASCII, DEL), so the one pass hands it to the ordinary path.
NOTES: Final = ("caf\u00e9", "rub\x7fout", 'say "hi"', "plain")
plain_items = st.builds(
    Item,
    debit=st.sampled_from(USERS),
    credit=st.sampled_from(("issuer", *USERS)),
    amount=st.integers(1, 25),
    pending=st.booleans(),
    timeout_seconds=st.none() | st.integers(1, 3600),
    note=st.none() | st.none() | st.sampled_from(NOTES),
)
odd_items = st.builds(
    Item,
    debit=st.sampled_from(ACCOUNTS),
    credit=st.sampled_from(ACCOUNTS),
    amount=st.integers(1, 2 * FUNDING),
    pending=st.booleans(),
    grant_hours=st.none() | st.integers(0, 3),
    id_from=st.none() | st.integers(0, 30),
)
# Mostly plain batches (the lean shape, which may still be refused), some mixed with odd items.
batches = st.lists(
    st.one_of(
        st.lists(plain_items, min_size=1, max_size=8),
        st.lists(plain_items, min_size=1, max_size=8),
        st.lists(st.one_of(plain_items, odd_items), min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)
# Per user: (floor kind, funded by a grant expiring after how many hours, hold taken);
# u0 and u1 are funded without a grant (their spends are of the lean shape).
users_set_up = st.lists(
    st.tuples(
        st.sampled_from(("floor", "overdraft", "negative")),
        st.none() | st.integers(0, 3),
        st.booleans(),
    ),
    min_size=len(USERS),
    max_size=len(USERS),
)


# Each ledger's run numbers its commits from 0 (the ids are otherwise random).
_commit_numbers: Iterator[int] = itertools.count()


def run(
    lean: bool, set_up: Sequence[tuple[str, int | None, bool]], history: list[list[Item]]
) -> tuple[list[Any], list[Any], dict[UUID, dict[str, Any]], int]:
    """The answers, the stored rows and the writer's aggregates after ``history``, and how
    many batches went the lean way."""
    global _commit_numbers  # noqa: PLW0603  # restarted for each ledger
    _commit_numbers = itertools.count()
    clock = Clock()
    answers: list[Any] = []
    with TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        # Commands stamped by the clock, commits numbered in order: both ledgers alike.
        patch.setattr(ledger_module, "utc_now", clock)
        patch.setattr(commits, "new_commit_id", lambda: f"{next(_commit_numbers):032x}")
        env = dict(event_store_env(sqlite_url(Path(tmp) / "ledger.sqlite")))
        with Ledger(env, clock=clock) as ledger:
            ledger.lean_batches = lean
            _set_up(ledger, set_up)
            clock.now = LATER
            lean_runs = _counting_lean_runs(patch)
            for number, batch in enumerate(history):
                commands = [_command(number, index, item) for index, item in enumerate(batch)]
                try:
                    answers.append(_answered(ledger.record_batch(commands, atomic=True)))
                except LedgerError as error:
                    answers.append((type(error), str(error), getattr(error, "index", None)))
            rows = [
                (n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in ledger.recorder.select_notifications(start=1, limit=100_000)
            ]
            cache = ledger._written
            held = {
                aggregate.id: _state(aggregate)
                for aggregate in [*cache._accounts.values(), *cache._others.values()]
            }
            return answers, rows, held, lean_runs[0]


def _set_up(ledger: Ledger, set_up: Sequence[tuple[str, int | None, bool]]) -> None:
    ledger.open_account(OpenAccount("issuer", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("eur", "EUR", allow_negative=True))
    ledger.open_account(OpenAccount("shut", "CREDITS"))
    ledger.close_account("shut")
    for user, (floor, grant_hours, hold) in zip(USERS, set_up, strict=True):
        ledger.open_account(
            OpenAccount(
                user,
                "CREDITS",
                allow_negative=floor == "negative",
                overdraft_limit=50 if floor == "overdraft" else 0,
            )
        )
        grant = None if grant_hours is None or user in ("u0", "u1") else _grant(grant_hours)
        ledger.record_transfer(RecordTransfer(f"fund:{user}", "issuer", user, FUNDING, grant=grant))
        if hold:
            ledger.record_transfer(RecordTransfer(f"hold:{user}", user, "issuer", 10, pending=True))


def _grant(hours: int) -> GrantTerms:
    return GrantTerms(expires_at=START + timedelta(hours=hours) if hours else None)


def _command(number: int, index: int, item: Item) -> RecordTransfer:
    transfer_id = f"b{number}:{index}" if item.id_from is None else f"b0:{item.id_from % 4}"
    return RecordTransfer(
        transfer_id,
        item.debit,
        item.credit,
        item.amount,
        pending=item.pending and item.grant_hours is None,
        timeout_seconds=item.timeout_seconds if item.pending and item.grant_hours is None else None,
        grant=None if item.grant_hours is None else _grant(item.grant_hours + 3),
        metadata={
            **({"item": str(index)} if index % 3 == 0 else {}),
            **({} if item.note is None else {"note": item.note}),
        },
    )


def _answered(outcome: BatchOutcome) -> list[Any]:
    return list(outcome.results)


def _state(aggregate: Any) -> dict[str, Any]:
    state = dict(vars(aggregate))
    assert not state.pop("_pending_events"), "every event was written"
    lots = state.get("lots")
    if isinstance(lots, LotBook):
        state["lots"] = list(lots)
    return state


def _counting_lean_runs(patch: pytest.MonkeyPatch) -> list[int]:
    """How many batches ``lean_batch`` planned (a list of one count, kept up to date)."""
    counted = [0]
    original = lean_batch

    def counting(*args: Any) -> Any:
        planned = original(*args)
        counted[0] += planned is not None
        return planned

    patch.setattr(ledger_module, "lean_batch", counting)
    return counted


@settings(max_examples=EXAMPLES)
@given(set_up=users_set_up, history=batches)
def test_a_batch_planned_in_one_pass_stores_answers_and_holds_what_the_ordinary_path_does(
    set_up: list[tuple[str, int | None, bool]], history: list[list[Item]]
) -> None:
    lean_answers, lean_rows, lean_held, _ = run(True, set_up, history)

    answers, rows, held, ordinary_runs = run(False, set_up, history)
    assert ordinary_runs == 0
    assert lean_answers == answers
    assert lean_rows == rows
    assert lean_held == held


def test_a_plain_batch_goes_the_lean_way_and_a_refused_one_the_ordinary_way() -> None:
    set_up = [("floor", None, False)] * len(USERS)
    plain = [Item("u0", "u1", 5), Item("u1", "issuer", 3, pending=True), Item("u2", "u0", 7)]
    refused = [Item("u0", "u1", 5), Item("u3", "u1", FUNDING + 1)]
    resent = [Item("u0", "u1", 5, id_from=0)]  # b0:0 again: an id that may exist
    answers, rows, _, lean_runs = run(True, set_up, [plain, refused, resent])
    assert lean_runs == 1
    assert isinstance(answers[0], list)
    assert answers[1][0].__name__ == "BatchRejectedError"
    assert answers[1][2] == 1
    assert [outcome.created for outcome in answers[2]] == [False]
    assert run(False, set_up, [plain, refused, resent])[:2] == (answers, rows)


texts = st.text(st.characters(codec="utf-8"), max_size=5)


@given(
    transfer_id=st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True),
    amount=st.integers(1, 2**63 - 1),
    metadata=st.dictionaries(texts, texts, max_size=3),
    version=st.integers(0, 10**6),
)
def test_an_event_built_from_its_class_pieces_is_the_one_chained_event_builds(
    transfer_id: str, amount: int, metadata: dict[str, str], version: int
) -> None:
    originator_id = UUID(int=version * 7919 + amount % 1000)
    previous = "ab" * 32
    topic = get_topic(Transfer)
    shapes: list[tuple[type, tuple[str, ...], str | None, dict[str, Any]]] = [
        (
            Account.Debited,
            (),
            None,
            {"transfer_id": transfer_id, "amount": amount, "allocations": []},
        ),
        (
            Account.Credited,
            ("grant", "returned", "revived"),
            None,
            {
                "transfer_id": transfer_id,
                "amount": amount,
                "grant": None,
                "returned": None,
                "revived": None,
            },
        ),
        (Account.CreditReserved, (), None, {"transfer_id": transfer_id, "amount": amount}),
        (
            Transfer.TransferRecorded,
            ("grant",),
            topic,
            {
                "transfer_id": transfer_id,
                "debit_account_id": "a",
                "credit_account_id": "b",
                "amount": amount,
                "unit": "CREDITS",
                "pending": False,
                "timeout_seconds": None,
                "metadata": metadata,
                "reversal_of": None,
                "grant": None,
                "allocations": [{"grant_id": None, "amount": amount}],
            },
        ),
    ]
    for event_class, left_out, aggregate_topic, fields in shapes:
        pieces = EventPieces(event_class, left_out, aggregate_topic)
        envelope = {} if aggregate_topic is None else {"originator_topic": aggregate_topic}
        lean = pieces.new(
            originator_id, originator_id.hex, version, previous, START, START.isoformat(), fields
        )
        plain = chained_event(
            event_class, originator_id, version, previous, START, dict(fields), **envelope
        )
        if lean is None:  # text the store keeps escaped: left to chained_event
            texts = [*metadata, *metadata.values()]
            assert any(not (text.isascii() and "\x7f" not in text) for text in texts)
            continue
        assert type(lean) is type(plain)
        assert list(vars(lean).items()) == list(vars(plain).items())
