"""What the views must hold, worked out from scratch, and what they do hold, row for row.

``replay_log`` folds the notification log itself (page by page, each event's own
``delta()``), independently of the projection code; ``dump_views`` reads the view tables
raw, straight from SQLite or PostgreSQL. ``assert_views_equal_replay`` compares the two
row for row and then checks them against the write side (``Ledger.get_account``,
``Ledger.get_transfer``).
"""

import bisect
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from app.application.ledger import Ledger
from app.domain.account import Account, default_account_type, line_allocations
from app.domain.transfer import Transfer
from projections.runner import VIEW_ENV_PREFIX, view_env, view_schema
from projections.views import APPLICATION_NAME, parse_timestamp, timestamp_text

NOTIFICATION_PAGE: Final = 1000
# The library names the tracking table after the projection on PostgreSQL only.
SQLITE_TRACKING_TABLE: Final = "tracking"
POSTGRES_TRACKING_TABLE: Final = "ledger_views_tracking"

Row = dict[str, Any]
Totals = tuple[int, int, int, int]

# Column kinds, to compare SQLite's and PostgreSQL's answers in one currency.
BOOLEAN_COLUMNS: Final = frozenset({"allow_negative", "pending"})
JSON_COLUMNS: Final = frozenset({"metadata", "grant_terms", "allocations"})
TIME_COLUMNS: Final = frozenset(
    {"opened_at", "closed_at", "updated_at", "recorded_at", "expires_at"}
)


@dataclass
class Replay:
    """The views as a from-scratch fold of the log says they must be."""

    head: int = 0
    balances: dict[str, Row] = field(default_factory=dict)
    entries: dict[tuple[str, int], Row] = field(default_factory=dict)
    transfers: dict[str, Row] = field(default_factory=dict)
    events: int = 0
    account_by_stream: dict[str, str] = field(default_factory=dict)
    # For checks at any checkpoint: the position of each balance change, in log order,
    # and the four counters summed over all accounts after it.
    entry_positions: list[int] = field(default_factory=list)
    totals_after: list[Totals] = field(default_factory=list)

    def totals_at(self, checkpoint: int) -> tuple[int, Totals]:
        """How many entries, and which counter totals, the views hold at ``checkpoint``."""
        count = bisect.bisect_right(self.entry_positions, checkpoint)
        return count, self.totals_after[count - 1] if count else (0, 0, 0, 0)


@dataclass
class Dump:
    """The view tables as stored."""

    checkpoint: int
    balances: dict[str, Row]
    entries: dict[tuple[str, int], Row]
    transfers: dict[str, Row]


def notifications(ledger: Ledger) -> Iterator[tuple[int, Any]]:
    """Every (position, domain event) of the log, in order, read in pages."""
    last = 0
    while True:
        page = ledger.recorder.select_notifications(
            start=last, limit=NOTIFICATION_PAGE, inclusive_of_start=False
        )
        for notification in page:
            yield notification.id, ledger.mapper.to_domain_event(notification)
        if len(page) < NOTIFICATION_PAGE:
            return
        last = page[-1].id


def replay_log(ledger: Ledger) -> Replay:
    replay = Replay()
    for position, event in notifications(ledger):
        assert position > replay.head, "positions must increase"
        replay.head = position
        replay.events += 1
        if isinstance(event, Account.Event):
            _fold_account_event(replay, event, position)
        elif isinstance(event, Transfer.Event):
            _fold_transfer_event(replay, event, position)
        else:
            raise TypeError(f"unexpected event {event!r}")
    # Keyed by stream while folding (events name their stream); by transfer id from here.
    replay.transfers = {row["transfer_id"]: row for row in replay.transfers.values()}
    return replay


def _fold_account_event(replay: Replay, event: Account.Event, position: int) -> None:
    stream = event.originator_id.hex
    if isinstance(event, Account.Opened):
        replay.account_by_stream[stream] = event.account_id
        replay.balances[event.account_id] = {
            "account_id": event.account_id,
            "stream_id": stream,
            "unit": event.unit,
            "status": "open",
            "allow_negative": event.allow_negative,
            "overdraft_limit": event.overdraft_limit,
            "account_type": event.account_type or default_account_type(event.allow_negative),
            "metadata": dict(event.metadata),
            "debits_posted": 0,
            "credits_posted": 0,
            "debits_pending": 0,
            "credits_pending": 0,
            "opened_position": position,
            "opened_at": event.timestamp,
            "closed_position": None,
            "closed_at": None,
            "position": position,
            "updated_at": event.timestamp,
        }
        return
    account_id = replay.account_by_stream[stream]
    balance = replay.balances[account_id]
    if isinstance(event, Account.Closed):
        balance.update(
            status="closed",
            closed_position=position,
            closed_at=event.timestamp,
            position=position,
            updated_at=event.timestamp,
        )
        return
    if not isinstance(event, Account.BalanceChanged):
        raise TypeError(f"unexpected account event {event!r}")
    delta = event.delta()
    balance["debits_posted"] += delta.debits_posted
    balance["credits_posted"] += delta.credits_posted
    balance["debits_pending"] += delta.debits_pending
    balance["credits_pending"] += delta.credits_pending
    balance["position"] = position
    balance["updated_at"] = event.timestamp
    replay.entries[account_id, position] = {
        "account_id": account_id,
        "position": position,
        "transfer_id": event.transfer_id,
        "kind": type(event).__name__,
        "debits_posted_delta": delta.debits_posted,
        "credits_posted_delta": delta.credits_posted,
        "debits_pending_delta": delta.debits_pending,
        "credits_pending_delta": delta.credits_pending,
        "debits_posted": balance["debits_posted"],
        "credits_posted": balance["credits_posted"],
        "debits_pending": balance["debits_pending"],
        "credits_pending": balance["credits_pending"],
        "recorded_at": event.timestamp,
        "allocations": line_allocations(event) or None,
    }
    before = replay.totals_after[-1] if replay.totals_after else (0, 0, 0, 0)
    replay.entry_positions.append(position)
    replay.totals_after.append(
        (
            before[0] + delta.debits_posted,
            before[1] + delta.credits_posted,
            before[2] + delta.debits_pending,
            before[3] + delta.credits_pending,
        )
    )


def _fold_transfer_event(replay: Replay, event: Transfer.Event, position: int) -> None:
    stream = event.originator_id.hex
    if isinstance(event, Transfer.TransferRecorded):
        expires_at = None
        if event.pending and event.timeout_seconds is not None:
            expires_at = event.timestamp + timedelta(seconds=event.timeout_seconds)
        replay.transfers[stream] = {
            "transfer_id": event.transfer_id,
            "stream_id": stream,
            "debit_account_id": event.debit_account_id,
            "credit_account_id": event.credit_account_id,
            "amount": event.amount,
            "unit": event.unit,
            "pending": event.pending,
            "timeout_seconds": event.timeout_seconds,
            "expires_at": expires_at,
            "metadata": dict(event.metadata),
            "status": "pending" if event.pending else "posted",
            "amount_posted": 0 if event.pending else event.amount,
            "reversal_of": event.reversal_of,
            "reversed_by": None,
            "recorded_at": event.timestamp,
            "position": position,
            "updated_position": position,
            "grant_terms": None
            if event.grant is None
            else {
                key: timestamp_text(value) if isinstance(value, datetime) else value
                for key, value in event.grant.items()
            },
            "allocations": event.allocations,
        }
        return
    transfer = replay.transfers[stream]
    transfer["updated_position"] = position
    if isinstance(event, Transfer.PendingPosted):
        transfer.update(status="posted", amount_posted=event.amount, allocations=event.allocations)
    elif isinstance(event, Transfer.PendingVoided):
        transfer["status"] = "voided"
    elif isinstance(event, Transfer.PendingExpired):
        transfer["status"] = "expired"
    elif isinstance(event, Transfer.Reversed):
        transfer["reversed_by"] = event.reversal_id
    else:
        raise TypeError(f"unexpected transfer event {event!r}")


def _normalised(row: Any) -> Row:
    out: Row = {}
    for key in row.keys():  # noqa: SIM118  # sqlite3.Row is no mapping
        value = row[key]
        if value is None:
            out[key] = None
        elif key in BOOLEAN_COLUMNS:
            out[key] = bool(value)
        elif key in JSON_COLUMNS:
            out[key] = json.loads(value)
        elif key in TIME_COLUMNS:
            out[key] = parse_timestamp(value)
        elif isinstance(value, int):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def is_postgres(read_model_url: str) -> bool:
    return urlsplit(read_model_url).scheme in ("postgresql", "postgres")


def sqlite_view_path(read_model_url: str, generation: int) -> Path:
    return Path(view_env(read_model_url, generation)[VIEW_ENV_PREFIX + "SQLITE_DBNAME"])


def _select_all(read_model_url: str, generation: int, table: str) -> list[Row]:
    if is_postgres(read_model_url):
        with psycopg.connect(read_model_url, row_factory=dict_row) as connection:
            schema = view_schema(generation)
            cursor = connection.execute(f'SELECT * FROM "{schema}"."{table}"')
            return [_normalised(row) for row in cursor.fetchall()]
    lite = sqlite3.connect(sqlite_view_path(read_model_url, generation), timeout=30)
    try:
        lite.row_factory = sqlite3.Row
        rows = lite.execute(f"SELECT * FROM {table}").fetchall()
        return [_normalised(row) for row in rows]
    finally:
        lite.close()


def dump_views(read_model_url: str, generation: int) -> Dump:
    tracking_table = (
        POSTGRES_TRACKING_TABLE if is_postgres(read_model_url) else SQLITE_TRACKING_TABLE
    )
    tracking = _select_all(read_model_url, generation, tracking_table)
    checkpoints = [
        row["notification_id"] for row in tracking if row["application_name"] == APPLICATION_NAME
    ]
    return Dump(
        checkpoint=max(checkpoints, default=0),
        balances={
            row["account_id"]: row for row in _select_all(read_model_url, generation, "balances")
        },
        entries={
            (row["account_id"], row["position"]): row
            for row in _select_all(read_model_url, generation, "entries")
        },
        transfers={
            row["transfer_id"]: row for row in _select_all(read_model_url, generation, "transfers")
        },
    )


def _assert_rows_equal(name: str, actual: dict[Any, Row], expected: dict[Any, Row]) -> None:
    missing = sorted(set(expected) - set(actual), key=str)
    extra = sorted(set(actual) - set(expected), key=str)
    assert not missing, f"{name}: {len(missing)} rows missing, e.g. {missing[:5]}"
    assert not extra, f"{name}: {len(extra)} rows too many, e.g. {extra[:5]}"
    wrong = [key for key in expected if actual[key] != expected[key]]
    if wrong:
        key = wrong[0]
        differences = {
            column: (actual[key].get(column), value)
            for column, value in expected[key].items()
            if actual[key].get(column) != value
        }
        raise AssertionError(
            f"{name}: {len(wrong)} rows differ; {key!r} (actual, expected): {differences}"
        )


def assert_dump_equals_replay(dump: Dump, replay: Replay) -> None:
    assert dump.checkpoint == replay.head
    _assert_rows_equal("balances", dump.balances, replay.balances)
    _assert_rows_equal("entries", dump.entries, replay.entries)
    _assert_rows_equal("transfers", dump.transfers, replay.transfers)


def assert_replay_matches_write_side(
    ledger: Ledger, replay: Replay, *, check_positions: bool = True, position_checks_max: int = 0
) -> None:
    """The independent fold agrees with the aggregates (snapshots, cache and all) and,
    unless told otherwise, with ``Ledger.transfer_position`` (for every transfer, or for
    ``position_checks_max`` of them spread over the log: each is one more lookup)."""
    stride = 1
    if position_checks_max:
        stride = max(1, len(replay.transfers) // position_checks_max)
    for account_id, row in replay.balances.items():
        account = ledger.get_account(account_id)
        assert (
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending,
            account.status,
            account.unit,
            account.allow_negative,
            account.overdraft_limit,
            account.metadata,
        ) == (
            row["debits_posted"],
            row["credits_posted"],
            row["debits_pending"],
            row["credits_pending"],
            row["status"],
            row["unit"],
            row["allow_negative"],
            row["overdraft_limit"],
            row["metadata"],
        ), account_id
    for number, (transfer_id, row) in enumerate(replay.transfers.items()):
        transfer = ledger.get_transfer(transfer_id)
        assert (
            transfer.debit_account_id,
            transfer.credit_account_id,
            transfer.amount,
            transfer.unit,
            transfer.pending,
            transfer.timeout_seconds,
            transfer.metadata,
            transfer.status,
            transfer.amount_posted,
            transfer.recorded_at,
            transfer.expires_at,
            transfer.reversal_of,
            transfer.reversed_by,
        ) == (
            row["debit_account_id"],
            row["credit_account_id"],
            row["amount"],
            row["unit"],
            row["pending"],
            row["timeout_seconds"],
            row["metadata"],
            row["status"],
            row["amount_posted"],
            row["recorded_at"],
            row["expires_at"],
            row["reversal_of"],
            row["reversed_by"],
        ), transfer_id
        if check_positions and number % stride == 0:
            assert ledger.transfer_position(transfer_id) == row["position"], transfer_id
    # Double entry: every unit sums to zero, posted and pending alike.
    for unit in {row["unit"] for row in replay.balances.values()}:
        rows = [row for row in replay.balances.values() if row["unit"] == unit]
        assert sum(r["credits_posted"] - r["debits_posted"] for r in rows) == 0
        assert sum(r["credits_pending"] - r["debits_pending"] for r in rows) == 0


def assert_views_equal_replay(
    ledger: Ledger, read_model_url: str, generation: int, *, check_positions: bool = True
) -> Replay:
    """The views of ``generation`` equal a from-scratch fold of the whole log, row for row,
    and the fold equals the write side."""
    replay = replay_log(ledger)
    assert_dump_equals_replay(dump_views(read_model_url, generation), replay)
    assert_replay_matches_write_side(ledger, replay, check_positions=check_positions)
    return replay


class CheckpointProbe:
    """Reads a generation's checkpoint and row counts straight from its tables, from
    outside the process that writes them (None while the tables do not exist yet)."""

    def __init__(self, read_model_url: str, generation: int) -> None:
        self.read_model_url = read_model_url
        self.generation = generation
        self.postgres = is_postgres(read_model_url)
        self._connection: Any = None

    def _query(self, statement: str, params: tuple[Any, ...]) -> Any:
        if self.postgres:
            if self._connection is None:
                self._connection = psycopg.connect(self.read_model_url, autocommit=True)
            schema = f'"{view_schema(self.generation)}".'
            try:
                return self._connection.execute(
                    statement.format(schema=schema).replace("?", "%s"), params
                ).fetchone()
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return None
        path = sqlite_view_path(self.read_model_url, self.generation)
        if not path.exists():
            return None
        connection = sqlite3.connect(path, timeout=30)
        try:
            return connection.execute(statement.format(schema=""), params).fetchone()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return None
            raise
        finally:
            connection.close()

    def checkpoint(self) -> int | None:
        table = POSTGRES_TRACKING_TABLE if self.postgres else SQLITE_TRACKING_TABLE
        row = self._query(
            f"SELECT MAX(notification_id) FROM {{schema}}{table} WHERE application_name = ?",
            (APPLICATION_NAME,),
        )
        if row is None:
            return None
        return int(row[0] or 0)

    def totals(self) -> tuple[int, Totals, Totals]:
        """Entries, their deltas summed, and the balances' counters summed."""
        entries = self._query(
            "SELECT COUNT(*), SUM(debits_posted_delta), SUM(credits_posted_delta), "
            "SUM(debits_pending_delta), SUM(credits_pending_delta) FROM {schema}entries",
            (),
        )
        balances = self._query(
            "SELECT SUM(debits_posted), SUM(credits_posted), SUM(debits_pending), "
            "SUM(credits_pending) FROM {schema}balances",
            (),
        )
        assert entries is not None
        assert balances is not None
        return (
            int(entries[0]),
            _totals(entries[1:]),
            _totals(balances),
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _totals(values: Any) -> Totals:
    a, b, c, d = (int(value or 0) for value in values)
    return a, b, c, d
