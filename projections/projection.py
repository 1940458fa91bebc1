"""The ledger projection: every event of the log turned into view rows, exactly once.

A pulled batch of events is folded in memory first (accounts and transfers touched by
the batch are read once, with one query per table) and then written with one
``executemany`` per table (on PostgreSQL one statement per table, the rows as arrays),
together with the batch's tracking record, in one transaction: all of a batch is
applied exactly once, or none of it is.
"""

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from operator import attrgetter, itemgetter
from typing import Any, ClassVar, Final, cast

import orjson
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from app.domain.account import Account, default_account_type, line_allocations
from app.domain.commits import commit_of, ends_commit
from app.domain.postings import COUNTER_NAMES, Counters, post
from app.domain.transfer import Transfer, fate_after, initial_fate
from app.domain.values import transfer_uuid
from app.persistence.decoding import StreamTexts
from projections.lots import apply_lot_moves
from projections.schema import Cursor, SqlAccess, timestamp_text

# Events per transaction of the views: a long catch-up commits once per this many.
PROJECTION_BATCH_MAX: Final = 1000
# Rows read per ``IN (…)`` query when a batch loads the rows it will change.
LOAD_CHUNK_SIZE: Final = 500
# The most ``balances`` rows a view's writer keeps between batches (``_account_rows``):
# some 1.5 kB each.
ACCOUNT_ROWS_KEPT_MAX: Final = 20_000
# An account's stream id as the views key it (its ``hex``), written out once per account
# and kept, by every writer of the process (the text of an id never changes).
account_hex: Final = StreamTexts(attrgetter("hex")).of

COUNTERS: Final = COUNTER_NAMES
ACCOUNT_STATE: Final = (
    *COUNTERS,
    "status",
    "metadata",
    "closed_position",
    "closed_at",
    "position",
    "updated_at",
)
ACCOUNT_STATE_AFTER_COUNTERS: Final = ACCOUNT_STATE[len(COUNTERS) :]
# What a balance change alone changes in an account's row: an UPDATE that sets only
# these leaves the row's indexes alone (SQLite rewrites an index entry whenever the SET
# names one of its columns, even to the same value: ``status`` is indexed).
BALANCE_STATE: Final = (*COUNTERS, "position", "updated_at")
# Where a batch keeps an account's counters while it folds (a ``Counters``), in its row.
_COUNTERS: Final = "_counters"
# The columns of a new ``balances`` row and of an ``entries`` row, in the fold's order.
BALANCE_COLUMNS: Final = (
    "account_id",
    "stream_id",
    "unit",
    "status",
    "allow_negative",
    "overdraft_limit",
    "account_type",
    "metadata",
    *COUNTERS,
    "opened_position",
    "opened_at",
    "closed_position",
    "closed_at",
    "position",
    "updated_at",
)
ENTRY_COLUMNS: Final = (
    "account_id",
    "position",
    "transfer_id",
    "kind",
    "debits_posted_delta",
    "credits_posted_delta",
    "debits_pending_delta",
    "credits_pending_delta",
    *COUNTERS,
    "recorded_at",
    "allocations",
)
TRANSFER_STATE: Final = (
    "status",
    "amount_posted",
    "reversed_by",
    "updated_position",
    "allocations",
)


class LedgerProjection(Projection[Any]):
    """Tracks every event (no topic filter), so that any position a write returns is
    one the view will reach: read-your-writes can wait on it."""

    name = "ledger_views"
    topics: ClassVar[tuple[str, ...]] = ()  # type: ignore[misc]

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        view: RowWriter = self.view
        view.apply_event(domain_event, tracking)

    def process_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        view: RowWriter = self.view
        view.apply_events(batch)


@dataclass
class _Rows:
    """What one batch changes, folded in memory, written at the end in bulk."""

    # stream id → the account's row as it stands after the batch's events so far
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_accounts: set[str] = field(default_factory=set)
    changed_accounts: set[str] = field(default_factory=set)
    # Of ``changed_accounts``: those whose status or metadata changed too.
    restated_accounts: set[str] = field(default_factory=set)
    metadata_changed: set[str] = field(default_factory=set)
    # (account id, position, time, metadata) after each opening and each update
    metadata_history: list[tuple[str, int, str, str]] = field(default_factory=list)
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_transfers: set[str] = field(default_factory=set)
    changed_transfers: set[str] = field(default_factory=set)
    # (transfer id, key, value) of each new transfer's metadata
    transfer_pairs: list[tuple[str, str, Any]] = field(default_factory=list)
    # start position → (end position, time of its last event, latest time up to its end,
    # whether the commit's last event is in)
    commits: dict[int, tuple[int, str, str, bool]] = field(default_factory=dict)
    commit_keys: list[tuple[int, str]] = field(default_factory=list)
    # (event, position, account id, time) of every balance change, for the lots view
    lot_moves: list[tuple[Account.BalanceChanged, int, str, str]] = field(default_factory=list)


class RowWriter(SqlAccess):
    """Turns events into rows of the views (mixed into each backend's recorder)."""

    def _insert_tracking_in(self, cursor: Cursor, tracking: Tracking) -> None:
        raise NotImplementedError

    def _pipeline(self, cursor: Cursor) -> AbstractContextManager[object]:
        """Where the backend sends a batch's writes without waiting for each answer
        (PostgreSQL's pipeline mode); nothing to do elsewhere."""
        del cursor
        return nullcontext()

    def apply_event(self, event: object, tracking: Tracking) -> None:
        """Apply one event and record its tracking, in one transaction."""
        self.apply_events([(event, tracking)])

    def apply_events(self, batch: Sequence[tuple[object, Tracking]]) -> None:
        """Apply consecutive events and record the last one's tracking, in one
        transaction: all of them are applied exactly once, or none is."""
        if batch:
            events = [event for event, _ in batch]
            positions = [tracking.notification_id for _, tracking in batch]
            self.apply_at_positions(events, positions, batch[-1][1])

    def apply_at_positions(
        self, events: Sequence[object], positions: Sequence[int], tracking: Tracking
    ) -> None:
        """``apply_events`` without a tracking record per event (the catch-up's form):
        ``events[i]`` sits at ``positions[i]``; ``tracking`` is the last one's."""
        if not events:
            return
        try:
            with self._transaction(commit=True) as cursor:
                rows = _Rows()
                self._load(cursor, rows, events)
                self._fold_all(rows, events, positions)
                with self._pipeline(cursor):
                    self._write(cursor, rows)
                # After the pipeline (its answers all in): these read as they write.
                for event, position, account_id, at in rows.lot_moves:  # grants only: rare
                    apply_lot_moves(self, cursor, event, position, account_id, at)
                self._insert_tracking_in(cursor, tracking)
        except BaseException:
            # What was cached may not have been written (the cached rows were changed
            # in place by the fold): the next batch reads the rows again.
            self._open_commit = self._latest_at = None
            self._account_rows = None
            raise
        self._keep_account_rows(rows)

    # The newest commit (start position, key), kept between batches by the one worker
    # that writes this view; dropped whenever a transaction fails.
    _open_commit: tuple[int, str] | None = None
    # The latest time of any event folded so far (``commits.latest_at``), kept and
    # dropped with ``_open_commit``.
    _latest_at: str | None = None
    # The ``balances`` rows as this writer last committed them, by stream id, kept
    # between batches by the one worker that writes this view, like ``_open_commit``
    # (at most ACCOUNT_ROWS_KEPT_MAX, the oldest kept dropped first; all dropped whenever
    # a transaction fails): a live batch changes a few hundred accounts, mostly the same
    # ones as the batches before it, and reading them back every batch cost a fifth of
    # what a live batch's events cost beyond a catch-up's.
    _account_rows: dict[str, dict[str, Any]] | None = None

    def _keep_account_rows(self, rows: _Rows) -> None:
        """After the batch's commit: its accounts' rows, as written, for later batches.
        A row the batch changed keeps its ``Counters`` (``_COUNTERS``, what its counter
        columns were written from; ``_counters_of`` reads them first): the next batch
        folds on into them instead of building them again from the columns."""
        kept = self._account_rows
        if kept is None:
            kept = self._account_rows = {}
        kept.update(rows.accounts)
        excess = len(kept) - ACCOUNT_ROWS_KEPT_MAX
        if excess > 0:
            for stream_id in list(islice(kept, excess)):
                del kept[stream_id]

    # Loading ---------------------------------------------------------------------------

    def _load(self, cursor: Cursor, rows: _Rows, events: Sequence[object]) -> None:
        account_ids: set[str] = set()
        transfer_ids: set[str] = set()
        for event in events:
            if isinstance(event, Account.Opened):
                continue
            if isinstance(event, Account.Event):
                account_ids.add(account_hex(event.originator_id))
            elif isinstance(event, Transfer.TransferRecorded):
                if event.reversal_of is not None:
                    transfer_ids.add(transfer_uuid(event.reversal_of).hex)
            elif isinstance(event, Transfer.Event):
                transfer_ids.add(event.originator_id.hex)
        kept = self._account_rows
        if kept:
            for stream_id in [i for i in account_ids if i in kept]:
                rows.accounts[stream_id] = kept[stream_id]
                account_ids.discard(stream_id)
        for row in self._select_in(cursor, "balances", ("stream_id", "account_id"), account_ids):
            rows.accounts[row["stream_id"]] = dict(row)
        for row in self._select_in(cursor, "transfers", ("stream_id",), transfer_ids):
            rows.transfers[row["stream_id"]] = dict(row)
        if self._open_commit is None and any(hasattr(e, "timestamp") for e in events):
            self._run(
                cursor,
                "SELECT c.start_position, c.recorded_at, c.latest_at, k.commit_id "
                "FROM {commits} c "
                "LEFT JOIN {commit_keys} k ON k.start_position = c.start_position "
                "ORDER BY c.start_position DESC LIMIT 1",
            )
            last = cursor.fetchone()
            if last is not None:
                key = last["commit_id"] or _time_key(last["recorded_at"])
                self._open_commit = (int(last["start_position"]), key)
                self._latest_at = last["latest_at"]

    def _select_in(
        self, cursor: Cursor, table: str, columns: tuple[str, ...], stream_ids: Iterable[str]
    ) -> list[Any]:
        del columns  # every column is read: the fold needs the whole row
        wanted = sorted(stream_ids)
        found: list[Any] = []
        for start in range(0, len(wanted), LOAD_CHUNK_SIZE):
            chunk = wanted[start : start + LOAD_CHUNK_SIZE]
            marks = ",".join("?" * len(chunk))
            self._run(cursor, f"SELECT * FROM {{{table}}} WHERE stream_id IN ({marks})", chunk)
            found.extend(cursor.fetchall())
        return found

    # Folding ---------------------------------------------------------------------------

    def _fold_all(self, rows: _Rows, events: Sequence[object], positions: Sequence[int]) -> None:
        """Fold each event into the rows, in log order. Each instant's time is formatted
        once per batch: a command's events share one, yet a group write orders its
        events aggregate by aggregate, so that its commands' instants interleave (and
        decoded, each is an object of its own). Each event class's fold is looked up
        once (``_fold_of``)."""
        moment: object = None
        at = ""
        texts: dict[object, str] = {}
        for event, position in zip(events, positions, strict=True):
            timestamp = getattr(event, "timestamp", None)
            if timestamp is None:
                continue
            if timestamp is not moment:
                moment = timestamp
                found = texts.get(timestamp)
                at = texts[timestamp] = timestamp_text(timestamp) if found is None else found
            self._fold_commit(rows, event, position, at)
            fold = _FOLDS.get(type(event))
            if fold is None:
                fold = _FOLDS[type(event)] = _fold_of(type(event))
            fold(self, rows, event, position, at)

    def _fold(self, rows: _Rows, event: object, position: int) -> None:
        """Fold one event into the rows (``_fold_all`` of one)."""
        self._fold_all(rows, [event], [position])

    def _fold_commit(self, rows: _Rows, event: object, position: int, at: str) -> None:
        # The writer names each event's commit (app.domain.commits). Events stored before
        # it did fall back to the earlier rule: a run of events with one time is one
        # commit (a command's events share one time), whole at each batch's end.
        latest = self._latest_at
        if latest is None or at > latest:  # fixed-width text: sorts as time does
            latest = self._latest_at = at
        commit_id = commit_of(event)
        key = commit_id or _time_key(at)
        if self._open_commit is not None and self._open_commit[1] == key:
            start = self._open_commit[0]
        else:
            start = position
            self._open_commit = (position, key)
            if commit_id is not None:
                rows.commit_keys.append((start, commit_id))
        rows.commits[start] = (position, at, latest, ends_commit(event) is not False)

    def _fold_opened(self, rows: _Rows, event: Account.Opened, position: int, at: str) -> None:
        stream_id = event.originator_id.hex
        rows.accounts[stream_id] = {
            "account_id": event.account_id,
            "stream_id": stream_id,
            "unit": event.unit,
            "status": "open",
            "allow_negative": event.allow_negative,
            "overdraft_limit": event.overdraft_limit,
            "account_type": event.account_type or default_account_type(event.allow_negative),
            "metadata": _json_text(event.metadata),
            **dict.fromkeys(COUNTERS, 0),
            "opened_position": position,
            "opened_at": at,
            "closed_position": None,
            "closed_at": None,
            "position": position,
            "updated_at": at,
        }
        rows.new_accounts.add(stream_id)
        rows.metadata_history.append(
            (event.account_id, position, at, rows.accounts[stream_id]["metadata"])
        )

    def _account_of(self, rows: _Rows, event: Account.Event) -> tuple[str, dict[str, Any]]:
        stream_id = account_hex(event.originator_id)
        account = rows.accounts.get(stream_id)
        assert account is not None, f"account event before opening: {event.originator_id}"
        return stream_id, account

    def _fold_account_seen(self, rows: _Rows, event: Account.Event, position: int, at: str) -> None:
        """An account event no view shows (its account must exist all the same)."""
        del position, at
        self._account_of(rows, event)

    def _fold_closed(self, rows: _Rows, event: Account.Closed, position: int, at: str) -> None:
        stream_id, account = self._account_of(rows, event)
        account.update(
            status="closed",
            closed_position=position,
            closed_at=at,
            position=position,
            updated_at=at,
        )
        rows.changed_accounts.add(stream_id)
        rows.restated_accounts.add(stream_id)

    def _fold_updated(self, rows: _Rows, event: Account.Updated, position: int, at: str) -> None:
        stream_id, account = self._account_of(rows, event)
        account["metadata"] = _json_text(event.metadata)
        rows.metadata_changed.add(stream_id)
        rows.metadata_history.append((account["account_id"], position, at, account["metadata"]))
        account.update(position=position, updated_at=at)
        rows.changed_accounts.add(stream_id)
        rows.restated_accounts.add(stream_id)

    def _fold_balance_change(
        self, rows: _Rows, event: Account.BalanceChanged, position: int, at: str
    ) -> None:
        stream_id, account = self._account_of(rows, event)
        counters: Counters | None = account.get(_COUNTERS)
        if counters is None:  # first change of the batch: from the row's columns
            counters = account[_COUNTERS] = Counters(*(int(account[n]) for n in COUNTERS))
        delta = event.delta()
        post(counters, delta)
        after = counters.as_tuple()
        # The second half of the pair of assertions (TigerBeetle style): counters the
        # write path checked must still be sane when folded here.
        assert min(after) >= 0, (account["account_id"], after)
        account["position"] = position
        account["updated_at"] = at
        rows.changed_accounts.add(stream_id)
        moves_lots, moved = _lots_of(event)
        if moves_lots:
            rows.lot_moves.append((event, position, account["account_id"], at))
        rows.entries.append(
            (
                account["account_id"],
                position,
                event.transfer_id,
                type(event).__name__,
                delta.debits_posted,
                delta.credits_posted,
                delta.debits_pending,
                delta.credits_pending,
                *after,
                at,
                _json_text(moved) if moved else None,
            )
        )

    def _fold_recorded(
        self, rows: _Rows, event: Transfer.TransferRecorded, position: int, at: str
    ) -> None:
        stream_id = event.originator_id.hex
        rows.transfers[stream_id] = _recorded_row(event, stream_id, position, at)
        rows.new_transfers.add(stream_id)
        rows.transfer_pairs.extend(
            (event.transfer_id, key, value) for key, value in event.metadata.items()
        )
        if event.reversal_of is not None:
            # The original's own Reversed event comes in the same commit; setting the
            # link here too keeps the index right at every position of that commit.
            original_id = transfer_uuid(event.reversal_of).hex
            original = rows.transfers.get(original_id)
            if original is not None:
                original["reversed_by"] = event.transfer_id
                rows.changed_transfers.add(original_id)

    def _transfer_of(self, rows: _Rows, event: Transfer.Event) -> tuple[str, dict[str, Any]]:
        stream_id = event.originator_id.hex
        transfer = rows.transfers.get(stream_id)
        assert transfer is not None, f"transfer event before recording: {event.originator_id}"
        return stream_id, transfer

    def _fold_transfer_seen(
        self, rows: _Rows, event: Transfer.Event, position: int, at: str
    ) -> None:
        """A transfer event no view shows (its transfer must exist all the same)."""
        del position, at
        self._transfer_of(rows, event)

    def _fold_transfer_change(
        self, rows: _Rows, event: Transfer.Event, position: int, at: str
    ) -> None:
        """A hold's end or a reversal: the transfer's fate and what it posted."""
        del at
        stream_id, transfer = self._transfer_of(rows, event)
        if isinstance(event, Transfer.PendingPosted):
            transfer.update(amount_posted=event.amount)
            transfer["allocations"] = _json_or_none(event.allocations)
        elif isinstance(event, Transfer.Reversed):
            transfer["reversed_by"] = event.reversal_id
        transfer["status"] = fate_after(transfer["status"], event)
        transfer["updated_position"] = position
        rows.changed_transfers.add(stream_id)

    # Writing ---------------------------------------------------------------------------

    def _write(self, cursor: Cursor, rows: _Rows) -> None:
        self._write_accounts(cursor, rows)
        self._insert_many(cursor, "entries", ENTRY_COLUMNS, rows.entries)
        self._write_transfers(cursor, rows)
        self._insert_many(
            cursor,
            "commits",
            ("start_position", "end_position", "recorded_at", "latest_at", "whole"),
            [(start, *commit) for start, commit in sorted(rows.commits.items())],
            "ON CONFLICT (start_position) DO UPDATE SET end_position = excluded.end_position, "
            "latest_at = excluded.latest_at, whole = excluded.whole",
        )
        self._insert_many(cursor, "commit_keys", ("start_position", "commit_id"), rows.commit_keys)

    def _write_accounts(self, cursor: Cursor, rows: _Rows) -> None:
        new = [rows.accounts[s] for s in sorted(rows.new_accounts)]
        self._insert_many(
            cursor,
            "balances",
            BALANCE_COLUMNS,
            [
                (
                    a["account_id"],
                    a["stream_id"],
                    a["unit"],
                    a["status"],
                    a["allow_negative"],
                    a["overdraft_limit"],
                    a["account_type"],
                    a["metadata"],
                    *_counters_of(a),
                    a["opened_position"],
                    a["opened_at"],
                    a["closed_position"],
                    a["closed_at"],
                    a["position"],
                    a["updated_at"],
                )
                for a in new
            ],
        )
        changed = rows.changed_accounts - rows.new_accounts
        restated = [rows.accounts[s] for s in sorted(changed & rows.restated_accounts)]
        self._update_many(
            cursor,
            "balances",
            ACCOUNT_STATE,
            "stream_id",
            [
                (
                    *_counters_of(a),
                    *(a[name] for name in ACCOUNT_STATE_AFTER_COUNTERS),
                    a["stream_id"],
                )
                for a in restated
            ],
        )
        moved = [rows.accounts[s] for s in sorted(changed - rows.restated_accounts)]
        self._update_many(
            cursor,
            "balances",
            BALANCE_STATE,
            "stream_id",
            [(*_counters_of(a), a["position"], a["updated_at"], a["stream_id"]) for a in moved],
        )
        self._insert_many(
            cursor,
            "metadata_changes",
            ("account_id", "position", "recorded_at", "metadata"),
            rows.metadata_history,
        )
        replaced = [rows.accounts[s] for s in sorted(rows.metadata_changed - rows.new_accounts)]
        # The pairs' counts (how a search picks its rarest pair) follow the pairs: the
        # replaced accounts' old pairs leave them before the pairs themselves go.
        self._run_many(
            cursor,
            "UPDATE {account_metadata_counts} SET accounts = accounts - 1 "
            "WHERE (key, value) IN (SELECT key, value FROM {account_metadata} "
            "WHERE account_id = ?)",
            [(a["account_id"],) for a in replaced],
        )
        self._run_many(
            cursor,
            "DELETE FROM {account_metadata} WHERE account_id = ?",
            [(a["account_id"],) for a in replaced],
        )
        # Each pair's row carries the account's whole metadata: a search by several pairs
        # walks the rarest pair's rows and checks the others there (projections.reader).
        pairs = [
            (a["account_id"], key, value, a["metadata"])
            for a in [*new, *replaced]
            for key, value in json.loads(a["metadata"]).items()
        ]
        self._insert_many(
            cursor, "account_metadata", ("account_id", "key", "value", "metadata"), pairs
        )
        self._insert_many(
            cursor,
            "account_metadata_counts",
            ("key", "value", "accounts"),
            [
                (key, value, count)
                for (key, value), count in sorted(Counter((k, v) for _, k, v, _ in pairs).items())
            ],
            "ON CONFLICT (key, value) DO UPDATE SET accounts = "
            "{account_metadata_counts}.accounts + excluded.accounts",
        )

    def _write_transfers(self, cursor: Cursor, rows: _Rows) -> None:
        new = [rows.transfers[s] for s in sorted(rows.new_transfers)]
        columns = tuple(new[0]) if new else ()
        if new:
            row_of = itemgetter(*columns)
            self._insert_many(cursor, "transfers", columns, [row_of(t) for t in new])
        self._insert_many(
            cursor, "transfer_metadata", ("transfer_id", "key", "value"), rows.transfer_pairs
        )
        changed = [rows.transfers[s] for s in sorted(rows.changed_transfers - rows.new_transfers)]
        self._update_many(
            cursor,
            "transfers",
            TRANSFER_STATE,
            "stream_id",
            [(*(t[name] for name in TRANSFER_STATE), t["stream_id"]) for t in changed],
        )


def _recorded_row(
    event: Transfer.TransferRecorded, stream_id: str, position: int, at: str
) -> dict[str, Any]:
    expires_at = None
    if event.pending and event.timeout_seconds is not None:
        expires_at = timestamp_text(event.timestamp + timedelta(seconds=event.timeout_seconds))
    return {
        "transfer_id": event.transfer_id,
        "stream_id": stream_id,
        "debit_account_id": event.debit_account_id,
        "credit_account_id": event.credit_account_id,
        "amount": event.amount,
        "unit": event.unit,
        "pending": event.pending,
        "timeout_seconds": event.timeout_seconds,
        "expires_at": expires_at,
        "metadata": _json_text(event.metadata),
        "status": initial_fate(event.pending),
        "amount_posted": 0 if event.pending else event.amount,
        "reversal_of": event.reversal_of,
        "reversed_by": None,
        "recorded_at": at,
        "position": position,
        "updated_position": position,
        "grant_terms": (
            None if event.grant is None else json.dumps(event.grant, default=_time_text)
        ),
        "allocations": _json_or_none(event.allocations),
    }


def _lots_of(event: Account.BalanceChanged) -> tuple[bool, list[dict[str, Any]]]:
    """``_lots_in_general(event)``, answered at once for the commonest events: a debit
    or a credit that moves the general lot alone (no grant, no lot given back, every
    allocation of the general lot) moves no grant's lot and shows no lots on its line.
    tests/unit/test_fold_lots.py holds the two equal."""
    kind = type(event)
    if kind is Account.Debited:
        records = cast("Account.Debited", event).allocations
        if not records or (len(records) == 1 and records[0]["grant_id"] is None):
            return False, []
    elif kind is Account.Credited:
        credit = cast("Account.Credited", event)
        if credit.grant is None and not credit.returned:
            return False, []
    return _lots_in_general(event)


def _lots_in_general(event: Account.BalanceChanged) -> tuple[bool, list[dict[str, Any]]]:
    """Whether ``event`` moves a grant's lot, and the lots its statement line shows."""
    return _may_move_grant_lots(event), line_allocations(event)


def _may_move_grant_lots(event: Account.BalanceChanged) -> bool:
    """Whether the event moves a grant's lot (what ``apply_lot_moves`` writes): a grant,
    or allocations naming a grant. Most events move the general lot alone (None)."""
    if isinstance(event, Account.Credited):
        return event.grant is not None or _names_a_grant(event.returned)
    if isinstance(event, Account.Debited | Account.DebitReserved):
        return _names_a_grant(event.allocations)
    if isinstance(event, Account.DebitHoldSettled):
        return _names_a_grant(event.consumed) or _names_a_grant(event.released)
    return False


def _names_a_grant(records: list[dict[str, Any]] | None) -> bool:
    return any(record["grant_id"] is not None for record in records or ())


def _counters_of(account: dict[str, Any]) -> tuple[int, ...]:
    counters: Counters | None = account.get(_COUNTERS)
    return tuple(account[name] for name in COUNTERS) if counters is None else counters.as_tuple()


_Fold = Callable[[RowWriter, _Rows, Any, int, str], None]
# Each event class's fold, looked up once per class (``_fold_of``).
_FOLDS: dict[type, _Fold] = {}


def _fold_of(event_class: type) -> _Fold:
    """Which fold an event of this class takes: the first that matches in this order."""
    folds: list[tuple[type, _Fold]] = [
        (Account.Opened, RowWriter._fold_opened),
        (Account.BalanceChanged, RowWriter._fold_balance_change),
        (Account.Closed, RowWriter._fold_closed),
        (Account.Updated, RowWriter._fold_updated),
        (Account.Event, RowWriter._fold_account_seen),
        (Transfer.TransferRecorded, RowWriter._fold_recorded),
        (Transfer.PendingPosted, RowWriter._fold_transfer_change),
        (Transfer.Reversed, RowWriter._fold_transfer_change),
        (Transfer.PendingVoided, RowWriter._fold_transfer_change),
        (Transfer.PendingExpired, RowWriter._fold_transfer_change),
        (Transfer.Event, RowWriter._fold_transfer_seen),
    ]
    for kind, fold in folds:
        if issubclass(event_class, kind):
            return fold
    return _fold_nothing


def _fold_nothing(view: RowWriter, rows: _Rows, event: object, position: int, at: str) -> None:
    """An event of neither an account nor a transfer: its commit is all it shows."""
    del view, rows, event, position, at


def _json_text(value: object) -> str:
    """JSON text of a view column (metadata, allocations, …), read back with a JSON
    parser. orjson writes it several times faster; what it refuses (an integer beyond
    64 bits, which only an event written before the orjson transcoder could hold) the
    json module writes."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def _json_or_none(value: object) -> str | None:
    return None if value is None else _json_text(value)


def _time_text(value: object) -> str:
    assert isinstance(value, datetime)
    return timestamp_text(value)


def _time_key(recorded_at: str) -> str:
    """The commit key of an event stored before commits were marked: its time."""
    return f"time:{recorded_at}"
