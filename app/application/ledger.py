"""The Ledger application service: one method per command, each ONE atomic write.

Every command runs as an attempt on freshly loaded aggregates: it checks everything
first, then triggers events, then saves every touched aggregate in a single
``Application.save`` — one transaction on SQL, one multi-stream append on KurrentDB —
with optimistic concurrency on every stream. A conflict (another writer got there
first) throws the attempt away and runs it again on the new state, a bounded number
of times with jittered backoff. Because nothing is written until the whole command
has passed its checks, a rejection leaves nothing behind.
"""

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    EventStore,
    IntegrityError,
    JSONTranscoder,
    ProgrammingError,
    Recording,
)
from eventsourcing.persistence import IntegrityError as PersistenceIntegrityError
from eventsourcing.persistence import InternalError as PersistenceInternalError

from app.application.commands import OpenAccount, RecordTransfer
from app.application.views import (
    AccountOutcome,
    AccountView,
    BatchOutcome,
    TransferOutcome,
    TransferView,
)
from app.domain import limits
from app.domain.account import Account, term_record
from app.domain.chain import command_time
from app.domain.errors import (
    AccountNotFoundError,
    BatchRejectedError,
    BatchTooLargeError,
    ConcurrencyConflictError,
    GrantNotYetExpiredError,
    IdempotencyConflictError,
    LedgerError,
    TransferNotFoundError,
    UnitMismatchError,
    ValidationError,
)
from app.domain.lots import GENERAL, Allocation, LotBook, LotTerms, Return, total
from app.domain.transfer import Transfer
from app.domain.values import (
    account_uuid,
    breakage_account_id,
    check_amount,
    check_id,
    check_metadata,
    derived_transfer_id,
    transfer_uuid,
)
from app.persistence.positions import existing_streams, recorded_position
from app.persistence.transcodings import register_domain_transcodings

R = TypeVar("R")

# Contention on one hot account can make many writers collide; each retry reloads the
# fresh state (a cache fast-forward), so the cost of a retry is small. Retries are
# bounded by time (and, as a backstop, by count).
RETRY_DEADLINE_SECONDS: Final = 30.0
RETRY_ATTEMPTS_MAX: Final = 10_000
LOCK_STRIPES: Final = 256
SCHEMA_ATTEMPTS_MAX: Final = 5
RETRY_BACKOFF_BASE_SECONDS: Final = 0.001
RETRY_BACKOFF_CAP_SECONDS: Final = 0.05
# A hot account replays at most this many events after its newest snapshot when it is
# not in the cache (e.g. right after a restart).
ACCOUNT_SNAPSHOT_INTERVAL: Final = 500
AGGREGATE_CACHE_SIZE: Final = 20_000
# Below this many new ids, reading each is as cheap as asking for them together.
PREFETCH_MIN: Final = 8


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


class Written:
    """Where a command's write landed: its commit position (the last event's) and the
    position of each stream's last event in it."""

    def __init__(self, recordings: Iterable[Recording[UUID]]) -> None:
        self._positions: dict[UUID, int] = {}
        for recording in recordings:
            self._positions[recording.domain_event.originator_id] = recording.notification.id

    @property
    def commit(self) -> int:
        assert self._positions, "a command that wrote must have a position"
        return max(self._positions.values())

    def position_of(self, originator_id: UUID) -> int:
        return self._positions[originator_id]


class _Attempt:
    """The aggregates one attempt of one command has loaded or created, saved together."""

    def __init__(self, ledger: "Ledger") -> None:
        self.ledger = ledger
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Transfer | None] = {}
        # What this attempt read, as it read it: stream id → version (None: absent).
        self.read_versions: dict[UUID, int | None] = {}
        # Set when an item of a non-atomic batch was refused (the batch itself goes on).
        self.rejected = False

    def is_stale(self) -> bool:
        """Whether any stream this attempt read has changed since it read it."""
        for originator_id, version in self.read_versions.items():
            newer = self.ledger.events.get(originator_id, gt=version, limit=1)
            if next(iter(newer), None) is not None:
                return True
        return False

    def account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            try:
                account = self.ledger.repository.get(account_uuid(account_id))
            except AggregateNotFoundError:
                self.read_versions[account_uuid(account_id)] = None
                raise AccountNotFoundError(
                    f"account {account_id} does not exist", account_id=account_id
                ) from None
            self.accounts[account_id] = account
            self.read_versions[account.id] = account.version
        return account

    def find_account(self, account_id: str) -> Account | None:
        try:
            return self.account(account_id)
        except AccountNotFoundError:
            return None

    def find_transfer(self, transfer_id: str) -> Transfer | None:
        if transfer_id not in self.transfers:
            transfer: Transfer | None
            try:
                transfer = self.ledger.transfers.get(transfer_uuid(transfer_id))
            except AggregateNotFoundError:
                transfer = None
            self.transfers[transfer_id] = transfer
            self.read_versions[transfer_uuid(transfer_id)] = (
                None if transfer is None else transfer.version
            )
        return self.transfers[transfer_id]

    def prefetch_absent_transfers(self, transfer_ids: Sequence[str]) -> None:
        """One query tells which of a batch's ids are new, instead of one read each."""
        unknown = [t for t in dict.fromkeys(transfer_ids) if t not in self.transfers]
        if len(unknown) < PREFETCH_MIN:
            return
        existing = existing_streams(self.ledger.recorder, [transfer_uuid(t) for t in unknown])
        if existing is None:
            return
        for transfer_id in unknown:
            if transfer_uuid(transfer_id) not in existing:
                self.transfers[transfer_id] = None
                self.read_versions[transfer_uuid(transfer_id)] = None

    def transfer(self, transfer_id: str) -> Transfer:
        transfer = self.find_transfer(transfer_id)
        if transfer is None:
            raise TransferNotFoundError(
                f"transfer {transfer_id} does not exist", transfer_id=transfer_id
            )
        return transfer

    def aggregates(self) -> list[Account | Transfer]:
        touched: list[Account | Transfer] = list(self.accounts.values())
        touched.extend(t for t in self.transfers.values() if t is not None)
        return touched


class Ledger(Application[UUID]):
    name = "ledger"
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE_SIZE),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Account: ACCOUNT_SNAPSHOT_INTERVAL}

    def __init__(
        self, env: dict[str, str] | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self._stripes = KeyStripes()
        self._groups = TransferGroups(self._record_group)
        # Transfers are never snapshotted (a handful of events each): a repository
        # without the snapshot store saves one read per transfer lookup.
        self.transfers: Repository[UUID] = Repository(
            event_store=self.events, cache_maxsize=AGGREGATE_CACHE_SIZE
        )

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    def construct_recorder(self) -> ApplicationRecorder:
        return _retrying_schema_race(super().construct_recorder)

    def construct_snapshot_store(self) -> EventStore[UUID]:
        return _retrying_schema_race(super().construct_snapshot_store)

    # Accounts --------------------------------------------------------------------------

    def open_account(self, command: OpenAccount) -> AccountOutcome:
        command = command.checked()

        def attempt(work: _Attempt) -> Callable[[Written], AccountOutcome]:
            existing = work.find_account(command.id)
            if existing is not None:
                if not existing.same_opening(
                    command.unit,
                    command.allow_negative,
                    command.overdraft_limit,
                    command.metadata,
                ):
                    raise IdempotencyConflictError(
                        f"account {command.id} already exists with a different body",
                        account_id=command.id,
                    )
                view = AccountView.of(existing, now=self.clock())
                return lambda _: AccountOutcome(
                    view, created=False, position=self._position_of(existing.id, 0)
                )
            account = Account.open(
                command.id,
                command.unit,
                command.allow_negative,
                command.overdraft_limit,
                command.metadata,
            )
            work.accounts[command.id] = account
            view = AccountView.of(account, now=self.clock())
            return lambda written: AccountOutcome(view, created=True, position=written.commit)

        return self._run(attempt, [command.id])

    def close_account(self, account_id: str) -> AccountOutcome:
        account_id = check_id(account_id, "account_id")

        def attempt(work: _Attempt) -> Callable[[Written], AccountOutcome]:
            account = work.account(account_id)
            already_closed = account.status == "closed"
            account.close()
            view = AccountView.of(account, now=self.clock())
            if already_closed:
                return lambda _: AccountOutcome(
                    view, created=False, position=self._position_of(account.id, account.version)
                )
            return lambda written: AccountOutcome(view, created=False, position=written.commit)

        return self._run(attempt, [account_id])

    def get_account(self, account_id: str) -> AccountView:
        """The account as its own stream says now (the write side; views come from
        projections)."""
        account_id = check_id(account_id, "account_id")
        return AccountView.of(_Attempt(self).account(account_id), now=self.clock())

    def account_lots(self, account_id: str) -> LotBook:
        """The account's live lots as its own stream says now (a copy)."""
        account_id = check_id(account_id, "account_id")
        return _Attempt(self).account(account_id).lots

    def get_account_at_version(self, account_id: str, version: int) -> AccountView:
        account_id = check_id(account_id, "account_id")
        try:
            account: Account = self.repository.get(account_uuid(account_id), version=version)
        except AggregateNotFoundError:
            raise AccountNotFoundError(
                f"account {account_id} does not exist", account_id=account_id
            ) from None
        return AccountView.of(account, now=self.clock())

    # Transfers -------------------------------------------------------------------------

    def record_transfer(self, command: RecordTransfer) -> TransferOutcome:
        """Record one transfer. Concurrent calls in this process are group-committed:
        the ones that arrive while a write is in flight share the next write, each
        still all-or-nothing on its own (see ``TransferGroups``)."""
        command = command.checked()
        return self._groups.submit(command)

    def _record_group(self, commands: Sequence[RecordTransfer]) -> BatchOutcome:
        return self._record_independent_batch(commands)

    def record_batch(self, commands: Sequence[RecordTransfer], *, atomic: bool) -> BatchOutcome:
        if len(commands) > limits.BATCH_SIZE_MAX:
            raise BatchTooLargeError(
                f"a batch holds at most {limits.BATCH_SIZE_MAX} transfers, got {len(commands)}"
            )
        if not commands:
            raise ValidationError("a batch needs at least one transfer", field="transfers")
        if atomic:
            return self._record_atomic_batch(commands)
        return self._record_independent_batch(commands)

    def _record_atomic_batch(self, commands: Sequence[RecordTransfer]) -> BatchOutcome:
        checked: list[RecordTransfer] = []
        for index, command in enumerate(commands):
            try:
                checked.append(command.checked())
            except LedgerError as error:
                raise BatchRejectedError(index, error) from None

        def attempt(work: _Attempt) -> Callable[[Written], BatchOutcome]:
            work.prefetch_absent_transfers([command.id for command in checked])
            finishers = []
            for index, command in enumerate(checked):
                try:
                    finishers.append(self._apply_transfer(work, command))
                except LedgerError as error:
                    raise BatchRejectedError(index, error) from None
            return lambda written: BatchOutcome([finish(written) for finish in finishers])

        return self._run(attempt, _account_keys(checked))

    def _record_independent_batch(self, commands: Sequence[RecordTransfer]) -> BatchOutcome:
        # Items are applied in order on one set of aggregates; an item that fails its
        # checks changes nothing (checks run before any event), so the survivors can
        # still share a single write.
        def attempt(work: _Attempt) -> Callable[[Written], BatchOutcome]:
            work.prefetch_absent_transfers(
                [command.id for command in commands if isinstance(command.id, str)]
            )
            items: list[Callable[[Written], TransferOutcome] | LedgerError] = []
            for command in commands:
                try:
                    items.append(self._apply_transfer(work, command.checked()))
                except LedgerError as error:
                    items.append(error)
                    work.rejected = True
            return lambda written: BatchOutcome(
                [item if isinstance(item, LedgerError) else item(written) for item in items]
            )

        return self._run(attempt, _account_keys(commands))

    def _apply_transfer(
        self,
        work: _Attempt,
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
        debit_account.check_debit(command.amount, now)
        credit_account.check_credit(command.amount)
        lot_terms = grant_record = None
        if command.grant is not None:
            credit_account.check_grant(command.id, command.amount)
            lot_terms = LotTerms(
                expires_at=command.grant.expires_at,
                effective_at=command.grant.effective_at or now,
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
        work.transfers[command.id] = transfer
        view = TransferView.of(transfer)
        # A transfer's position is that of the event recording it, the same whether it
        # is answered now or replayed later (in a batch, the commit ends at the last one).
        return lambda written: TransferOutcome(
            view, created=True, position=written.position_of(transfer.id)
        )

    def _break(
        self,
        work: _Attempt,
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
            work.accounts[breakage.account_id] = breakage
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
        work.transfers[transfer_id] = transfer
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
        transfer_id = check_id(transfer_id, "transfer_id")
        if amount is not None:
            amount = check_amount(amount)

        def attempt(work: _Attempt) -> Callable[[Written], TransferOutcome]:
            transfer = work.transfer(transfer_id)
            posted_amount = transfer.amount if amount is None else amount
            now = self.clock()
            transfer.check_postable(posted_amount, now)
            consumed = self._settle_hold(work, transfer, posted_amount, now)
            transfer.post(posted_amount, now, consumed)
            return self._outcome(transfer)

        return self._run(attempt, [transfer_id])

    def void_pending(self, transfer_id: str) -> TransferOutcome:
        transfer_id = check_id(transfer_id, "transfer_id")

        def attempt(work: _Attempt) -> Callable[[Written], TransferOutcome]:
            transfer = work.transfer(transfer_id)
            now = self.clock()
            transfer.void(now)
            self._settle_hold(work, transfer, 0, now)
            return self._outcome(transfer)

        return self._run(attempt, [transfer_id])

    def expire_pending(self, transfer_id: str) -> TransferOutcome:
        """Release a hold whose timeout has passed. Safe to run twice: an expired hold
        is answered as it is, with nothing written."""
        transfer_id = check_id(transfer_id, "transfer_id")

        def attempt(work: _Attempt) -> Callable[[Written], TransferOutcome]:
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

        return self._run(attempt, [transfer_id])

    def _settle_hold(
        self, work: _Attempt, transfer: Transfer, posted_amount: int, now: datetime
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
        transfer_id = check_id(transfer_id, "transfer_id")
        reversal_id = check_id(reversal_id, "id")
        checked_metadata = check_metadata(metadata)
        if amount is not None:
            amount = check_amount(amount)

        def attempt(work: _Attempt) -> Callable[[Written], TransferOutcome]:
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

        return self._run(attempt, [transfer_id, reversal_id])

    def _plan_reversal(
        self, work: _Attempt, original: Transfer, amount: int | None, now: datetime
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
        grant_id = check_id(grant_id, "grant_id")
        expiry_id = derived_transfer_id("expiry", grant_id)

        def attempt(work: _Attempt) -> Callable[[Written], TransferOutcome | None]:
            existing = work.find_transfer(expiry_id)
            if existing is not None:
                view = TransferView.of(existing)
                return lambda _: TransferOutcome(
                    view, created=False, position=self._recorded_at(existing)
                )
            grant = work.transfer(grant_id)
            terms = grant.lot_terms()
            now = self.clock()
            if terms is None or not terms.is_expired(now):
                raise GrantNotYetExpiredError(
                    f"transfer {grant_id} is not a grant that has expired by {now}",
                    grant_id=grant_id,
                )
            account = work.account(grant.credit_account_id)
            lot = account.lots.get(grant_id)
            if lot is None or lot.free <= 0:
                return lambda _: None
            moved = self._break(
                work, account, [Allocation(grant_id, lot.free)], grant_id, now, expiry_id
            )
            assert moved is not None
            view = TransferView.of(moved)
            return lambda written: TransferOutcome(
                view, created=True, position=written.position_of(moved.id)
            )

        return self._run(attempt, [grant_id, expiry_id])

    def get_transfer(self, transfer_id: str) -> TransferView:
        transfer_id = check_id(transfer_id, "transfer_id")
        return TransferView.of(_Attempt(self).transfer(transfer_id))

    def transfer_position(self, transfer_id: str) -> int:
        """The log position at which the transfer was recorded."""
        transfer_id = check_id(transfer_id, "transfer_id")
        return self._recorded_at(_Attempt(self).transfer(transfer_id))

    def _outcome(self, transfer: Transfer) -> Callable[[Written], TransferOutcome]:
        view = TransferView.of(transfer)
        return lambda written: TransferOutcome(view, created=False, position=written.commit)

    # The retry loop --------------------------------------------------------------------

    def _run(
        self, attempt: Callable[[_Attempt], Callable[[Written], R]], keys: Iterable[str] = ()
    ) -> R:
        # Commands of this process on the same accounts take turns (striped locks), so
        # a hot account's conflicts come only from other processes; those are retried.
        with self._stripes.holding(keys):
            deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
            for attempt_number in range(RETRY_ATTEMPTS_MAX):
                work = _Attempt(self)
                try:
                    with command_time(utc_now()):
                        finish = attempt(work)
                    if work.rejected and work.is_stale() and time.monotonic() < deadline:
                        continue  # an item was refused on reads that have since moved
                except LedgerError:
                    # A rejection must rest on one consistent state. If anything this
                    # attempt read has moved since, its reads may straddle another
                    # write (e.g. a concurrent identical transfer): run it again.
                    if work.is_stale() and time.monotonic() < deadline:
                        continue
                    raise
                try:
                    recordings = self.save(*work.aggregates())
                except IntegrityError:
                    # Another writer moved one of our streams: redo it all on fresh state.
                    if time.monotonic() > deadline:
                        break
                    _backoff(attempt_number)
                    continue
                return finish(Written(recordings))
        raise ConcurrencyConflictError(
            f"gave up after {RETRY_DEADLINE_SECONDS}s of conflicting attempts; "
            "sending the same command again is safe"
        )


class _Reversal:
    """What a reversal moves: ``amount``; from which lots of the reversing account when
    they are prescribed (a grant's claw back: ``taken``); back to which lots of the
    original spender (``back``)."""

    def __init__(self, amount: int, taken: tuple[Allocation, ...] | None, back: Return) -> None:
        self.amount = amount
        self.taken = taken
        self.back = back


class TransferGroups:
    """Group commit for concurrent single transfers.

    The first caller becomes the leader and writes what is pending; callers that
    arrive meanwhile queue up and the leader writes them together next, as one
    non-atomic batch (each transfer all-or-nothing, one store write for all). Under
    no concurrency a group is one transfer: nothing waits for a timer.
    """

    def __init__(self, write: Callable[[Sequence[RecordTransfer]], BatchOutcome]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._pending: list[tuple[RecordTransfer, Future[TransferOutcome]]] = []
        self._leading = False

    def submit(self, command: RecordTransfer) -> TransferOutcome:
        future: Future[TransferOutcome] = Future()
        with self._lock:
            self._pending.append((command, future))
            if self._leading:
                leader = False
            else:
                self._leading = leader = True
        if leader:
            self._lead()
        return future.result()

    def _lead(self) -> None:
        while True:
            with self._lock:
                group = self._pending[: limits.BATCH_SIZE_MAX]
                del self._pending[: limits.BATCH_SIZE_MAX]
                if not group:
                    self._leading = False
                    return
            self._write_group(group)

    def _write_group(self, group: list[tuple[RecordTransfer, Future[TransferOutcome]]]) -> None:
        try:
            outcome = self._write([command for command, _ in group])
        except BaseException as error:  # noqa: BLE001  # handed to every waiter of the group
            for _, future in group:
                future.set_exception(error)
            return
        for (_, future), result in zip(group, outcome.results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class KeyStripes:
    """A fixed set of locks; a command holds the stripes of its keys, in index order
    (so two commands can never wait on each other in a cycle)."""

    def __init__(self, count: int = LOCK_STRIPES) -> None:
        self._locks = [threading.Lock() for _ in range(count)]

    @contextmanager
    def holding(self, keys: Iterable[str]) -> Iterator[None]:
        indexes = sorted({hash(key) % len(self._locks) for key in keys if isinstance(key, str)})
        with ExitStack() as stack:
            for index in indexes:
                stack.enter_context(self._locks[index])
            yield


def _retrying_schema_race(construct: Callable[[], R]) -> R:
    """Processes starting together on a new PostgreSQL database race to create the same
    tables (``CREATE … IF NOT EXISTS`` is not atomic in the catalog: "tuple concurrently
    updated"). The loser tries again and finds the tables there."""
    for attempt_number in range(SCHEMA_ATTEMPTS_MAX):
        try:
            return construct()
        except (PersistenceInternalError, PersistenceIntegrityError, ProgrammingError):
            if attempt_number == SCHEMA_ATTEMPTS_MAX - 1:
                raise
            time.sleep(0.05 * (attempt_number + 1))
    raise AssertionError("unreachable")


def _account_keys(commands: Sequence[RecordTransfer]) -> list[str]:
    keys: list[str] = []
    for command in commands:
        keys += [command.debit_account_id, command.credit_account_id]
    return keys


def _backoff(attempt_number: int) -> None:
    ceiling = min(RETRY_BACKOFF_CAP_SECONDS, RETRY_BACKOFF_BASE_SECONDS * 2**attempt_number)
    time.sleep(random.uniform(0, ceiling))
