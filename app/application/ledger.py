"""The Ledger application service: one method per command, each ONE atomic write.

Every write command is checked at the edge (in the caller's thread), then handed to
the committer (``committer.py``): one writer thread per process that runs the commands
waiting in its queue one after another on one workspace (``workspace.py``) and records
all their events in one store write — one transaction on SQL, one multi-stream append
on KurrentDB — with optimistic concurrency on every stream. A command never spans two
writes, and each caller is answered as soon as the write holding its command is durable.

A command checks everything first and then triggers events; a rejected command is
rolled back, so it changes nothing for its neighbours. When another process moved a
stream the group read, only the commands that depend on that stream run again, on
fresh state, each within its own retry budget; the others are written at once.
"""

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Generic, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Mapper,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import get_topic

from app.application.commands import (
    OpenAccount,
    PostPendingTransfer,
    RecordReversal,
    RecordTransfer,
    UpdateAccountMetadata,
    VoidPendingTransfer,
)
from app.application.committer import GROUP_UNITS_MAX, CommandQueue, Committer, Pending
from app.application.lean_batch import Stamps, lean_batch, lean_transfers
from app.application.views import (
    AccountOutcome,
    AccountView,
    BatchOutcome,
    DueGrant,
    TransferOutcome,
    TransferView,
)
from app.application.workspace import Workspace, WriterCache, Written, image_of, restore_image
from app.compat import ExecutemanySQLiteRecorder
from app.domain import limits
from app.domain.account import Account, term_record
from app.domain.chain import command_time, current_command_time
from app.domain.commits import mark_commit
from app.domain.errors import (
    AccountNotFoundError,
    BatchRejectedError,
    BatchTooLargeError,
    ConcurrencyConflictError,
    GrantNotYetExpiredError,
    IdempotencyConflictError,
    LedgerError,
    OutcomeUnknownError,
    StorageFullError,
    StoreUnavailableError,
    TransferNotFoundError,
    UnitMismatchError,
    ValidationError,
)
from app.domain.lots import GENERAL, Allocation, LotBook, LotTerms, Return, total
from app.domain.transfer import Transfer
from app.domain.values import (
    account_uuid,
    breakage_account_id,
    check_id,
    derived_transfer_id,
    transfer_uuid,
)
from app.persistence.deadlines import enter_store_deadline, leave_store_deadline, seconds_left
from app.persistence.faults import store_fault
from app.persistence.mapper import ChainedMapper
from app.persistence.positions import existing_streams, recorded_position, stream_heads
from app.persistence.streams import (
    StoredStream,
    catches_up,
    commits_per_group,
    events_after,
    read_streams,
    writes_streams_together,
)
from app.persistence.transcoder import OrjsonTranscoder
from app.persistence.transcodings import register_domain_transcodings
from app.persistence.write_lock import FollowsLog, WriteLocking

R = TypeVar("R")

log = logging.getLogger(__name__)

# A command that keeps meeting conflicts (another process writing the same streams)
# runs again at most this many times, and never past its caller's deadline.
CONFLICT_RETRIES_MAX: Final = 100
# A command that lost this many races runs next with the store's write lock held from
# before its read to its write, where the store has one (decision 0018): it cannot lose
# again, however hard another process writes the same streams.
LOCK_AFTER_CONFLICTS: Final = 1
# A stream found moved by another process at a second lost race within this long (or
# moved again under the lock after its first) is contended, and stays so this long: every
# group that touches it meanwhile is written under the store's write lock (decision 0018).
CONTENDED_SECONDS: Final = 1.0
# After it saw another process's write, the writer checks its cached streams against the
# store before each group for this long (one query), instead of trusting them.
OTHER_WRITERS_SECONDS: Final = 10.0
# On SQLite and PostgreSQL (``commits_per_group``), and elsewhere while other processes
# write the store, the writer waits at most this long (and no longer than its last write
# took) for the callers it just answered before it takes its next group
# (``Committer._gathered``).
GATHER_SECONDS_MAX: Final = 0.005
# New ids found to exist (resent commands) remembered until their commands run again; a
# command abandoned meanwhile (its deadline passed) would leave its id behind for good.
# Forgetting one is safe: the store's unique key refuses it again and it is found again.
FOUND_EXISTING_MAX: Final = 10_000
# A batch item's answer that is a store fault already typed (``store_fault``), as the
# writer process of ``serve --workers N`` sends it: not a rejection of the item.
STORE_FAULT_ANSWERS: Final = (StorageFullError, StoreUnavailableError)
# A hot account replays at most this many events after its newest snapshot when it is
# not in the cache (e.g. right after a restart).
ACCOUNT_SNAPSHOT_INTERVAL: Final = 500
# The snapshots a group write is due are written together, this many at most per store
# call (one transaction each, where the store takes several streams at once): accounts
# moved alike cross an interval in the same group (a batch spread evenly over 1,000
# accounts moves each of them twice), and one transaction each, each with its commit's
# sync, held the writer from the next group for a second.
SNAPSHOTS_PER_WRITE_MAX: Final = 1_000
# Accounts owed a snapshot (skipped past a group's deadline, or read with a long tail)
# remembered for the next group that holds them, at most (``Ledger._snapshots_owed``).
SNAPSHOTS_OWED_MAX: Final = 20_000
AGGREGATE_CACHE_SIZE: Final = 20_000
# Defaults of the committer (settings may change them: LEDGER_WRITE_TIMEOUT_SECONDS,
# LEDGER_WRITE_QUEUE_MAX).
WRITE_TIMEOUT_SECONDS_DEFAULT: Final = 10.0
WRITE_QUEUE_MAX_DEFAULT: Final = 20_000
# Grant expiries: one call takes at most a group write's worth, queued as commands of
# this many (a conflict with another process retries one command, not the whole call).
GRANT_EXPIRIES_MAX: Final = GROUP_UNITS_MAX
EXPIRY_COMMAND_SIZE: Final = 250
# The write builders an ``Order`` may name (``Ledger.write_for``: ``_<name>_write``).
WRITE_BUILDERS: Final = frozenset(
    {
        "open_account",
        "close_account",
        "update_account",
        "transfer",
        "atomic_batch",
        "post_pending",
        "void_pending",
        "expire_pending",
        "reverse_transfer",
        "expire_grant",
        "expiry",
    }
)


# What one grant's expiry answers: the expiry transfer, the error that refused it, or
# None when nothing was left to move.
GrantExpiry = TransferOutcome | LedgerError | None


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


@dataclass(frozen=True)
class Write(Generic[R]):
    """One write command as the committer runs it: ``apply`` changes the workspace
    (or raises a rejection) and returns how to answer once the write is durable. The
    ids say what it will read, so a group can load them together."""

    apply: Callable[[Workspace], Callable[[Written], R]]
    account_ids: tuple[str, ...] = ()
    transfer_ids: tuple[str, ...] = ()
    units: int = 1
    # Those of ``transfer_ids`` the command creates when absent (its idempotency keys):
    # taken as absent without a query; the store's unique key refuses one that exists,
    # and the command then runs again and answers as a replay.
    new_transfer_ids: tuple[str, ...] = ()
    # A single transfer of a new id: what ``apply`` records, which a group may instead
    # plan in one pass with its neighbours (``lean_transfers``).
    plain: RecordTransfer | None = None
    # What the command is, as plain values: the name of the ledger's builder of this
    # write and its argument (``Ledger.write_for`` builds the same write from it). An
    # API worker of ``serve --workers N`` sends it to the writer process.
    order: "Order | None" = None


# A write command as plain values: (its builder's name, the builder's argument).
Order = tuple[str, Any]


@dataclass(frozen=True)
class RacedOnce:
    """A stream's first lost race lately: until when it counts, and the version the race
    found the stream at (None: not known)."""

    until: float
    head: int | None


@dataclass
class _Ran:
    entry: Pending[Any]
    reads: set[UUID]
    finish: Callable[[Written], Any] | None = None
    rejection: LedgerError | None = None


class Ledger(Application[UUID]):
    name = "ledger"
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE_SIZE),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }
    # Snapshots are written by the committer after each commit (never by the library's
    # save, which would fail a committed command when the snapshot write fails).
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Account: ACCOUNT_SNAPSHOT_INTERVAL}
    # Atomic batches of plain transfers are planned in one pass (lean_batch.py); False
    # runs every batch the ordinary way (the equivalence tests compare the two).
    lean_batches: bool = True
    # A group's single transfers likewise (``lean_transfers``), each answered on its own.
    lean_groups: bool = True

    def __init__(
        self, env: dict[str, str] | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        super().__init__(env)
        self.clock = clock
        # Transfers are never snapshotted (a handful of events each): a repository
        # without the snapshot store saves one read per transfer lookup.
        self.transfers: Repository[UUID] = Repository(
            event_store=self.events, cache_maxsize=AGGREGATE_CACHE_SIZE
        )
        # The writer's own view of the streams: trusted (the expected-version check of
        # each write catches a stale entry), never copied, only touched by the writer.
        self._loader: Repository[UUID] = Repository(
            event_store=self.events, snapshot_store=self.snapshots
        )
        self._written = WriterCache(maxsize=AGGREGATE_CACHE_SIZE)
        # What the group being written read from the store (cache misses), each with its
        # state as read: a failed write puts them back and keeps them cached
        # (``_forget``), so that the next group does not read and fold them again.
        self._loaded: dict[UUID, tuple[Aggregate, dict[str, Any]]] = {}
        # New ids taken as absent that the store refused (they existed): read, not
        # presumed, when their commands run again.
        self._found_existing: set[UUID] = set()
        self.snapshot_failures = 0
        # Accounts whose snapshot is owed although they crossed no interval in the group
        # that writes them next: one skipped (its group's callers had stopped waiting),
        # or one read from the store with an interval's worth of events or more after
        # its newest snapshot. Left to their next interval, a group late because its
        # reads were long would leave the next read of them longer still.
        self._snapshots_owed: set[UUID] = set()
        # Group writes that met an optimistic-concurrency conflict, and those written with
        # the store's write lock held across their read (for benchmarks, metrics, tests).
        self.conflicts = 0
        self.locked_writes = 0
        # The most races (conflicts, or rejections on moved streams) one command lost.
        self.most_races_lost = 0
        # Streams other processes have been writing, and until when they count as such;
        # until when this process checks its cache before each group (others write).
        self._contended: dict[UUID, float] = {}
        # Streams found moved by another process at one lost race (their first within
        # ``CONTENDED_SECONDS``): until when, and the version they were found at;
        # contended if found past it again meanwhile.
        self._raced_once: dict[UUID, RacedOnce] = {}
        self._others_seen_until = 0.0
        self._catches_up = catches_up(self.recorder)
        self._gathers_alone = commits_per_group(self.recorder)
        self._write_locking = self.recorder if isinstance(self.recorder, WriteLocking) else None
        # A recorder that binds the mapper's rows as they are (app/persistence/rows.py).
        self._binds_rows = isinstance(self.recorder, ExecutemanySQLiteRecorder)
        self._log_follower = self.recorder if isinstance(self.recorder, FollowsLog) else None
        self.committer = Committer(
            self._write_group,
            queue_units_max=int(self.env.get("WRITE_QUEUE_MAX") or WRITE_QUEUE_MAX_DEFAULT),
            timeout_seconds=float(
                self.env.get("WRITE_TIMEOUT_SECONDS") or WRITE_TIMEOUT_SECONDS_DEFAULT
            ),
            gather_seconds=self._gather_seconds,
        )
        # Where write commands go: this process's committer, or (an API worker of
        # ``serve --workers N``) the writer process's, through ``use_writer``.
        self.commands: CommandQueue = self.committer

    def construct_mapper(self) -> Mapper[UUID]:
        """The library's mapper, writing each new event's fields as the bytes its chain
        link hashed (app/persistence/mapper.py)."""
        return self.factory.mapper(
            transcoder=self.construct_transcoder(), mapper_class=ChainedMapper
        )

    def construct_transcoder(self) -> Transcoder:
        """orjson behind the library's interface, same format (app/persistence/transcoder.py)."""
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    def use_writer(self, commands: "CommandQueue") -> None:
        """Send every write command to ``commands`` (the writer process's committer, in
        an API worker of ``serve --workers N``) instead of this process's committer."""
        self.commands = commands

    def gather_callers(self) -> None:
        """Let each group wait a moment for the callers the last one answered on every
        store, as on SQLite (``_gather_seconds``): the writer process of ``serve
        --workers N``, whose callers come back through an API worker and a hop each,
        met the next group's commit otherwise only a few at a time (decision 0035)."""
        self._gathers_alone = True

    def write_for(self, order: Order) -> Write[Any]:
        """The write an ``Order`` names (the writer process runs what API workers send)."""
        name, argument = order
        if name not in WRITE_BUILDERS:
            raise ValueError(f"no write command is named {name!r}")
        write: Write[Any] = getattr(self, f"_{name}_write")(argument)
        return write

    def close(self) -> None:
        commands = getattr(self, "commands", None)
        committer = getattr(self, "committer", None)
        if commands is not None and commands is not committer:  # the writer process's
            commands.close()
        if committer is not None:
            committer.close()
        # A recorder with a write connection of its own (SQLite) closes it with the store.
        close_writer = getattr(getattr(self, "recorder", None), "close_writer", None)
        if close_writer is not None:
            close_writer()
        super().close()

    # Accounts --------------------------------------------------------------------------

    def open_account(self, command: OpenAccount) -> AccountOutcome:
        return self._submit(self._open_account_write(command))

    async def open_account_async(self, command: OpenAccount) -> AccountOutcome:
        """``open_account`` for a caller on an event loop (the HTTP API)."""
        return await self._submit_async(self._open_account_write(command))

    def _open_account_write(self, command: OpenAccount) -> Write[AccountOutcome]:
        command = command.checked()

        def apply(work: Workspace) -> Callable[[Written], AccountOutcome]:
            existing = work.find_account(command.id)
            if existing is not None:
                if not existing.same_opening(
                    command.unit,
                    command.allow_negative,
                    command.overdraft_limit,
                    command.metadata,
                    command.account_type,
                ):
                    raise IdempotencyConflictError(
                        f"account {command.id} already exists with a different body",
                        account_id=command.id,
                    )
                # The answer is the account as it stands: the position it reflects is
                # its newest event's (its opening's until anything else happened).
                view = AccountView.of(existing, now=self.clock())
                return lambda _: AccountOutcome(
                    view,
                    created=False,
                    position=self._position_of(existing.id, existing.version),
                )
            account = work.add(
                Account.open(
                    command.id,
                    command.unit,
                    command.allow_negative,
                    command.overdraft_limit,
                    command.metadata,
                    command.account_type,
                )
            )
            view = AccountView.of(account, now=self.clock())
            return lambda written: AccountOutcome(view, created=True, position=written.commit)

        return Write(apply, account_ids=(command.id,), order=("open_account", command))

    def close_account(self, account_id: str) -> AccountOutcome:
        return self._submit(self._close_account_write(account_id))

    async def close_account_async(self, account_id: str) -> AccountOutcome:
        """``close_account`` for a caller on an event loop (the HTTP API)."""
        return await self._submit_async(self._close_account_write(account_id))

    def _close_account_write(self, account_id: str) -> Write[AccountOutcome]:
        account_id = check_id(account_id, "account_id")

        def apply(work: Workspace) -> Callable[[Written], AccountOutcome]:
            account = work.account(account_id)
            already_closed = account.status == "closed"
            account.close()
            view = AccountView.of(account, now=self.clock())
            if already_closed:
                return lambda _: AccountOutcome(
                    view, created=False, position=self._position_of(account.id, account.version)
                )
            return lambda written: AccountOutcome(view, created=False, position=written.commit)

        return Write(apply, account_ids=(account_id,), order=("close_account", account_id))

    def update_account(
        self, account_id: str, metadata_changes: Mapping[str, str | None]
    ) -> AccountOutcome:
        """Merge metadata changes into an account (None removes a key): one
        ``Account.Updated`` event, or none when nothing would change."""
        command = UpdateAccountMetadata(account_id, metadata_changes)
        return self._submit(self._update_account_write(command))

    async def update_account_async(self, command: UpdateAccountMetadata) -> AccountOutcome:
        """``update_account`` for a caller on an event loop (the HTTP API), with the
        command its edge built (``checked_beyond_body``)."""
        return await self._submit_async(self._update_account_write(command))

    def _update_account_write(self, command: UpdateAccountMetadata) -> Write[AccountOutcome]:
        command = command.checked()
        account_id = command.account_id

        def apply(work: Workspace) -> Callable[[Written], AccountOutcome]:
            account = work.account(account_id)
            changed = account.update_metadata(command.changes)
            view = AccountView.of(account, now=self.clock())
            if not changed:
                return lambda _: AccountOutcome(
                    view, created=False, position=self._position_of(account.id, account.version)
                )
            return lambda written: AccountOutcome(view, created=False, position=written.commit)

        return Write(apply, account_ids=(account_id,), order=("update_account", command))

    def get_account(self, account_id: str) -> AccountView:
        """The account as its own stream says now (the write side; views come from
        projections)."""
        account_id = check_id(account_id, "account_id")
        return AccountView.of(self._read_account(account_id), now=self.clock())

    def account_lots(self, account_id: str) -> LotBook:
        """The account's live lots as its own stream says now (a copy)."""
        account_id = check_id(account_id, "account_id")
        return self._read_account(account_id).lots

    def _read_account(self, account_id: str, version: int | None = None) -> Account:
        try:
            account: Account = self.repository.get(account_uuid(account_id), version=version)
        except AggregateNotFoundError:
            raise AccountNotFoundError(
                f"account {account_id} does not exist", account_id=account_id
            ) from None
        return account

    def get_account_at_version(self, account_id: str, version: int) -> AccountView:
        account_id = check_id(account_id, "account_id")
        return AccountView.of(self._read_account(account_id, version), now=self.clock())

    # Transfers -------------------------------------------------------------------------

    def record_transfer(self, command: RecordTransfer) -> TransferOutcome:
        """Record one transfer (concurrent calls share the committer's next write)."""
        return self._submit(self._transfer_write(command.checked()))

    async def record_transfer_async(self, command: RecordTransfer) -> TransferOutcome:
        """``record_transfer`` for a caller on an event loop (the HTTP API)."""
        return await self._submit_async(self._transfer_write(command.checked()))

    def _transfer_write(self, command: RecordTransfer) -> Write[TransferOutcome]:
        return Write(
            lambda work: self._apply_transfer(work, command),
            account_ids=(command.debit_account_id, command.credit_account_id),
            transfer_ids=(command.id,),
            new_transfer_ids=(command.id,),
            plain=command,
            order=("transfer", command),
        )

    def record_batch(self, commands: Sequence[RecordTransfer], *, atomic: bool) -> BatchOutcome:
        _check_batch_size(commands)
        if atomic:
            return self._submit(self._atomic_batch_write(commands))
        refused, writes = self._independent_batch_writes(commands)
        answers = self.commands.submit_all([(write, write.units) for write in writes.values()])
        return _batch_outcome(len(commands), refused, writes, answers)

    async def record_batch_async(
        self, commands: Sequence[RecordTransfer], *, atomic: bool
    ) -> BatchOutcome:
        """``record_batch`` for a caller on an event loop (the HTTP API)."""
        _check_batch_size(commands)
        if atomic:
            return await self._submit_async(self._atomic_batch_write(commands))
        refused, writes = self._independent_batch_writes(commands)
        answers = await self.commands.submit_all_async(
            [(write, write.units) for write in writes.values()]
        )
        return _batch_outcome(len(commands), refused, writes, answers)

    def _atomic_batch_write(self, commands: Sequence[RecordTransfer]) -> Write[BatchOutcome]:
        checked: list[RecordTransfer] = []
        for index, command in enumerate(commands):
            try:
                checked.append(command.checked())
            except LedgerError as error:
                raise BatchRejectedError(index, error) from None

        def apply(work: Workspace) -> Callable[[Written], BatchOutcome]:
            lean = lean_batch(work, checked) if self.lean_batches else None
            if lean is not None:
                return lean
            finishers = []
            for index, command in enumerate(checked):
                try:
                    finishers.append(self._apply_transfer(work, command))
                except LedgerError as error:
                    raise BatchRejectedError(index, error) from None
            return lambda written: BatchOutcome([finish(written) for finish in finishers])

        return Write(
            apply,
            account_ids=tuple(_account_ids(checked)),
            transfer_ids=tuple(command.id for command in checked),
            units=len(checked),
            new_transfer_ids=tuple(command.id for command in checked),
            order=("atomic_batch", tuple(checked)),
        )

    def _independent_batch_writes(
        self, commands: Sequence[RecordTransfer]
    ) -> tuple[dict[int, LedgerError], dict[int, Write[TransferOutcome]]]:
        """Each item is its own command (all-or-nothing on its own); they are queued
        together and usually share one write. Items refused by their own checks are
        answered without being queued."""
        refused: dict[int, LedgerError] = {}
        writes: dict[int, Write[TransferOutcome]] = {}
        for index, command in enumerate(commands):
            try:
                writes[index] = self._transfer_write(command.checked())
            except LedgerError as error:
                refused[index] = error
        return refused, writes

    def _apply_transfer(
        self,
        work: Workspace,
        command: RecordTransfer,
        reversal_of: str | None = None,
        reversal: "_Reversal | None" = None,
    ) -> Callable[[Written], TransferOutcome]:
        existing = work.find_transfer(command.id)
        if existing is not None:
            return self._replay(existing, command, reversal_of)
        debit_account = work.account(command.debit_account_id)
        credit_account = work.account(command.credit_account_id)
        if debit_account.unit != credit_account.unit:
            raise UnitMismatchError(
                f"account {debit_account.account_id} holds {debit_account.unit}, "
                f"account {credit_account.account_id} holds {credit_account.unit}",
                debit_unit=debit_account.unit,
                credit_unit=credit_account.unit,
            )
        # Expiry is decided here, against the ledger's clock: expired credit is never
        # spendable, whether or not the expiry worker has moved it to breakage yet.
        now = self.clock()
        claw_back = reversal is not None and reversal.taken is not None
        debit_account.check_debit(command.amount, now, from_lot=claw_back)
        credit_account.check_credit(command.amount)
        lot_terms = grant_record = None
        if command.grant is not None:
            credit_account.check_grant(command.id, command.amount)
            lot_terms = LotTerms(
                expires_at=command.grant.expires_at,
                # Effective from the grant's own time stamp when none is asked (not from
                # the clock reading a moment later): at its commit's time it is spendable.
                effective_at=command.grant.effective_at or min(now, current_command_time() or now),
                priority=command.grant.priority,
                category=command.grant.category,
                sequence=credit_account.next_grant_sequence(),
            )
            grant_record = {**command.grant.requested(), **term_record(lot_terms)}
        # Every check passed: from here on nothing may refuse, so the events below are
        # all-or-nothing for this transfer even inside a larger batch.
        allocations = debit_account.debit(
            command.id,
            command.amount,
            pending=command.pending,
            now=now,
            allocations=None if reversal is None else reversal.taken,
        )
        transfer = Transfer.record(
            transfer_id=command.id,
            debit_account_id=command.debit_account_id,
            credit_account_id=command.credit_account_id,
            amount=command.amount,
            unit=debit_account.unit,
            pending=command.pending,
            timeout_seconds=command.timeout_seconds,
            metadata=command.metadata,
            reversal_of=reversal_of,
            grant=grant_record,
            allocations=allocations,
        )
        recorded = transfer.pending_events[0]  # the event its position is that of
        work.add(transfer)
        if reversal is not None and reversal.back is not None:
            credit_account.credit(
                command.id,
                command.amount,
                pending=False,
                returned=reversal.back.returned,
                revived=reversal.back.revived,
            )
            self._break(work, credit_account, reversal.back.breakage, command.id, now)
        else:
            credit_account.credit(
                command.id, command.amount, pending=command.pending, grant=lot_terms
            )
        view = TransferView.of(transfer)
        # A transfer's position is that of the event recording it, the same whether it
        # is answered now or replayed later (in a batch, the commit ends at the last one).
        return lambda written: TransferOutcome(
            view, created=True, position=written.position_of_event(recorded)
        )

    def _break(
        self,
        work: Workspace,
        account: Account,
        allocations: Sequence[Allocation],
        cause_id: str,
        now: datetime,
        transfer_id: str | None = None,
    ) -> Transfer | None:
        """Move what expired lots hold to the unit's breakage account (opened on first
        use), as a balanced transfer whose id derives from ``cause_id``."""
        amount = total(allocations)
        if not amount:
            return None
        breakage = work.find_account(breakage_account_id(account.unit))
        if breakage is None:
            breakage = Account.open(
                breakage_account_id(account.unit), account.unit, False, 0, {"system": "breakage"}
            )
            work.add(breakage)
        transfer_id = transfer_id or derived_transfer_id("breakage", cause_id)
        transfer = Transfer.record(
            transfer_id=transfer_id,
            debit_account_id=account.account_id,
            credit_account_id=breakage.account_id,
            amount=amount,
            unit=account.unit,
            pending=False,
            timeout_seconds=None,
            metadata={"breakage_of": cause_id},
            allocations=tuple(allocations),
        )
        account.debit(transfer_id, amount, pending=False, now=now, allocations=allocations)
        breakage.credit(transfer_id, amount, pending=False)
        work.add(transfer)
        return transfer

    def _replay(
        self, existing: Transfer, command: RecordTransfer, reversal_of: str | None
    ) -> Callable[[Written], TransferOutcome]:
        if not existing.same_body(
            command.debit_account_id,
            command.credit_account_id,
            command.amount,
            command.pending,
            command.timeout_seconds,
            command.metadata,
            reversal_of,
            None if command.grant is None else command.grant.requested(),
        ):
            raise IdempotencyConflictError(
                f"transfer {command.id} was already recorded with a different body",
                transfer_id=command.id,
            )
        view = TransferView.of(existing)
        return lambda _: TransferOutcome(view, created=False, position=self._recorded_at(existing))

    def _recorded_at(self, transfer: Transfer) -> int:
        return self._position_of(transfer.id, Transfer.INITIAL_VERSION)

    def _position_of(self, originator_id: UUID, version: int) -> int:
        return recorded_position(self.recorder, originator_id, version)

    def post_pending(self, transfer_id: str, amount: int | None = None) -> TransferOutcome:
        return self._submit(self._post_pending_write(PostPendingTransfer(transfer_id, amount)))

    async def post_pending_async(self, command: PostPendingTransfer) -> TransferOutcome:
        """``post_pending`` for a caller on an event loop (the HTTP API), with the
        command its edge built (``checked_beyond_body``)."""
        return await self._submit_async(self._post_pending_write(command))

    def _post_pending_write(self, command: PostPendingTransfer) -> Write[TransferOutcome]:
        command = command.checked()
        transfer_id, amount = command.transfer_id, command.amount

        def apply(work: Workspace) -> Callable[[Written], TransferOutcome]:
            transfer = work.transfer(transfer_id)
            if transfer.pending and transfer.status == "posted":
                # The same post again (a retry): answered as that post left it.
                if amount is not None and amount != transfer.amount_posted:
                    raise IdempotencyConflictError(
                        f"transfer {transfer_id} was already posted with amount "
                        f"{transfer.amount_posted}, not {amount}",
                        transfer_id=transfer_id,
                    )
                return self._settled(transfer, Transfer.PendingPosted)
            posted_amount = transfer.amount if amount is None else amount
            now = self.clock()
            transfer.check_postable(posted_amount, now)
            consumed = self._settle_hold(work, transfer, posted_amount, now)
            transfer.post(posted_amount, now, consumed)
            return self._outcome(transfer)

        return Write(apply, transfer_ids=(transfer_id,), order=("post_pending", command))

    def void_pending(self, transfer_id: str) -> TransferOutcome:
        return self._submit(self._void_pending_write(VoidPendingTransfer(transfer_id)))

    async def void_pending_async(self, command: VoidPendingTransfer) -> TransferOutcome:
        """``void_pending`` for a caller on an event loop (the HTTP API), with the
        command its edge built (``checked_beyond_body``)."""
        return await self._submit_async(self._void_pending_write(command))

    def _void_pending_write(self, command: VoidPendingTransfer) -> Write[TransferOutcome]:
        transfer_id = command.checked().transfer_id

        def apply(work: Workspace) -> Callable[[Written], TransferOutcome]:
            transfer = work.transfer(transfer_id)
            if transfer.status == "voided":  # the same void again (a retry)
                return self._settled(transfer, Transfer.PendingVoided)
            now = self.clock()
            transfer.void(now)
            self._settle_hold(work, transfer, 0, now)
            return self._outcome(transfer)

        return Write(apply, transfer_ids=(transfer_id,), order=("void_pending", command))

    def expire_pending(self, transfer_id: str) -> TransferOutcome:
        """Release a hold whose timeout has passed. Safe to run twice: an expired hold
        is answered as it is, with nothing written."""
        return self._submit(self._expire_pending_write(transfer_id))

    def _expire_pending_write(self, transfer_id: str) -> Write[TransferOutcome]:
        transfer_id = check_id(transfer_id, "transfer_id")

        def apply(work: Workspace) -> Callable[[Written], TransferOutcome]:
            transfer = work.transfer(transfer_id)
            if transfer.status == "expired":
                view = TransferView.of(transfer)
                return lambda _: TransferOutcome(
                    view, created=False, position=self._position_of(transfer.id, transfer.version)
                )
            now = self.clock()
            transfer.expire(now)
            self._settle_hold(work, transfer, 0, now)
            return self._outcome(transfer)

        return Write(apply, transfer_ids=(transfer_id,), order=("expire_pending", transfer_id))

    def _settle_hold(
        self, work: Workspace, transfer: Transfer, posted_amount: int, now: datetime
    ) -> tuple[Allocation, ...]:
        """End a hold: what posts comes from the lots it reserved, in the order reserved;
        the rest goes back to them, or to breakage for lots that expired meanwhile."""
        debit_account = work.account(transfer.debit_account_id)
        credit_account = work.account(transfer.credit_account_id)
        reservations = transfer.allocations or (Allocation(GENERAL, transfer.amount),)
        settlement = debit_account.lots.plan_settlement(reservations, posted_amount, now)
        debit_account.settle_debit_hold(
            transfer.transfer_id, transfer.amount, posted_amount, settlement
        )
        credit_account.settle_credit_hold(transfer.transfer_id, transfer.amount, posted_amount)
        self._break(work, debit_account, settlement.breakage, transfer.transfer_id, now)
        return settlement.consumed

    def reverse_transfer(
        self,
        transfer_id: str,
        reversal_id: str,
        metadata: dict[str, str] | None = None,
        amount: int | None = None,
    ) -> TransferOutcome:
        """Refund a posted transfer: a new transfer, accounts swapped, linked both ways.
        A spend's reversal gives back to the lots it took from; a grant's reversal takes
        back only what is still free in its lot. ``amount`` reverses part of it."""
        metadata = {} if metadata is None else metadata
        command = RecordReversal(transfer_id, reversal_id, metadata, amount)
        return self._submit(self._reverse_transfer_write(command))

    async def reverse_transfer_async(self, command: RecordReversal) -> TransferOutcome:
        """``reverse_transfer`` for a caller on an event loop (the HTTP API), with the
        command its edge built (``checked_beyond_body``)."""
        return await self._submit_async(self._reverse_transfer_write(command))

    def _reverse_transfer_write(self, command: RecordReversal) -> Write[TransferOutcome]:
        command = command.checked()
        transfer_id, reversal_id = command.transfer_id, command.id
        checked_metadata, amount = command.metadata, command.amount

        def apply(work: Workspace) -> Callable[[Written], TransferOutcome]:
            original = work.transfer(transfer_id)
            existing = work.find_transfer(reversal_id)
            if existing is not None:
                command = RecordTransfer(
                    id=reversal_id,
                    debit_account_id=original.credit_account_id,
                    credit_account_id=original.debit_account_id,
                    amount=existing.amount if amount is None else amount,
                    metadata=checked_metadata,
                )
                return self._replay(existing, command, transfer_id)
            original.check_reversible()
            now = self.clock()
            reversal = self._plan_reversal(work, original, amount, now)
            command = RecordTransfer(
                id=reversal_id,
                debit_account_id=original.credit_account_id,
                credit_account_id=original.debit_account_id,
                amount=reversal.amount,
                metadata=checked_metadata,
            )
            finish = self._apply_transfer(work, command, reversal_of=transfer_id, reversal=reversal)
            original.mark_reversed(reversal_id)
            return finish

        return Write(
            apply,
            transfer_ids=(transfer_id, reversal_id),
            new_transfer_ids=(reversal_id,),
            order=("reverse_transfer", command),
        )

    def _plan_reversal(
        self, work: Workspace, original: Transfer, amount: int | None, now: datetime
    ) -> "_Reversal":
        wanted = original.amount_posted if amount is None else amount
        if wanted > original.amount_posted:
            raise ValidationError(
                f"cannot reverse {wanted}: transfer {original.transfer_id} moved "
                f"{original.amount_posted}",
                field="amount",
            )
        taken = None
        if original.grant is not None:
            granted_to = work.account(original.credit_account_id)
            taken = granted_to.lots.plan_claw_back(original.transfer_id, amount, now)
            wanted = total(taken)
        spender = work.account(original.debit_account_id)
        allocations = original.allocations or (Allocation(GENERAL, original.amount_posted),)
        departed = {
            a.grant_id: work.transfer(a.grant_id).departed_lot()
            for a in allocations
            if a.grant_id is not GENERAL and spender.lots.get(a.grant_id) is None
        }
        back = spender.lots.plan_return(allocations, wanted, now, departed)
        return _Reversal(wanted, taken, back)

    def expire_grant(self, grant_id: str) -> TransferOutcome | None:
        """Move an expired grant's free remainder to breakage, by the transfer
        ``expiry:<grant id>``. Safe to run twice (the second answers the first's
        transfer); None when nothing is left to move."""
        return self._submit(self._expire_grant_write(grant_id))

    def _expire_grant_write(self, grant_id: str) -> Write[TransferOutcome | None]:
        grant_id = check_id(grant_id, "grant_id")

        def apply(work: Workspace) -> Callable[[Written], TransferOutcome | None]:
            return self._expire_one(work, grant_id, self.clock())

        expiry_id = derived_transfer_id("expiry", grant_id)
        return Write(apply, transfer_ids=(grant_id, expiry_id), order=("expire_grant", grant_id))

    def expire_grants(self, due: Sequence[DueGrant]) -> list[GrantExpiry]:
        """Expire many grants (the expiry worker's batch): per grant, what
        ``expire_grant`` would answer (None also for an expiry already written), or the
        error that refused it. They are queued together as commands of
        ``EXPIRY_COMMAND_SIZE``, so that one group write holds them all. Each names the
        account its lot is in (the lots view knows): the lot there holds the terms."""
        if len(due) > GRANT_EXPIRIES_MAX:
            raise BatchTooLargeError(
                f"at most {GRANT_EXPIRIES_MAX} grants expire together, got {len(due)}"
            )
        checked = [
            DueGrant(check_id(d.grant_id, "grant_id"), check_id(d.account_id, "account_id"))
            for d in due
        ]
        writes = [
            self._expiry_write(checked[start : start + EXPIRY_COMMAND_SIZE])
            for start in range(0, len(checked), EXPIRY_COMMAND_SIZE)
        ]
        results: list[GrantExpiry] = []
        for answer in self.commands.submit_all([(write, write.units) for write in writes]):
            if isinstance(answer, BaseException):
                raise answer  # a store fault: the worker's next round tries again
            results.extend(answer)
        return results

    def _expiry_write(self, due: Sequence[DueGrant]) -> Write[list[GrantExpiry]]:
        def apply(work: Workspace) -> Callable[[Written], list[GrantExpiry]]:
            now = self.clock()
            items: list[Callable[[Written], TransferOutcome | None] | LedgerError] = []
            for item in due:
                try:
                    # Refusals come before any change: the others still share the write.
                    items.append(self._expire_due(work, item, now))
                except LedgerError as error:
                    items.append(error)
            return lambda written: [
                item if isinstance(item, LedgerError) else item(written) for item in items
            ]

        # No transfer is read: not the grants, nor the expiries (a lot with something
        # free has none yet; were one there, the store's unique stream would refuse it).
        return Write(
            apply,
            account_ids=tuple(d.account_id for d in due),
            units=len(due),
            order=("expiry", tuple(due)),
        )

    def _expire_one(
        self, work: Workspace, grant_id: str, now: datetime
    ) -> Callable[[Written], TransferOutcome | None]:
        expiry_id = derived_transfer_id("expiry", grant_id)
        existing = work.find_transfer(expiry_id)
        if existing is not None:
            view = TransferView.of(existing)
            return lambda _: TransferOutcome(
                view, created=False, position=self._recorded_at(existing)
            )
        grant = work.transfer(grant_id)
        terms = grant.lot_terms()
        if terms is None or not terms.is_expired(now):
            raise GrantNotYetExpiredError(
                f"transfer {grant_id} is not a grant that has expired by {now}",
                grant_id=grant_id,
            )
        account = work.account(grant.credit_account_id)
        return self._expire_lot(work, account, grant_id, now)

    def _expire_due(
        self, work: Workspace, due: DueGrant, now: datetime
    ) -> Callable[[Written], TransferOutcome | None]:
        """The worker's expiry of one lot, read from the account the lots view names (the
        one the grant credited): no read of the grant, and none of an expiry already
        written, since a lot that has gone or has nothing free has nothing to move (an
        expired lot's free part only ever leaves; so a view that lags behind its own
        expiries costs the worker nothing)."""
        account = work.account(due.account_id)
        lot = account.lots.get(due.grant_id)
        if lot is not None and not lot.terms.is_expired(now):
            raise GrantNotYetExpiredError(
                f"grant {due.grant_id} has not expired by {now}", grant_id=due.grant_id
            )
        return self._expire_lot(work, account, due.grant_id, now)

    def _expire_lot(
        self, work: Workspace, account: Account, grant_id: str, now: datetime
    ) -> Callable[[Written], TransferOutcome | None]:
        lot = account.lots.get(grant_id)
        if lot is None or lot.free <= 0:
            return lambda _: None
        expiry_id = derived_transfer_id("expiry", grant_id)
        moved = self._break(
            work, account, [Allocation(grant_id, lot.free)], grant_id, now, expiry_id
        )
        assert moved is not None
        view = TransferView.of(moved)
        return lambda written: TransferOutcome(
            view, created=True, position=written.position_of(moved.id, Transfer.INITIAL_VERSION)
        )

    def get_transfer(self, transfer_id: str) -> TransferView:
        transfer_id = check_id(transfer_id, "transfer_id")
        return TransferView.of(self._read_transfer(transfer_id))

    def _read_transfer(self, transfer_id: str) -> Transfer:
        try:
            transfer: Transfer = self.transfers.get(transfer_uuid(transfer_id))
        except AggregateNotFoundError:
            raise TransferNotFoundError(
                f"transfer {transfer_id} does not exist", transfer_id=transfer_id
            ) from None
        return transfer

    def transfer_position(self, transfer_id: str) -> int:
        """The log position at which the transfer was recorded."""
        transfer_id = check_id(transfer_id, "transfer_id")
        return self._recorded_at(self._read_transfer(transfer_id))

    def _settled(
        self, transfer: Transfer, settled_by: type[Any]
    ) -> Callable[[Written], TransferOutcome]:
        """A retried post or void: the transfer as it is, at the position of the event
        that settled it (nothing is written). That event is looked up once the group is
        written: an earlier command of the same group may have settled it."""
        view = TransferView.of(transfer)
        topic = get_topic(settled_by)

        def position() -> int:
            for stored in self.recorder.select_events(transfer.id):
                if stored.topic == topic:
                    return self._position_of(transfer.id, stored.originator_version)
            raise LookupError(f"transfer {transfer.transfer_id} has no {topic} event stored")

        return lambda _: TransferOutcome(view, created=False, position=position())

    def _outcome(self, transfer: Transfer) -> Callable[[Written], TransferOutcome]:
        view = TransferView.of(transfer)
        return lambda written: TransferOutcome(view, created=False, position=written.commit)

    # The writer's side -----------------------------------------------------------------

    def _submit(self, write: Write[R]) -> R:
        result: R = self.commands.submit(write, write.units)
        return result

    def _submit_async(self, write: Write[R]) -> Coroutine[Any, Any, R]:
        """The committer's answer to ``write``, to await on the event loop: its own
        coroutine, not one more layer that every wake-up of the caller runs through."""
        answer: Coroutine[Any, Any, R] = self.commands.submit_async(write, write.units)
        return answer

    def _write_group(self, group: list[Pending[Any]]) -> list[Pending[Any]]:
        """Run and record one group (the committer's writer thread). Returns the
        commands that must run again in a later group (their streams moved).

        A group with nothing to prepare (no other writer seen lately, no contended
        stream, no command that lost a race: nearly every group of a lone process) is
        run, recorded and answered in one lean pass, without the layers that prepare a
        contended write (``_prepared``); a group that meets a conflict goes on through
        them."""
        later: list[Pending[Any]] = []
        taken = group  # the committer's own list: only it may grow (the committer answers
        # every entry of it when a write raises). Its store calls end when the last of
        # its callers stops waiting, so that the writer is free by then too.
        outer = enter_store_deadline(max([entry.deadline for entry in group]))
        try:
            if self._nothing_to_prepare(group):
                _COLLECTOR_PAUSES.enter()
                try:
                    group = self._attempt_group(group, later)
                finally:
                    _COLLECTOR_PAUSES.leave()
            while group:
                with (
                    self._prepared(group, top_up=group is taken),
                    collector_paused(),  # not while waiting for the lock: others run then
                ):
                    group = self._attempt_group(group, later)
        finally:
            leave_store_deadline(outer)
            self._loaded.clear()
        return later

    def _nothing_to_prepare(self, group: list[Pending[Any]]) -> bool:
        """Whether ``_prepared`` would do nothing for this group: no lock to take (no
        contended stream, no command that lost a race) and no catch-up to read."""
        if self._write_locking is not None and self._contends(group):
            return False
        return not self._others_write() or self._follows_log()

    @contextlib.contextmanager
    def _prepared(self, group: list[Pending[Any]], *, top_up: bool) -> Iterator[None]:
        """Make the group's write unlikely or unable to lose a race (decision 0018).

        The writer trusts its cache, which is right while it is the only writer. Once
        it has seen another process write (a lost race, or a stream found moved), it
        first catches the group's cached streams up with the store, in one query. And
        it holds the store's write lock from before that read to its commit when the
        group touches a stream another process has been writing at the same time, or
        one of its commands already lost a race: then no write of the group can lose
        one. It waits for the lock at most until the group's earliest deadline."""
        timeout_seconds = min(entry.deadline for entry in group) - time.monotonic()
        if self._write_locking is None or timeout_seconds <= 0 or not self._contends(group):
            if self._others_write() and not self._follows_log():
                self._catch_up(group, locked=False)
            yield
            return
        # The group's uncached accounts are loaded before the lock is asked for, so that
        # the lock's holder reads only what moved since (one query), not whole streams.
        self.load_aggregates(_account_streams(group))
        # The lock's round trip also reads what moved in the group's cached streams.
        with self._write_locking.write_lock(timeout_seconds, self._cached_versions(group)) as held:
            if held:
                self.locked_writes += 1
                if top_up:  # what queued while we waited for the lock shares this write
                    self.committer.top_up(group)
            self._catch_up(group, locked=held)
            yield

    def _cached_versions(self, group: list[Pending[Any]]) -> dict[UUID, int]:
        return {i: self._written.get(i).version for i in _stream_ids(group) if i in self._written}

    def _contends(self, group: list[Pending[Any]]) -> bool:
        for entry in group:
            if entry.conflicts >= LOCK_AFTER_CONFLICTS:
                return True
        if not self._contended:
            return False
        now = time.monotonic()
        self._contended = {i: until for i, until in self._contended.items() if until > now}
        return not self._contended.keys().isdisjoint(_stream_ids(group))

    def _catch_up(self, group: list[Pending[Any]], *, locked: bool) -> None:
        """Bring the cached streams of the group that others moved up to the store's head
        (one query for the events after each cached version). Under the lock, a
        contended stream that moved again is still being written by another process: it
        stays contended. A stream that was merely stale (another process wrote it once,
        a while ago) is caught up and stays uncontended: with several processes writing
        accounts spread over many, nearly every group holds one stale stream, and
        marking those would spread the lock to groups that no process contends."""
        cached = {i: self._written.get(i) for i in _stream_ids(group) if i in self._written}
        newer = events_after(self.recorder, {i: a.version for i, a in cached.items()})
        if newer is None:
            if not locked:  # no bulk read: a conflict is cheaper than a read per stream
                return
            newer = {i: [] for i in self._moved(cached)}  # reloaded when next read
        if newer:
            self._saw_others()
        if locked:  # contended, or raced once lately: moving again, it is contended
            now = time.monotonic()
            self._mark_contended(
                i
                for i, stored_events in newer.items()
                if self._contended.get(i, 0) > now or self._moved_again(i, stored_events, now)
            )
        for originator_id, stored_events in newer.items():
            aggregate: Any = cached[originator_id]
            for stored in stored_events:
                event: Any = self.mapper.to_domain_event(stored)
                aggregate = event.mutate(aggregate)
            if stored_events:
                self._written.put(aggregate)
            else:
                self.evict(originator_id)

    def _follows_log(self) -> bool:
        """Whether each write brings back what others wrote before it (decision 0027):
        then the cache is caught up after each write, not by a read before each group."""
        return self._log_follower is not None and self._log_follower.follows_log()

    def _follow_others(self) -> dict[UUID, int]:
        """Apply what other writers committed before this write, which its round trip
        brought back (decision 0027), to the cached streams it continues; a cached stream
        it skips past is evicted (reloaded at its next use). When more came than a write
        brings back, the writer lost track of what is stale: it starts a new cache.
        Returns the newest version brought back of each stream."""
        if self._log_follower is None:
            return {}
        others = self._log_follower.others_written()
        if others is None:
            self._written = WriterCache(maxsize=AGGREGATE_CACHE_SIZE)
            self._saw_others()
            return {}
        brought: dict[UUID, int] = {}
        if not others:
            return brought
        self._saw_others()
        cache = self._written
        for stored in others:
            originator_id = stored.originator_id
            if not isinstance(originator_id, UUID):
                continue
            brought[originator_id] = stored.originator_version
            if originator_id not in cache:
                continue
            aggregate: Any = cache.get(originator_id)
            if stored.originator_version <= aggregate.version:
                continue  # read after it was written
            if stored.originator_version != aggregate.version + 1:
                self.evict(originator_id)
                continue
            event: Any = self.mapper.to_domain_event(stored)
            cache.put(event.mutate(aggregate))
        return brought

    def _gather_seconds(self) -> float:
        """How long a group may wait for the callers the last one answered
        (``Committer._gathered``). On SQLite and PostgreSQL, always: each group's
        write costs about the same however few commands it holds (SQLite: this
        process's CPU, which its callers' event loop needs too; PostgreSQL: the
        server's commit and the writer's planning), decision 0014's eleventh addendum
        and its PostgreSQL addendum. Elsewhere writes of several processes wait for
        each other only where the store has a write lock (decision 0018): there, while
        others write."""
        if not self._gathers_alone and (self._write_locking is None or not self._others_write()):
            return 0.0
        recent = self.committer.write_seconds
        return min(GATHER_SECONDS_MAX, recent[-1] if recent else 0.0)

    def _saw_others(self) -> None:
        self._others_seen_until = time.monotonic() + OTHER_WRITERS_SECONDS

    def _others_write(self) -> bool:
        """Whether another process was seen writing lately (``OTHER_WRITERS_SECONDS``)."""
        return time.monotonic() < self._others_seen_until

    def _moved(self, cached: dict[UUID, Aggregate]) -> list[UUID]:
        heads = stream_heads(self.recorder, list(cached))
        return [i for i, aggregate in cached.items() if heads.get(i) != aggregate.version]

    def _mark_contended(self, originator_ids: Iterable[UUID]) -> None:
        until = time.monotonic() + CONTENDED_SECONDS
        for originator_id in originator_ids:
            self._contended[originator_id] = until

    def _moved_again(self, originator_id: UUID, newer: list[StoredEvent], now: float) -> bool:
        """Whether a stream raced once lately has moved past the version its lost race
        found it at. A backend that does not follow the log (SQLite) keeps a group's
        stale copy after the race: the locked rerun then finds the same move again, which
        is not another one. Without the events (``newer`` empty: no bulk read), it is
        taken as moved again."""
        raced = self._raced_once.get(originator_id)
        if raced is None or raced.until <= now:
            return False
        return not newer or raced.head is None or newer[-1].originator_version > raced.head

    def _lost_race_on(self, originator_ids: AbstractSet[UUID], heads: Mapping[UUID, int]) -> None:
        """Another process moved these streams past what a command read (a lost race).
        A stream becomes contended at its second such finding within
        ``CONTENDED_SECONDS``, or when the locked rerun of the command that lost finds it
        moved again (``_catch_up``): one lost race says only that the cached copy was
        stale. With several processes writing accounts spread over many, every account
        is written by each of them now and then, and a race lost once on it, marking it
        contended, locked every group that touched it for a second; caught up under the
        lock it was found moved again, and stayed so (docs/benchmarks.md, tenth session).
        The command that lost still runs again under the lock (``LOCK_AFTER_CONFLICTS``)."""
        if not originator_ids:
            return
        now = time.monotonic()
        raced_once = {i: raced for i, raced in self._raced_once.items() if raced.until > now}
        again = [i for i in originator_ids if i in raced_once or self._contended.get(i, 0) > now]
        self._mark_contended(again)
        until = now + CONTENDED_SECONDS
        for originator_id in originator_ids:
            raced_once[originator_id] = RacedOnce(until, heads.get(originator_id))
        self._raced_once = raced_once

    def _attempt_group(
        self, group: list[Pending[Any]], later: list[Pending[Any]]
    ) -> list[Pending[Any]]:
        """One store write for the group. Returns the commands to write again at once
        (those a conflict did not concern); adds those that must wait to ``later``."""
        # Once other processes write, a lost race is likely enough that the group keeps
        # what it read: a failed write then puts it back and catches up (one query)
        # instead of reading each of its accounts again from its snapshot.
        work = Workspace(self, keep_bases=self._catches_up and self._others_write())
        try:
            ran = self._run_group(work, group, later)
            events = work.collect_events()
        except BaseException:
            # The cache holds what the group's commands changed (and their pending
            # events): never written, so never to be written by a later group.
            self._forget(work)
            raise
        if events:
            mark_commit(events)  # the log says where this write's commit ends
            try:
                written = self._record_events(events)
            except IntegrityError:
                kept = work.restore_bases()
                self._forget(work, keep=kept)
                brought = self._follow_others()
                return self._after_conflict(work, ran, later, kept, brought)
            except BaseException:
                self._forget(work)
                raise
        else:
            written = Written()
        self._remember(work)
        self._loaded.clear()  # written: what the group read is in the cache as it is now
        self._follow_others()  # nothing it brings back concerns this group: it won
        # Rejections are answered only now: they may rest on what earlier commands of
        # the group did, which is final only once written.
        self.committer.answering()
        for r in ran:
            self._answer(r, written)
        self._snapshot_accounts(work)
        return []

    def _run_group(
        self, work: Workspace, group: list[Pending[Any]], later: list[Pending[Any]]
    ) -> list[_Ran]:
        """Run the group's commands on ``work``; those whose rejection rests on a stream
        that moved since go to ``later``. Returns the rest."""
        account_ids: list[str] = []
        transfer_ids: list[str] = []
        new_transfer_ids: list[str] = []
        for entry in group:
            command = entry.command
            account_ids += command.account_ids
            transfer_ids += command.transfer_ids
            new_transfer_ids += command.new_transfer_ids
        work.prefetch(account_ids, transfer_ids, new_transfer_ids)
        if self.lean_groups:
            ran = self._run_commands(work, group)
        else:
            ran = [self._run_command(work, entry) for entry in group]
        rejected = [r for r in ran if r.rejection is not None]
        if rejected:
            # A rejection must rest on fresh state: if a stream it read has moved since
            # (another process wrote it), the command runs again instead.
            moved = self._moved_streams(work, set().union(*(r.reads for r in rejected)))
            for r in rejected:
                if not r.reads & moved:
                    continue
                if self._may_retry(r.entry):
                    later.append(r.entry)
                else:  # never the refusal it met on state that has moved since
                    r.rejection = self._gave_up(r.entry)
            ran = [r for r in ran if r.entry not in later]
        return ran

    def _run_commands(self, work: Workspace, group: list[Pending[Any]]) -> list[_Ran]:
        """Run the group's commands in order: each run of single plain transfers in one
        pass (``lean_transfers``), any command that pass cannot decide, and every other
        command, the ordinary way (``_run_command``)."""
        ran: list[_Ran] = []
        stamps = Stamps(utc_now)
        index, size = 0, len(group)
        while index < size:
            end = index
            while end < size and group[end].command.plain is not None:
                end += 1
            if end > index:
                commands = [entry.command.plain for entry in group[index:end]]
                planned = lean_transfers(work, commands, stamps)
                for entry, (finish, reads) in zip(group[index:end], planned, strict=False):
                    ran.append(_Ran(entry, reads, finish=finish))
                index += len(planned)
            if index < size:  # not a single transfer, or one the pass could not decide
                ran.append(self._run_command(work, group[index], stamps))
                index += 1
        return ran

    def _record_events(self, events: Sequence[Any]) -> Written:
        """One store write of the events (what ``EventStore.put`` does, without building
        a ``Recording`` and a ``Notification`` per event that nothing here reads)."""
        mapper = self.mapper
        stored: Sequence[StoredEvent]
        if not isinstance(mapper, ChainedMapper):  # never (construct_mapper)
            stored = [mapper.to_stored_event(event) for event in events]
        elif self._binds_rows:  # the SQLite recorder: the rows it binds, made in one loop
            stored = mapper.to_stored_rows(events)
        else:
            stored = mapper.to_stored_events(events)
        return Written(events, self.recorder.insert_events(stored))

    def _run_command(
        self, work: Workspace, entry: Pending[Any], stamps: Stamps | None = None
    ) -> _Ran:
        work.begin()
        try:
            # The command's time stamp is read before any of its checks reads the
            # ledger's clock: with the wall clock, a spend allowed before a lot's expiry
            # is stamped before it too (the audit's exact expiry check rests on this).
            with command_time(utc_now() if stamps is None else stamps()):
                finish = entry.command.apply(work)
        except LedgerError as error:
            work.rollback()
            return _Ran(entry, work.reads, rejection=error)
        return _Ran(entry, work.reads, finish=finish)

    def _answer(self, ran: _Ran, written: Written) -> None:
        if ran.rejection is not None:
            ran.entry.fail(ran.rejection)
            return
        assert ran.finish is not None
        try:
            ran.entry.answer(ran.finish(written))
        except (LookupError, PersistenceError) as error:
            # Committed, but its position could not be read back: the caller may resend.
            ran.entry.fail(
                OutcomeUnknownError(
                    f"the write committed but its position could not be read ({error!r}); "
                    "sending the same request again is safe"
                )
            )

    def _after_conflict(
        self,
        work: Workspace,
        ran: list[_Ran],
        later: list[Pending[Any]],
        kept: AbstractSet[UUID] = frozenset(),
        brought: Mapping[UUID, int] | None = None,
    ) -> list[Pending[Any]]:
        """Another process wrote some of the group's streams first. The commands that
        read them (or that came after one of those on a shared stream) run again later;
        the rest are written again at once. Moved streams in ``kept`` (cached as the
        group read them) stay cached: the next group catches them up. ``brought``: what
        the failed write brought back (decision 0027), which tells the moved streams
        without a read when it concerns the group."""
        moved = self._moved_by_others(work, brought or {})
        if moved is None:
            moved = self._moved_streams(work, set(work.base_versions), keep=kept)
        if moved and moved <= work.presumed:
            # Only new ids that existed after all (resent commands): no other writer
            # raced this group. Every command runs again now; those ids are read this time.
            return self._still_awaited([r.entry for r in ran])
        self.conflicts += 1
        tainted: set[UUID] = set()
        again_now: list[Pending[Any]] = []
        for r in ran:
            if not moved or r.reads & (moved | tainted):
                tainted |= r.reads
                if self._may_retry(r.entry):
                    later.append(r.entry)
                else:
                    r.entry.fail(self._gave_up(r.entry))
            else:
                again_now.append(r.entry)
        return self._still_awaited(again_now)

    def _still_awaited(self, entries: list[Pending[Any]]) -> list[Pending[Any]]:
        """Of the commands to write again at once, those whose caller's deadline has not
        passed. The others' callers were answered ``outcome_unknown`` at their deadline
        (the writer had taken their commands), or are about to be: such a command may be
        written or not, and it is not, so that no write is made for callers who all
        stopped waiting. A caller still listening hears ``write_timeout``: nothing of
        its command was written."""
        now, timeout = time.monotonic(), self.committer.timeout_seconds
        return [entry for entry in entries if not entry.fail_if_expired(now, timeout)]

    def _may_retry(self, entry: Pending[Any]) -> bool:
        entry.conflicts += 1
        self.most_races_lost = max(self.most_races_lost, entry.conflicts)
        return entry.conflicts <= CONFLICT_RETRIES_MAX and not entry.expired(time.monotonic())

    def _gave_up(self, entry: Pending[Any]) -> ConcurrencyConflictError:
        """The answer of a command that lost a race (a conflict, or a rejection resting
        on a stream another process moved) and may not run again: its retry budget or
        its deadline ran out. Nothing of it was written, and what fresh state would have
        answered is not known, so neither a success nor the refusal it met on stale
        state: a conflict, which a resend (always safe) settles."""
        spent = "no retry left" if entry.conflicts > CONFLICT_RETRIES_MAX else "deadline passed"
        return ConcurrencyConflictError(
            f"other processes kept changing what this command reads: gave up after "
            f"{entry.conflicts} lost races ({spent}); nothing was written, and sending "
            "the same command again is safe"
        )

    def _moved_by_others(self, work: Workspace, brought: Mapping[UUID, int]) -> set[UUID] | None:
        """The group's streams that other writers moved past what it read, from what its
        failed write brought back (already applied to the cache: ``_follow_others``).
        None when none of it concerns the group (an id that existed before this writer's
        last write, a writer that lost track): then the store is asked
        (``_moved_streams``)."""
        moved = {
            i
            for i, base in work.base_versions.items()
            if i in brought and (base is None or brought[i] > base)
        }
        if not moved:
            return None
        existing = moved & work.presumed
        self.remember_existing(existing)
        self._lost_race_on(moved - existing, brought)
        return moved

    def _moved_streams(
        self,
        work: Workspace,
        originator_ids: Iterable[UUID],
        keep: AbstractSet[UUID] = frozenset(),
    ) -> set[UUID]:
        """Which of these streams the store now holds at another version than the group
        first read (those are evicted: their next use reloads them; those in ``keep``
        stay cached as first read, and the next group catches them up)."""
        ids = list(originator_ids)
        heads = stream_heads(self.recorder, ids)
        moved = {i for i in ids if heads.get(i) != work.base_versions.get(i)}
        for originator_id in moved - keep:
            self.evict(originator_id)
        # A new id presumed absent that exists is a resent command, not another writer.
        existing = moved & work.presumed
        self.remember_existing(existing)
        raced = moved - existing
        self._lost_race_on(raced, heads)
        if raced:
            self._saw_others()
        return moved

    # The writer's cache ----------------------------------------------------------------

    def load_aggregate(self, originator_id: UUID) -> Aggregate | None:
        try:
            aggregate: Aggregate = self._written.get(originator_id)
        except KeyError:
            try:
                aggregate = self._loader.get(originator_id)
            except AggregateNotFoundError:
                return None
            self._read_from_store(aggregate)
        return aggregate

    def load_aggregates(self, originator_ids: list[UUID]) -> dict[UUID, Aggregate]:
        """Those of these aggregates that exist: from the cache, the rest from the store
        in two queries for all of them where the backend allows it."""
        found: dict[UUID, Aggregate] = {}
        uncached: list[UUID] = []
        for originator_id in originator_ids:
            try:
                found[originator_id] = self._written.get(originator_id)
            except KeyError:
                uncached.append(originator_id)
        if not uncached:
            return found
        # Read together even when there is one (where the backend allows it): two
        # queries in one transaction cost less than the library's repository, which
        # reads a stream's snapshot and its events in a transaction each (about 0.75 of
        # its CPU for one account, half for two or three; docs/benchmarks.md).
        snapshots = None if self.snapshots is None else self.snapshots.recorder
        streams = read_streams(self.recorder, snapshots, uncached)
        if streams is None:
            for originator_id in uncached:
                aggregate = self.load_aggregate(originator_id)
                if aggregate is not None:
                    found[originator_id] = aggregate
            return found
        for originator_id, stream in streams.items():
            folded = self._fold(stream)
            if folded is not None:
                found[originator_id] = folded
                self._read_from_store(folded)
        return found

    def _read_from_store(self, aggregate: Aggregate) -> None:
        """A cache miss the writer read (and folded): cached, and imaged for ``_forget``."""
        self._written.put(aggregate)
        self._loaded[aggregate.id] = (aggregate, image_of(aggregate))

    def _fold(self, stream: StoredStream) -> Aggregate | None:
        aggregate: Any = None
        if stream.snapshot is not None:
            snapshot: Any = self.mapper.to_domain_event(stream.snapshot)
            aggregate = snapshot.mutate(None)
        for stored in stream.events:
            event: Any = self.mapper.to_domain_event(stored)
            aggregate = event.mutate(aggregate)
        if len(stream.events) >= ACCOUNT_SNAPSHOT_INTERVAL and isinstance(aggregate, Account):
            self._owe_snapshots([aggregate])
        return cast(Aggregate | None, aggregate)

    def _owe_snapshots(self, accounts: Sequence[Account]) -> None:
        """These accounts are snapshotted by the next group that holds them (bounded:
        past ``SNAPSHOTS_OWED_MAX`` the debts are forgotten, and those accounts wait for
        their next interval)."""
        owed = self._snapshots_owed
        if len(owed) + len(accounts) > SNAPSHOTS_OWED_MAX:
            owed.clear()
        owed.update(account.id for account in accounts)

    def remember_existing(self, originator_ids: set[UUID]) -> None:
        """New ids the store refused because they exist: read, not presumed, next time.
        Bounded: past ``FOUND_EXISTING_MAX``, only these latest ones are kept."""
        self._found_existing |= originator_ids
        if len(self._found_existing) > FOUND_EXISTING_MAX:
            self._found_existing = set(originator_ids)

    def presumed_absent(self, originator_ids: list[UUID]) -> set[UUID]:
        """Those of these new ids to take as absent without asking the store: not
        cached, and not found to exist by an earlier attempt (which are read instead)."""
        presumed = set(self._written.uncached(originator_ids))
        if self._found_existing:
            presumed -= self._found_existing
            self._found_existing -= set(originator_ids)
        return presumed

    def absent_streams(self, originator_ids: list[UUID]) -> set[UUID] | None:
        uncached = self._written.uncached(originator_ids)
        if not uncached:
            return set()
        existing = existing_streams(self.recorder, uncached)
        if existing is None:
            return None
        return set(uncached) - existing

    def evict(self, originator_id: UUID) -> None:
        self._written.evict(originator_id)

    def _forget(self, work: Workspace, keep: AbstractSet[UUID] = frozenset()) -> None:
        """A failed write leaves the workspace's aggregates ahead of the store (but those
        in ``keep``, put back as the group first read them): they are let go. Those the
        group read from the store are put back as read and stay cached: the store held
        them so whatever the write's fate (a later write's expected version catches any
        staleness), and a group whose write failed because reading them took its time
        (a store deadline) would otherwise leave the next group the same reads to make,
        and fail the same way, group after group."""
        loaded, self._loaded = self._loaded, {}
        for aggregate in work.aggregates():
            if aggregate.id not in keep and aggregate.id not in loaded:
                self.evict(aggregate.id)
        for aggregate, image in loaded.values():
            restore_image(aggregate, image)
            self._written.put(aggregate)

    def _remember(self, work: Workspace) -> None:
        """The group's new aggregates join the cache (every other one it holds came from
        the cache, or was put there when loaded)."""
        self._written.put_all(work.created())

    def _snapshot_accounts(self, work: Workspace) -> None:
        """After the commit and the answers: a snapshot is an optimisation, so a failed
        one is counted and logged, never reported to a caller whose write committed."""
        if self.snapshots is None:
            return
        base_versions, owed = work.base_versions, self._snapshots_owed
        due = [
            account
            for account in work.accounts.values()
            if account.version // ACCOUNT_SNAPSHOT_INTERVAL
            > (base_versions.get(account.id) or 0) // ACCOUNT_SNAPSHOT_INTERVAL
            or (owed and account.id in owed)  # an account held is as the store holds it
        ]
        size = SNAPSHOTS_PER_WRITE_MAX if writes_streams_together(self.snapshots.recorder) else 1
        for start in range(0, len(due), size):
            accounts = due[start : start + size]
            left = seconds_left()
            if left is not None and left <= 0:
                # The group's callers stopped waiting: no snapshot keeps the writer from
                # the next writes (the next group that holds each account takes it).
                self.snapshot_failures += len(accounts)
                self._owe_snapshots(accounts)
                continue
            if owed:  # taken now (or refused by the store: then at the next interval)
                owed.difference_update(account.id for account in accounts)
            try:
                self.snapshots.put([Account.Snapshot.take(account) for account in accounts])
            except PersistenceError as error:
                self.snapshot_failures += len(accounts)
                log.warning(
                    "snapshots of %d accounts failed (%s first): %r",
                    len(accounts),
                    accounts[0].account_id,
                    error,
                )


class _Reversal:
    """What a reversal moves: ``amount``; from which lots of the reversing account when
    they are prescribed (a grant's claw back: ``taken``); back to which lots of the
    original spender (``back``)."""

    def __init__(self, amount: int, taken: tuple[Allocation, ...] | None, back: Return) -> None:
        self.amount = amount
        self.taken = taken
        self.back = back


class _CollectorPauses:
    """The pauses of the cyclic garbage collector now held, by any thread: the collector
    is switched off by the first and back on by the last (if it was on before the first).
    ``gc.disable`` is process-wide, and both the writer and the catch-up runner pause it:
    a pause that ended while another thread's went on must not switch it back on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = 0
        self._was_enabled = False

    def enter(self) -> None:
        with self._lock:
            if self._held == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._held += 1

    def leave(self) -> None:
        with self._lock:
            self._held -= 1
            if self._held == 0 and self._was_enabled:
                gc.enable()

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc_info: object) -> None:
        self.leave()


_COLLECTOR_PAUSES: Final = _CollectorPauses()


def collector_paused() -> "_CollectorPauses":
    """Python's cyclic garbage collector held off for one group write, and run after it.

    A group write allocates tens of thousands of small containers (events, their field
    dicts, records), nearly all of which survive it (cached aggregates) or are freed by
    reference counting: none of them is cyclic garbage. Left on, the collector starts a
    young-generation pass every 700 of them and regularly a full pass over every object
    of the process, the writer's cache of 20,000 aggregates included: a quarter of the
    CPU of a batch of 1,000 transfers (docs/benchmarks.md). Held off, the allocations
    are still counted, so the collector runs once right after the write; cycles made
    meanwhile (by any thread) are collected then. Pauses are counted across threads
    (``_CollectorPauses``): the collector comes back when the last one ends."""
    # The shared counter is itself the context manager (entered and left once per
    # pause): a generator-based one would cost four more Python calls per group.
    return _COLLECTOR_PAUSES


def _account_streams(group: list[Pending[Any]]) -> list[UUID]:
    """The accounts a group's commands say they will read, once each."""
    ids = (account_uuid(i) for entry in group for i in entry.command.account_ids)
    return list(dict.fromkeys(ids))


def _stream_ids(group: list[Pending[Any]]) -> set[UUID]:
    """The streams a group's commands say they will read."""
    ids = set(_account_streams(group))
    ids.update(transfer_uuid(i) for entry in group for i in entry.command.transfer_ids)
    return ids


def _account_ids(commands: Sequence[RecordTransfer]) -> list[str]:
    ids: list[str] = []
    for command in commands:
        ids += [command.debit_account_id, command.credit_account_id]
    return ids


def _check_batch_size(commands: Sequence[RecordTransfer]) -> None:
    if len(commands) > limits.BATCH_SIZE_MAX:
        raise BatchTooLargeError(
            f"a batch holds at most {limits.BATCH_SIZE_MAX} transfers, got {len(commands)}"
        )
    if not commands:
        raise ValidationError("a batch needs at least one transfer", field="transfers")


def _batch_outcome(
    size: int,
    refused: Mapping[int, LedgerError],
    writes: Mapping[int, Write[TransferOutcome]],
    answers: Sequence[Any],
) -> BatchOutcome:
    """An independent batch's answer, item by item, in order.

    Its items may be written by several group writes (a batch joins a queue that others
    share), so a store fault may fail some items after others committed. Then each item
    says what happened to it: its transfer, its refusal, or its own fault (``store_fault``:
    ``store_unavailable``, ``storage_full``; an error that names no store fault, logged,
    is ``outcome_unknown``). Only when no item committed is the fault the whole batch's
    answer, as for a single transfer."""
    results: dict[int, TransferOutcome | Exception] = dict(refused)
    faults: dict[int, BaseException] = {}
    for index, answer in zip(writes, answers, strict=True):
        if isinstance(answer, BaseException) and (
            not isinstance(answer, LedgerError) or isinstance(answer, STORE_FAULT_ANSWERS)
        ):
            # A store fault, not a rejection of this item: raw in process, already
            # typed when it came from the writer process (decision 0035).
            faults[index] = answer
        else:
            results[index] = answer
    if faults:
        if not any(isinstance(result, TransferOutcome) for result in results.values()):
            raise next(iter(faults.values()))
        for index, fault in faults.items():
            results[index] = _item_fault(fault)
    return BatchOutcome([results[index] for index in range(size)])


def _item_fault(fault: BaseException) -> LedgerError:
    typed = store_fault(fault)
    if typed is not None:
        return typed
    log.error("batch item failed with an unexpected error", exc_info=fault)
    return OutcomeUnknownError(
        f"the write failed unexpectedly ({type(fault).__name__}); it may or may not have "
        "been recorded: sending the same item again is safe"
    )
