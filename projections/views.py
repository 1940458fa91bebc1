"""The ledger's read models, in SQLite or PostgreSQL, each written in the same
transaction as its tracking record (exactly-once).

One view database holds four views that one projection keeps together:
- ``balances``: current balances per account and the position they reflect;
- ``entries``: one statement line per balance-changing event, carrying the counters
  *after* the event — this is also the balance history: an as-of query is one index
  lookup (``ORDER BY position DESC LIMIT 1``), O(log n) whatever the history length;
- ``transfers``: the transfers index, for lookup, listing and expiry;
- the library's tracking table: the checkpoint.

The SQL is shared by both backends; ``?`` placeholders are rewritten for psycopg.
"""

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from app.domain.account import Account, BalanceDelta, DerivedBalances, line_allocations
from app.domain.lots import Allocation
from app.domain.transfer import Transfer
from projections.lots import (
    LOT_INDEXES,
    LOT_SCHEMA,
    LOT_TABLES,
    LotPage,
    LotStatusFilter,
    account_lots,
    apply_lot_moves,
    due_grant_expiries,
    unspendable_free,
)

APPLICATION_NAME: Final = "ledger"
PAGE_SIZE_MAX: Final = 1000
WAIT_POLL_SECONDS_MIN: Final = 0.002
WAIT_POLL_SECONDS_MAX: Final = 0.05

TABLES: Final = ("balances", "entries", "transfers", "commits", *LOT_TABLES)

SCHEMA: Final = [
    """CREATE TABLE IF NOT EXISTS {balances} (
        account_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL UNIQUE,
        unit TEXT NOT NULL,
        status TEXT NOT NULL,
        allow_negative BOOLEAN NOT NULL,
        overdraft_limit BIGINT NOT NULL,
        metadata TEXT NOT NULL,
        debits_posted BIGINT NOT NULL,
        credits_posted BIGINT NOT NULL,
        debits_pending BIGINT NOT NULL,
        credits_pending BIGINT NOT NULL,
        opened_position BIGINT NOT NULL,
        opened_at TEXT NOT NULL,
        closed_position BIGINT,
        closed_at TEXT,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {entries} (
        account_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        transfer_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        debits_posted_delta BIGINT NOT NULL,
        credits_posted_delta BIGINT NOT NULL,
        debits_pending_delta BIGINT NOT NULL,
        credits_pending_delta BIGINT NOT NULL,
        debits_posted BIGINT NOT NULL,
        credits_posted BIGINT NOT NULL,
        debits_pending BIGINT NOT NULL,
        credits_pending BIGINT NOT NULL,
        recorded_at TEXT NOT NULL,
        allocations TEXT,
        PRIMARY KEY (account_id, position)
    )""",
    "CREATE INDEX IF NOT EXISTS {entries_by_time_index} "
    "ON {entries} (account_id, recorded_at, position)",
    """CREATE TABLE IF NOT EXISTS {transfers} (
        transfer_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL UNIQUE,
        debit_account_id TEXT NOT NULL,
        credit_account_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        unit TEXT NOT NULL,
        pending BOOLEAN NOT NULL,
        timeout_seconds BIGINT,
        expires_at TEXT,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        amount_posted BIGINT NOT NULL,
        reversal_of TEXT,
        reversed_by TEXT,
        recorded_at TEXT NOT NULL,
        position BIGINT NOT NULL,
        updated_position BIGINT NOT NULL,
        grant_terms TEXT,
        allocations TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS {transfers_by_debit_index} "
    "ON {transfers} (debit_account_id, position)",
    "CREATE INDEX IF NOT EXISTS {transfers_by_credit_index} "
    "ON {transfers} (credit_account_id, position)",
    "CREATE INDEX IF NOT EXISTS {transfers_by_position_index} ON {transfers} (position)",
    "CREATE INDEX IF NOT EXISTS {transfers_due_index} ON {transfers} (status, expires_at)",
    # Where commits end, which the log does not say: a command's events share one time
    # and sit together in the log, so a run of events with one time is one commit.
    """CREATE TABLE IF NOT EXISTS {commits} (
        start_position BIGINT PRIMARY KEY,
        end_position BIGINT NOT NULL,
        recorded_at TEXT NOT NULL
    )""",
    *LOT_SCHEMA,
]


def timestamp_text(moment: datetime) -> str:
    """Fixed-width UTC text: sorts as time does, on both backends."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class BalanceRow(DerivedBalances):
    account_id: str
    unit: str
    status: str
    allow_negative: bool
    overdraft_limit: int
    metadata: dict[str, str]
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    position: int
    updated_at: datetime
    # Credit lots that are in the balance but not spendable (future or expired), free part.
    unspendable: int = 0

    @property
    def available(self) -> int:
        return self.balance - self.debits_pending - self.unspendable


@dataclass(frozen=True)
class EntryRow(DerivedBalances):
    account_id: str
    position: int
    transfer_id: str
    kind: str
    amount: int
    counterparty_id: str | None
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    recorded_at: datetime
    metadata: dict[str, str]
    allocations: tuple[Allocation, ...] = ()  # the lots this line moved, signed


@dataclass(frozen=True)
class TransferRow:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    pending: bool
    timeout_seconds: int | None
    expires_at: datetime | None
    metadata: dict[str, str]
    status: str
    amount_posted: int
    reversal_of: str | None
    reversed_by: str | None
    recorded_at: datetime
    position: int
    updated_position: int
    grant: dict[str, Any] | None = None
    allocations: tuple[Allocation, ...] = ()


class Cursor(Protocol):
    def execute(self, statement: Any, params: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


def entry_amount(delta: BalanceDelta) -> int:
    """A statement line's signed amount: what it did to the posted balance, or for a
    line that only reserves or releases, to the pending amount on its side."""
    if delta.balance:
        return delta.balance
    return delta.credits_pending - delta.debits_pending


class LedgerViewMixin:
    """Everything backend-neutral: applying events and answering queries."""

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _sql(self, statement: str) -> Any:
        raise NotImplementedError

    def _insert_tracking_in(self, cursor: Cursor, tracking: Tracking) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # provided by the library's tracking recorder we are mixed into

        def max_tracking_id(self, application_name: str) -> int | None: ...

    def _run(self, cursor: Cursor, statement: str, params: Sequence[Any] = ()) -> None:
        cursor.execute(self._sql(statement), tuple(params))

    def _one(self, statement: str, params: Sequence[Any] = ()) -> Any:
        with self._transaction(commit=False) as cursor:
            self._run(cursor, statement, params)
            return cursor.fetchone()

    def _all(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._transaction(commit=False) as cursor:
            self._run(cursor, statement, params)
            return list(cursor.fetchall())

    # Writing ---------------------------------------------------------------------------

    def apply_event(self, event: object, tracking: Tracking) -> None:
        """Apply one event and record its tracking, in one transaction."""
        self.apply_events([(event, tracking)])

    def apply_events(self, batch: Sequence[tuple[object, Tracking]]) -> None:
        """Apply consecutive events and record the last one's tracking, in one
        transaction: all of them are applied exactly once, or none is."""
        if not batch:
            return
        try:
            with self._transaction(commit=True) as cursor:
                for event, tracking in batch:
                    self._apply(cursor, event, tracking.notification_id)
                self._insert_tracking_in(cursor, batch[-1][1])
        except BaseException:
            self._open_commit = None  # what was cached may not have been written
            raise

    # The newest commit run (start position, time), kept between events by the one
    # worker that writes this view; dropped whenever a transaction fails.
    _open_commit: tuple[int, str] | None = None

    def _track_commit(self, cursor: Cursor, event: Any, position: int) -> None:
        at = timestamp_text(event.timestamp)
        if self._open_commit is None:
            self._run(
                cursor,
                "SELECT start_position, recorded_at FROM {commits} "
                "ORDER BY start_position DESC LIMIT 1",
            )
            last = cursor.fetchone()
            if last is not None:
                self._open_commit = (int(last["start_position"]), last["recorded_at"])
        if self._open_commit is not None and self._open_commit[1] == at:
            self._run(
                cursor,
                "UPDATE {commits} SET end_position = ? WHERE start_position = ?",
                [position, self._open_commit[0]],
            )
        else:
            self._run(
                cursor,
                "INSERT INTO {commits} (start_position, end_position, recorded_at) "
                "VALUES (?, ?, ?)",
                [position, position, at],
            )
            self._open_commit = (position, at)

    def commit_end(self, position: int) -> int:
        """The last position of the commit that ``position`` falls in (as far as the
        view has seen it); ``position`` itself between commits."""
        row = self._one(
            "SELECT end_position FROM {commits} WHERE start_position <= ? "
            "ORDER BY start_position DESC LIMIT 1",
            [position],
        )
        return position if row is None else max(position, int(row["end_position"]))

    def _apply(self, cursor: Cursor, event: object, position: int) -> None:
        if hasattr(event, "timestamp"):
            self._track_commit(cursor, event, position)
        if isinstance(event, Account.BalanceChanged):
            self._apply_balance_change(cursor, event, position)
        elif isinstance(event, Transfer.TransferRecorded):
            self._insert_transfer(cursor, event, position)
        elif isinstance(event, Transfer.Event):
            self._update_transfer(cursor, event, position)
        elif isinstance(event, Account.Opened):
            self._insert_account(cursor, event, position)
        elif isinstance(event, Account.Closed):
            at = timestamp_text(event.timestamp)
            self._run(
                cursor,
                "UPDATE {balances} SET status = 'closed', closed_position = ?, closed_at = ?, "
                "position = ?, updated_at = ? WHERE stream_id = ?",
                [position, at, position, at, event.originator_id.hex],
            )

    def _insert_account(self, cursor: Cursor, event: Account.Opened, position: int) -> None:
        at = timestamp_text(event.timestamp)
        self._run(
            cursor,
            "INSERT INTO {balances} (account_id, stream_id, unit, status, allow_negative, "
            "overdraft_limit, metadata, debits_posted, credits_posted, debits_pending, "
            "credits_pending, opened_position, opened_at, position, updated_at) "
            "VALUES (?, ?, ?, 'open', ?, ?, ?, 0, 0, 0, 0, ?, ?, ?, ?)",
            [
                event.account_id,
                event.originator_id.hex,
                event.unit,
                event.allow_negative,
                event.overdraft_limit,
                json.dumps(event.metadata),
                position,
                at,
                position,
                at,
            ],
        )

    def _apply_balance_change(
        self, cursor: Cursor, event: Account.BalanceChanged, position: int
    ) -> None:
        self._run(
            cursor,
            "SELECT account_id, debits_posted, credits_posted, debits_pending, credits_pending "
            "FROM {balances} WHERE stream_id = ?",
            [event.originator_id.hex],
        )
        row = cursor.fetchone()
        assert row is not None, f"balance change before opening: {event.originator_id}"
        delta = event.delta()
        after = (
            row["debits_posted"] + delta.debits_posted,
            row["credits_posted"] + delta.credits_posted,
            row["debits_pending"] + delta.debits_pending,
            row["credits_pending"] + delta.credits_pending,
        )
        # The second half of the pair of assertions (TigerBeetle style): counters the
        # write path checked must still be sane when folded here.
        assert min(after) >= 0, (row["account_id"], after)
        at = timestamp_text(event.timestamp)
        self._run(
            cursor,
            "UPDATE {balances} SET debits_posted = ?, credits_posted = ?, debits_pending = ?, "
            "credits_pending = ?, position = ?, updated_at = ? WHERE stream_id = ?",
            [*after, position, at, event.originator_id.hex],
        )
        self._run(
            cursor,
            "INSERT INTO {entries} (account_id, position, transfer_id, kind, "
            "debits_posted_delta, credits_posted_delta, debits_pending_delta, "
            "credits_pending_delta, debits_posted, credits_posted, debits_pending, "
            "credits_pending, recorded_at, allocations) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                row["account_id"],
                position,
                event.transfer_id,
                type(event).__name__,
                delta.debits_posted,
                delta.credits_posted,
                delta.debits_pending,
                delta.credits_pending,
                *after,
                at,
                _json_or_null(line_allocations(event)),
            ],
        )
        apply_lot_moves(self, cursor, event, position, row["account_id"], at)

    def _insert_transfer(
        self, cursor: Cursor, event: Transfer.TransferRecorded, position: int
    ) -> None:
        expires_at = None
        if event.pending and event.timeout_seconds is not None:
            expires_at = timestamp_text(event.timestamp + timedelta(seconds=event.timeout_seconds))
        self._run(
            cursor,
            "INSERT INTO {transfers} (transfer_id, stream_id, debit_account_id, "
            "credit_account_id, amount, unit, pending, timeout_seconds, expires_at, metadata, "
            "status, amount_posted, reversal_of, recorded_at, position, updated_position, "
            "grant_terms, allocations) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                event.transfer_id,
                event.originator_id.hex,
                event.debit_account_id,
                event.credit_account_id,
                event.amount,
                event.unit,
                event.pending,
                event.timeout_seconds,
                expires_at,
                json.dumps(event.metadata),
                "pending" if event.pending else "posted",
                0 if event.pending else event.amount,
                event.reversal_of,
                timestamp_text(event.timestamp),
                position,
                position,
                None if event.grant is None else json.dumps(event.grant, default=_time_text),
                None if event.allocations is None else json.dumps(event.allocations),
            ],
        )
        if event.reversal_of is not None:
            # The original's own Reversed event comes in the same commit; setting the
            # link here too keeps the index right at every position of that commit.
            self._run(
                cursor,
                "UPDATE {transfers} SET reversed_by = ? WHERE transfer_id = ?",
                [event.transfer_id, event.reversal_of],
            )

    def _update_transfer(self, cursor: Cursor, event: Transfer.Event, position: int) -> None:
        stream_id = event.originator_id.hex
        if isinstance(event, Transfer.PendingPosted):
            statement = "status = 'posted', amount_posted = ?, allocations = ?"
            allocations = None if event.allocations is None else json.dumps(event.allocations)
            params: list[Any] = [event.amount, allocations]
        elif isinstance(event, Transfer.PendingVoided):
            statement, params = "status = 'voided'", []
        elif isinstance(event, Transfer.PendingExpired):
            statement, params = "status = 'expired'", []
        elif isinstance(event, Transfer.Reversed):
            statement, params = "reversed_by = ?", [event.reversal_id]
        else:
            return
        self._run(
            cursor,
            f"UPDATE {{transfers}} SET {statement}, updated_position = ? WHERE stream_id = ?",
            [*params, position, stream_id],
        )

    # Reading ---------------------------------------------------------------------------

    def checkpoint(self) -> int:
        return self.max_tracking_id(APPLICATION_NAME) or 0

    def wait_for(self, position: int, timeout_seconds: float) -> bool:
        """Block until the view has applied ``position`` (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout_seconds
        interval = WAIT_POLL_SECONDS_MIN
        while self.checkpoint() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, WAIT_POLL_SECONDS_MAX)
        return True

    def balance(self, account_id: str) -> BalanceRow | None:
        row = self._one("SELECT * FROM {balances} WHERE account_id = ?", [account_id])
        if row is None:
            return None
        balance = _balance_row(row, row, row["position"], row["updated_at"])
        return self._with_lots(balance, datetime.now(tz=UTC))

    def balance_at_position(self, account_id: str, position: int) -> BalanceRow | None:
        """The account as it stood after every event at or before ``position``."""
        account = self._one("SELECT * FROM {balances} WHERE account_id = ?", [account_id])
        if account is None or account["opened_position"] > position:
            return None
        entry = self._one(
            "SELECT * FROM {entries} WHERE account_id = ? AND position <= ? "
            "ORDER BY position DESC LIMIT 1",
            [account_id, position],
        )
        balance = _as_of(account, entry, position, closed=_closed_by(account, position=position))
        at = self.time_at_position(position) or balance.updated_at
        return self._with_lots(balance, at, position=position)

    def balance_as_of(self, account_id: str, moment: datetime) -> BalanceRow | None:
        """The account as it stood at ``moment`` (by the events' recorded time)."""
        at = timestamp_text(moment)
        account = self._one("SELECT * FROM {balances} WHERE account_id = ?", [account_id])
        if account is None or account["opened_at"] > at:
            return None
        entry = self._one(
            "SELECT * FROM {entries} WHERE account_id = ? AND recorded_at <= ? "
            "ORDER BY recorded_at DESC, position DESC LIMIT 1",
            [account_id, at],
        )
        closed = account["closed_at"] is not None and account["closed_at"] <= at
        position = max(
            entry["position"] if entry else account["opened_position"],
            account["closed_position"] if closed else 0,
        )
        return self._with_lots(
            _as_of(account, entry, position, closed=closed), moment, moment=moment
        )

    def _with_lots(
        self,
        balance: BalanceRow,
        at: datetime,
        *,
        position: int | None = None,
        moment: datetime | None = None,
    ) -> BalanceRow:
        """``available`` as spending saw it at ``at``: without unspendable lots."""
        unspendable = unspendable_free(
            self, balance.account_id, at, position=position, moment=moment
        )
        return replace(balance, unspendable=unspendable) if unspendable else balance

    def entries(
        self,
        account_id: str,
        *,
        before_position: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[EntryRow]:
        """Statement lines, newest first; ``before_position`` is the page cursor."""
        conditions, params = ["e.account_id = ?"], [account_id]
        if before_position is not None:
            conditions.append("e.position < ?")
            params.append(before_position)  # type: ignore[arg-type]
        if since is not None:
            conditions.append("e.recorded_at >= ?")
            params.append(timestamp_text(since))
        if until is not None:
            conditions.append("e.recorded_at < ?")
            params.append(timestamp_text(until))
        rows = self._all(
            "SELECT e.*, t.debit_account_id, t.credit_account_id, t.metadata "
            "FROM {entries} e LEFT JOIN {transfers} t ON t.transfer_id = e.transfer_id "
            f"WHERE {' AND '.join(conditions)} ORDER BY e.position DESC LIMIT ?",
            [*params, min(limit, PAGE_SIZE_MAX)],
        )
        return [_entry_row(row) for row in rows]

    def transfer(self, transfer_id: str) -> TransferRow | None:
        row = self._one("SELECT * FROM {transfers} WHERE transfer_id = ?", [transfer_id])
        return None if row is None else _transfer_row(row)

    def transfers(
        self,
        *,
        account_id: str | None = None,
        before_position: int | None = None,
        limit: int = 100,
    ) -> list[TransferRow]:
        conditions: list[str] = []
        params: list[Any] = []
        if account_id is not None:
            conditions.append("(debit_account_id = ? OR credit_account_id = ?)")
            params += [account_id, account_id]
        if before_position is not None:
            conditions.append("position < ?")
            params.append(before_position)
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        rows = self._all(
            f"SELECT * FROM {{transfers}} {where}ORDER BY position DESC LIMIT ?",
            [*params, min(limit, PAGE_SIZE_MAX)],
        )
        return [_transfer_row(row) for row in rows]

    def due_expiries(self, now: datetime, limit: int) -> list[str]:
        rows = self._all(
            "SELECT transfer_id FROM {transfers} WHERE status = 'pending' "
            "AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            [timestamp_text(now), limit],
        )
        return [row["transfer_id"] for row in rows]

    def lots(
        self,
        account_id: str,
        *,
        status: LotStatusFilter,
        at: datetime,
        position: int | None = None,
        moment: datetime | None = None,
        after_position: int | None = None,
        limit: int = 100,
    ) -> LotPage:
        """The account's credit lots (projections/lots.py)."""
        return account_lots(
            self,
            account_id,
            status=status,
            at=at,
            position=position,
            moment=moment,
            after_position=after_position,
            limit=limit,
        )

    def time_at_position(self, position: int) -> datetime | None:
        """When the commit holding ``position`` was recorded (None before the first)."""
        row = self._one(
            "SELECT recorded_at FROM {commits} WHERE start_position <= ? "
            "ORDER BY start_position DESC LIMIT 1",
            [position],
        )
        return None if row is None else parse_timestamp(row["recorded_at"])

    def due_grant_expiries(self, now: datetime, limit: int, after: str | None = None) -> list[str]:
        return due_grant_expiries(self, now, limit, after)

    def transfer_page(self, after_id: str, limit: int) -> list[TransferRow]:
        """Transfers in id order after ``after_id``: for audits that walk the index."""
        rows = self._all(
            "SELECT * FROM {transfers} WHERE transfer_id > ? ORDER BY transfer_id LIMIT ?",
            [after_id, min(limit, PAGE_SIZE_MAX)],
        )
        return [_transfer_row(row) for row in rows]

    def entry_counts(self) -> dict[str, int]:
        rows = self._all("SELECT account_id, COUNT(*) AS n FROM {entries} GROUP BY account_id")
        return {row["account_id"]: int(row["n"]) for row in rows}

    def all_balances(self) -> Iterator[BalanceRow]:
        """Every account, in id order, page by page (constant memory)."""
        after = ""
        while True:
            rows = self._all(
                "SELECT * FROM {balances} WHERE account_id > ? ORDER BY account_id LIMIT ?",
                [after, PAGE_SIZE_MAX],
            )
            for row in rows:
                yield _balance_row(row, row, row["position"], row["updated_at"])
            if len(rows) < PAGE_SIZE_MAX:
                return
            after = rows[-1]["account_id"]


def _closed_by(account: Any, *, position: int) -> bool:
    return account["closed_position"] is not None and account["closed_position"] <= position


def _as_of(account: Any, entry: Any, position: int, *, closed: bool) -> BalanceRow:
    counters = entry if entry is not None else _ZERO_COUNTERS
    updated_at = entry["recorded_at"] if entry is not None else account["opened_at"]
    row = _balance_row(account, counters, position, updated_at)
    return BalanceRow(**{**row.__dict__, "status": "closed" if closed else "open"})


_ZERO_COUNTERS: Final = {
    "debits_posted": 0,
    "credits_posted": 0,
    "debits_pending": 0,
    "credits_pending": 0,
}


def _balance_row(account: Any, counters: Any, position: int, updated_at: str) -> BalanceRow:
    return BalanceRow(
        account_id=account["account_id"],
        unit=account["unit"],
        status=account["status"],
        allow_negative=bool(account["allow_negative"]),
        overdraft_limit=int(account["overdraft_limit"]),
        metadata=json.loads(account["metadata"]),
        debits_posted=int(counters["debits_posted"]),
        credits_posted=int(counters["credits_posted"]),
        debits_pending=int(counters["debits_pending"]),
        credits_pending=int(counters["credits_pending"]),
        position=int(position),
        updated_at=parse_timestamp(updated_at),
    )


def _entry_row(row: Any) -> EntryRow:
    delta = BalanceDelta(
        debits_posted=int(row["debits_posted_delta"]),
        credits_posted=int(row["credits_posted_delta"]),
        debits_pending=int(row["debits_pending_delta"]),
        credits_pending=int(row["credits_pending_delta"]),
    )
    debit_side = row["kind"].startswith("Debit")
    counterparty = row["credit_account_id"] if debit_side else row["debit_account_id"]
    return EntryRow(
        account_id=row["account_id"],
        position=int(row["position"]),
        transfer_id=row["transfer_id"],
        kind=row["kind"],
        amount=entry_amount(delta),
        counterparty_id=counterparty,
        debits_posted=int(row["debits_posted"]),
        credits_posted=int(row["credits_posted"]),
        debits_pending=int(row["debits_pending"]),
        credits_pending=int(row["credits_pending"]),
        recorded_at=parse_timestamp(row["recorded_at"]),
        metadata=json.loads(row["metadata"]) if row["metadata"] else {},
        allocations=_allocations_of(row["allocations"]),
    )


def _json_or_null(records: list[dict[str, Any]]) -> str | None:
    return json.dumps(records) if records else None


def _allocations_of(text: str | None) -> tuple[Allocation, ...]:
    return tuple(Allocation(a["grant_id"], a["amount"]) for a in json.loads(text or "[]"))


def _transfer_row(row: Any) -> TransferRow:
    return TransferRow(
        id=row["transfer_id"],
        debit_account_id=row["debit_account_id"],
        credit_account_id=row["credit_account_id"],
        amount=int(row["amount"]),
        unit=row["unit"],
        pending=bool(row["pending"]),
        timeout_seconds=row["timeout_seconds"],
        expires_at=parse_timestamp(row["expires_at"]) if row["expires_at"] else None,
        metadata=json.loads(row["metadata"]),
        status=row["status"],
        amount_posted=int(row["amount_posted"]),
        reversal_of=row["reversal_of"],
        reversed_by=row["reversed_by"],
        recorded_at=parse_timestamp(row["recorded_at"]),
        position=int(row["position"]),
        updated_position=int(row["updated_position"]),
        grant=_grant_of(row["grant_terms"]),
        allocations=_allocations_of(row["allocations"]),
    )


def _time_text(value: object) -> str:
    assert isinstance(value, datetime)
    return timestamp_text(value)


def _grant_of(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    grant: dict[str, Any] = json.loads(text)
    for key in ("expires_at", "effective_at", "requested_effective_at"):
        if grant.get(key) is not None:
            grant[key] = parse_timestamp(grant[key])
    return grant


def _table_names(prefix: str) -> dict[str, str]:
    names = {name: f"{prefix}{name}" for name in TABLES}
    for index in (
        "entries_by_time",
        "transfers_by_debit",
        "transfers_by_credit",
        "transfers_by_position",
        "transfers_due",
        *LOT_INDEXES,
    ):
        names[f"{index}_index"] = f"{prefix}{index}_idx"
    return names


def _relax_durability(datastore: Any) -> None:
    """Views need no fsync per commit: they are disposable and rebuildable, and in WAL
    mode ``synchronous=NORMAL`` still survives any process crash; only a power loss can
    drop the newest commits, and their tracking records go with them, so exactly-once
    holds. (The event store keeps the library's full durability.)"""
    pool = datastore.pool
    create_connection = pool._create_connection  # no public hook exists

    def create_relaxed_connection() -> Any:
        connection = create_connection()
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection

    pool._create_connection = create_relaxed_connection
    for connection in list(pool._pool):  # any opened before this point
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")


class SQLiteLedgerView(LedgerViewMixin, SQLiteTrackingRecorder):
    """The views in one SQLite file (one file per view generation: decision 0006)."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        self._names = _table_names("")
        super().__init__(datastore, **kwargs)
        _relax_durability(datastore)

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        return statements + [statement.format(**self._names) for statement in SCHEMA]

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Cursor]:
        return self.datastore.transaction(commit=commit)

    def _sql(self, statement: str) -> str:
        return statement.format(**self._names)

    def _insert_tracking_in(self, cursor: Cursor, tracking: Tracking) -> None:
        self._insert_tracking(cursor, tracking)  # type: ignore[arg-type]


class PostgresLedgerView(LedgerViewMixin, PostgresTrackingRecorder):
    """The views in one PostgreSQL schema (one schema per view generation)."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = self.datastore.schema
        self._names = {
            key: f'"{schema}"."{value}"' if not key.endswith("_index") else f'"{value}"'
            for key, value in _table_names("").items()
        }
        self.sql_create_statements.insert(
            0, SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(schema))
        )
        self.sql_create_statements.extend(
            SQL(statement.format(**self._names)).format() for statement in SCHEMA
        )

    def _transaction(self, *, commit: bool) -> AbstractContextManager[Cursor]:
        return self.datastore.transaction(commit=commit)

    def _sql(self, statement: str) -> Any:
        return SQL(statement.format(**self._names).replace("?", "%s"))

    def _insert_tracking_in(self, cursor: Cursor, tracking: Tracking) -> None:
        self._insert_tracking(cursor, tracking)  # type: ignore[arg-type]
