"""An atomic batch of plain transfers planned in one pass.

The ordinary path runs a batch's transfers one by one through the aggregates' commands
(``Ledger._apply_transfer``): per transfer some 300 Python calls (workspace look-ups and
scopes, the accounts' checks, three events triggered, applied and linked one by one),
none above a few per cent of its time. For the batch shape that dominates (spends and
holds between accounts whose only lot is the general one, every id new), this module
does the same work in one loop over plain values:

1. every account is read once, and its counters, general lot, version and link copied
   into a ``_Book``;
2. each transfer's checks run on the books (exactly the accounts' own checks:
   ``Account.check_debit``/``check_credit`` with only the general lot), and its three
   events are built from pieces computed once per event class (``EventPieces``), each
   linked to its stream's previous link as it goes;
3. only when every transfer passed are the accounts given their new state (counters,
   general lot, version, link, pending events), and the transfers made and held.

Anything outside that shape (a grant, an account with grant lots on the debit side, an
id that may exist, a closed or missing account, a unit mismatch, a refused check, a
field the store would write otherwise than the link) answers None before anything was
changed, and the ledger runs the batch the ordinary way, which refuses what it must
with its own error. The stored rows are byte-identical to the ordinary path's and the
aggregates end in the same state: ``tests/unit/test_lean_batch.py`` holds the two equal
over random batches (lots, grants, holds, floors and overdrafts, rejections).
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from eventsourcing.utils import get_topic

from app.application.commands import RecordTransfer
from app.application.views import BatchOutcome, TransferOutcome, TransferView
from app.application.workspace import Workspace, Written
from app.compat import initialise_aggregate
from app.domain.account import Account
from app.domain.chain import GENESIS, EventPieces, current_command_time, plain_link
from app.domain.limits import BALANCE_COUNTER_MAX
from app.domain.lots import Allocation
from app.domain.transfer import Transfer, initial_fate
from app.domain.values import transfer_uuid

_DEBITED: Final = EventPieces(Account.Debited)
_DEBIT_RESERVED: Final = EventPieces(Account.DebitReserved)
_CREDITED: Final = EventPieces(Account.Credited, left_out=("grant", "returned", "revived"))
_CREDIT_RESERVED: Final = EventPieces(Account.CreditReserved)
_RECORDED: Final = EventPieces(
    Transfer.TransferRecorded, left_out=("grant",), originator_topic=get_topic(Transfer)
)
_PENDING: Final = initial_fate(pending=True)
_POSTED: Final = initial_fate(pending=False)
_new_object: Final = object.__new__


class _Book:
    """One account's figures as the batch moves them (the account itself is changed
    only once the whole batch has passed)."""

    __slots__ = (
        "account",
        "chain",
        "credits_pending",
        "credits_posted",
        "debits_pending",
        "debits_posted",
        "events",
        "floor",
        "hex",
        "id",
        "is_open",
        "modified",
        "remaining",
        "reserved",
        "spends_general",
        "unit",
        "version",
    )

    def __init__(self, account: Account) -> None:
        self.account = account
        self.id = account.id
        self.hex = self.id.hex
        self.unit = account.unit
        self.is_open = account.status == "open"
        self.floor = account.floor
        self.debits_posted = account.debits_posted
        self.credits_posted = account.credits_posted
        self.debits_pending = account.debits_pending
        self.credits_pending = account.credits_pending
        general = account.lots.general
        self.remaining = general.remaining
        self.reserved = general.reserved
        # Only the general lot: a spend or hold takes all of it from there, whatever the
        # time (``LotBook.plan_spend``, ``LotBook.available``).
        self.spends_general = len(account.lots) == 1
        self.version = account.version
        self.chain = account.chain
        self.events: list[Any] = []
        self.modified = account.modified_on

    def settle(self) -> None:
        """Give the account the state its new events lead to (what applying them one by
        one does)."""
        account = self.account
        account.debits_posted = self.debits_posted
        account.credits_posted = self.credits_posted
        account.debits_pending = self.debits_pending
        account.credits_pending = self.credits_pending
        account.lots.set_general(self.remaining, self.reserved)
        account.version = self.version
        account.modified_on = self.modified
        account.chain = self.chain
        account.pending_events.extend(self.events)


def lean_batch(
    work: Workspace, commands: Sequence[RecordTransfer]
) -> Callable[[Written], BatchOutcome] | None:
    """Run the checked ``commands`` as one atomic batch in one pass (module docstring),
    or None, having changed nothing, when the batch is not of that shape."""
    moment = current_command_time()
    if moment is None or any(command.grant is not None for command in commands):
        return None
    stream_ids = [transfer_uuid(command.id) for command in commands]
    new_ids = set(stream_ids)  # each id hashed once (in Python), here
    if len(new_ids) != len(commands) or not work.all_absent(new_ids):
        return None
    books = _books(work, commands)
    if books is None:
        return None
    made = _plan(books, commands, stream_ids, moment)
    if made is None:
        return None
    for book in books.values():
        if book.events:
            book.settle()
    transfers = [transfer for transfer, _ in made]
    work.add_transfers(transfers, new_ids)
    answers = [(TransferView.of(transfer), recorded) for transfer, recorded in made]
    return lambda written: BatchOutcome(
        [
            TransferOutcome(view, created=True, position=written.position_of_event(recorded))
            for view, recorded in answers
        ]
    )


class Stamps:
    """A group's command time stamps, one per command, from ``clock``. A stamp taken for
    a command the one pass then cannot plan (its events are not of the plain shape) is
    handed back (``give_back``) and is the next one given out: that command's on the
    ordinary path, which it gets as if the pass had never looked at it."""

    __slots__ = ("_clock", "_kept")

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._kept: datetime | None = None

    def __call__(self) -> datetime:
        kept = self._kept
        if kept is None:
            return self._clock()
        self._kept = None
        return kept

    def give_back(self, moment: datetime) -> None:
        self._kept = moment


def lean_transfers(
    work: Workspace, commands: Sequence[RecordTransfer], stamp: Stamps
) -> list[tuple[Callable[[Written], TransferOutcome], set[UUID]]]:
    """Run the leading plain ones of a group's single transfers in one pass: each is
    its own command (module docstring), checked on the books in group order, stamped by
    ``stamp`` as the ordinary path stamps it. Stops at the first command the plan
    cannot decide (not of the lean shape, or refused): that one and those after it are
    left to the caller, which runs it the ordinary way (where it is refused with its
    own error, or written; stamped with the moment taken here, if one was) and then hands
    the rest here again. Returns, for each
    command run, how to answer it and the streams it read (its accounts and its id);
    the workspace then holds their accounts' new state and their transfers, as one
    command scope: none of them can be refused any more, so none is rolled back."""
    work.begin()
    books: dict[str, _Book] = {}
    made: list[tuple[Transfer, Any]] = []
    reads: list[set[UUID]] = []
    created: set[UUID] = set()
    allocations_of: dict[int, tuple[Allocation, ...]] = {}
    for command in commands:
        if command.grant is not None:
            break
        stream_id = transfer_uuid(command.id)
        if stream_id in created or not work.is_absent(stream_id):
            break
        debit = books.get(command.debit_account_id) or _book(work, books, command.debit_account_id)
        credit = books.get(command.credit_account_id) or _book(
            work, books, command.credit_account_id
        )
        if debit is None or credit is None:
            break
        if _not_plain(debit, credit, command.amount):
            break
        moment = stamp()  # only for a command that passed: stamped once, as it is written
        planned = _planned(
            debit, credit, command, stream_id, moment, moment.isoformat(), allocations_of
        )
        if planned is None:
            stamp.give_back(moment)  # the ordinary path's stamp for this command
            break
        made.append(planned)
        created.add(stream_id)
        reads.append({debit.id, credit.id, stream_id})
    if not made:
        return []
    for book in books.values():
        if book.events:
            book.settle()
    work.add_transfers([transfer for transfer, _ in made], created)
    return [
        (_answer(TransferView.of(transfer), recorded), read)
        for (transfer, recorded), read in zip(made, reads, strict=True)
    ]


def _answer(view: TransferView, recorded: Any) -> Callable[[Written], TransferOutcome]:
    return lambda written: TransferOutcome(
        view, created=True, position=written.position_of_event(recorded)
    )


def _book(work: Workspace, books: dict[str, _Book], account_id: str) -> _Book | None:
    """The account's book, read and kept in ``books``; None when the account is missing
    or its link is not plain."""
    account = work.find_account(account_id)
    if account is None or not plain_link(account.chain):
        return None
    book = books[account_id] = _Book(account)
    return book


def _books(work: Workspace, commands: Sequence[RecordTransfer]) -> dict[str, _Book] | None:
    """Each account of the batch, read once (in the order the ordinary path first reads
    them), or None when one is missing or its link is not plain."""
    books: dict[str, _Book] = {}
    for command in commands:
        for account_id in (command.debit_account_id, command.credit_account_id):
            if account_id not in books and _book(work, books, account_id) is None:
                return None
    return books


def _plan(
    books: dict[str, _Book],
    commands: Sequence[RecordTransfer],
    stream_ids: list[UUID],
    moment: datetime,
) -> list[tuple[Transfer, Any]] | None:
    """Check each transfer on the books and build its events, in batch order: the new
    transfers with the event recording each, or None at the first that is not plain."""
    iso_time = moment.isoformat()
    made: list[tuple[Transfer, Any]] = []
    # A general-lot spend's allocations on the transfer, by amount: immutable, so shared.
    allocations_of: dict[int, tuple[Allocation, ...]] = {}
    for command, stream_id in zip(commands, stream_ids, strict=True):
        debit = books[command.debit_account_id]
        credit = books[command.credit_account_id]
        if _not_plain(debit, credit, command.amount):
            return None
        planned = _planned(debit, credit, command, stream_id, moment, iso_time, allocations_of)
        if planned is None:
            return None
        made.append(planned)
    return made


def _planned(
    debit: _Book,
    credit: _Book,
    command: RecordTransfer,
    stream_id: UUID,
    moment: datetime,
    iso_time: str,
    allocations_of: dict[int, tuple[Allocation, ...]],
) -> tuple[Transfer, Any] | None:
    """Build the events of one transfer that passed its checks (``_not_plain``), move
    its accounts' books and make the transfer: the transfer and the event recording it;
    None, with the books untouched, when an event is not of the plain shape."""
    amount = command.amount
    debit_id = command.debit_account_id
    credit_id = command.credit_account_id
    transfer_id = command.id
    pending = command.pending
    allocations = [{"grant_id": None, "amount": amount}]
    debited = (_DEBIT_RESERVED if pending else _DEBITED).new(
        debit.id,
        debit.hex,
        debit.version + 1,
        debit.chain,
        moment,
        iso_time,
        {"transfer_id": transfer_id, "amount": amount, "allocations": allocations},
    )
    metadata = command.metadata
    timeout_seconds = command.timeout_seconds
    unit = debit.unit
    recorded = _RECORDED.new(
        stream_id,
        stream_id.hex,
        Transfer.INITIAL_VERSION,
        GENESIS,
        moment,
        iso_time,
        {
            "transfer_id": transfer_id,
            "debit_account_id": debit_id,
            "credit_account_id": credit_id,
            "amount": amount,
            "unit": unit,
            "pending": pending,
            "timeout_seconds": timeout_seconds,
            "metadata": dict(metadata),
            "reversal_of": None,
            "grant": None,
            "allocations": [{"grant_id": None, "amount": amount}],
        },
    )
    if pending:
        credited = _CREDIT_RESERVED.new(
            credit.id,
            credit.hex,
            credit.version + 1,
            credit.chain,
            moment,
            iso_time,
            {"transfer_id": transfer_id, "amount": amount},
        )
    else:
        credited = _CREDITED.new(
            credit.id,
            credit.hex,
            credit.version + 1,
            credit.chain,
            moment,
            iso_time,
            {
                "transfer_id": transfer_id,
                "amount": amount,
                "grant": None,
                "returned": None,
                "revived": None,
            },
            {"transfer_id": transfer_id, "amount": amount},
        )
    if debited is None or recorded is None or credited is None:
        return None
    if pending:
        debit.debits_pending += amount
        debit.reserved += amount
        credit.credits_pending += amount
    else:
        debit.debits_posted += amount
        debit.remaining -= amount
        credit.credits_posted += amount
        credit.remaining += amount
    debit.version += 1
    debit.chain = debited.chain
    debit.events.append(debited)
    debit.modified = moment
    credit.version += 1
    credit.chain = credited.chain
    credit.events.append(credited)
    credit.modified = moment
    allocated = allocations_of.get(amount)
    if allocated is None:
        allocated = allocations_of[amount] = (Allocation(None, amount),)
    # As ``ChainedAggregate._create_chained`` makes it: the library's base attributes,
    # then what ``Transfer.__init__`` sets from the event's fields, then the link.
    transfer = _new_object(Transfer)
    initialise_aggregate(transfer, stream_id, Transfer.INITIAL_VERSION, moment)
    vars(transfer).update(
        {
            "transfer_id": transfer_id,
            "debit_account_id": debit_id,
            "credit_account_id": credit_id,
            "amount": amount,
            "unit": unit,
            "pending": pending,
            "timeout_seconds": timeout_seconds,
            "metadata": dict(metadata),
            "reversal_of": None,
            "status": _PENDING if pending else _POSTED,
            "amount_posted": 0 if pending else amount,
            "reversed_by": None,
            "grant": None,
            "allocations": allocated,
            "chain": recorded.chain,
        }
    )
    transfer.pending_events.append(recorded)
    return transfer, recorded


def _not_plain(debit: _Book, credit: _Book, amount: int) -> bool:
    """Whether the ordinary path must run this transfer: its accounts are not of the lean
    shape, or it would be refused (``Account.check_debit`` and ``check_credit`` on the
    books, the general lot being the debit account's only lot)."""
    return (
        debit is credit
        or not (debit.is_open and credit.is_open and debit.spends_general)
        or debit.unit != credit.unit
        or debit.debits_posted + debit.debits_pending + amount > BALANCE_COUNTER_MAX
        or (debit.floor is not None and debit.remaining - debit.reserved - amount < debit.floor)
        or credit.credits_posted + credit.credits_pending + amount > BALANCE_COUNTER_MAX
    )
