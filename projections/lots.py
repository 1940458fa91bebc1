"""The credit lots view: every grant's lot, as it stands and as it stood.

- ``lots``: one row per grant (never deleted: consumed and expired lots stay listed), with
  what is left, reserved and gone to breakage;
- ``lot_changes``: the lot's figures after each event that moved it, so that the lots of
  an account at a position or a time are one index lookup per lot.

A lot's status is derived when read, at the time asked about: ``live`` while something is
left and its expiry has not come; ``expired`` once it has come (what was left goes to
breakage); ``consumed`` when it was used up before expiring. Written in the same
transaction as the rest of the views (decision 0006), by the hook in ``views.py``.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from app.application.views import DueGrant, LotPage, LotRow, LotStatusFilter
from app.domain.account import Account, allocations_of
from app.domain.lots import Allocation, LotStatus
from app.domain.values import is_breakage_transfer_id

if TYPE_CHECKING:
    from projections.schema import Cursor
    from projections.schema import SqlAccess as LedgerViewMixin

LOTS_PAGE_SIZE_MAX: Final = 1000

LOT_TABLES: Final = ("lots", "lot_changes")
LOT_INDEXES: Final = ("lots_due", "lots_by_account")

LOT_SCHEMA: Final = [
    """CREATE TABLE IF NOT EXISTS {lots} (
        account_id TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        remaining BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        breakage BIGINT NOT NULL,
        expires_at TEXT,
        effective_at TEXT NOT NULL,
        priority INTEGER NOT NULL,
        category TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        granted_position BIGINT NOT NULL,
        granted_at TEXT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (account_id, grant_id)
    )""",
    "CREATE INDEX IF NOT EXISTS {lots_by_account_index} ON {lots} (account_id, granted_position)",
    "CREATE INDEX IF NOT EXISTS {lots_due_index} ON {lots} (grant_id, expires_at)",
    """CREATE TABLE IF NOT EXISTS {lot_changes} (
        account_id TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        recorded_at TEXT NOT NULL,
        remaining BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        breakage BIGINT NOT NULL,
        PRIMARY KEY (account_id, grant_id, position)
    )""",
]


def lot_status(remaining: int, reserved: int, breakage: int, expired: bool) -> LotStatus:
    if remaining or reserved:
        return "expired" if expired else "live"
    return "expired" if breakage else "consumed"


# Writing ---------------------------------------------------------------------------------


def apply_lot_moves(
    view: "LedgerViewMixin",
    cursor: "Cursor",
    event: Account.BalanceChanged,
    position: int,
    account_id: str,
    at: str,
) -> None:
    """Apply what one account event did to its grant lots (the general lot is not listed:
    it is the balance minus the lots)."""
    moves: list[tuple[str, int, int]] = []  # grant id, remaining change, reserved change
    if isinstance(event, Account.Credited):
        if event.grant is not None:
            _open_lot(view, cursor, event, position, account_id, at)
            return
        moves = [(a.grant_id, a.amount, 0) for a in _grants(allocations_of(event.returned, 0))]
    elif isinstance(event, Account.Debited):
        moves = [(a.grant_id, -a.amount, 0) for a in _grants(event_allocations(event))]
    elif isinstance(event, Account.DebitReserved):
        moves = [(a.grant_id, 0, a.amount) for a in _grants(event_allocations(event))]
    elif isinstance(event, Account.DebitHoldSettled):
        consumed = allocations_of(event.consumed, event.posted_amount)
        released = allocations_of(event.released, event.reserved_amount - event.posted_amount)
        moves = [(a.grant_id, -a.amount, -a.amount) for a in _grants(consumed)]
        moves += [(a.grant_id, 0, -a.amount) for a in _grants(released)]
    broken = isinstance(event, Account.Debited) and is_breakage_transfer_id(event.transfer_id)
    for grant_id, remaining_change, reserved_change in moves:
        breakage_change = -remaining_change if broken else 0
        view._run(
            cursor,
            "UPDATE {lots} SET remaining = remaining + ?, reserved = reserved + ?, "
            "breakage = breakage + ?, position = ? WHERE account_id = ? AND grant_id = ?",
            [remaining_change, reserved_change, breakage_change, position, account_id, grant_id],
        )
        _record_change(view, cursor, account_id, grant_id, position, at)


def event_allocations(event: Account.Debited | Account.DebitReserved) -> tuple[Allocation, ...]:
    return allocations_of(event.allocations, event.amount)


def _grants(allocations: Sequence[Allocation]) -> list[Any]:
    return [a for a in allocations if a.grant_id is not None]


def _open_lot(
    view: "LedgerViewMixin",
    cursor: "Cursor",
    event: Account.Credited,
    position: int,
    account_id: str,
    at: str,
) -> None:
    from projections.schema import timestamp_text  # noqa: PLC0415  # views imports this module

    grant = event.grant
    assert grant is not None
    expires_at = grant["expires_at"]
    view._run(
        cursor,
        "INSERT INTO {lots} (account_id, grant_id, amount, remaining, reserved, breakage, "
        "expires_at, effective_at, priority, category, sequence, granted_position, granted_at, "
        "position) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            account_id,
            event.transfer_id,
            event.amount,
            event.amount - grant["filled"],
            None if expires_at is None else timestamp_text(expires_at),
            timestamp_text(grant["effective_at"]),
            grant["priority"],
            grant["category"],
            grant["sequence"],
            position,
            at,
            position,
        ],
    )
    _record_change(view, cursor, account_id, event.transfer_id, position, at)


def _record_change(
    view: "LedgerViewMixin",
    cursor: "Cursor",
    account_id: str,
    grant_id: str,
    position: int,
    at: str,
) -> None:
    # One row per lot per position: two moves of one lot in one event fold into it (one
    # upsert, so that a burst of expiries costs the view two statements per lot, not three).
    view._run(
        cursor,
        "INSERT INTO {lot_changes} (account_id, grant_id, position, recorded_at, remaining, "
        "reserved, breakage) SELECT account_id, grant_id, ?, ?, remaining, reserved, breakage "
        "FROM {lots} WHERE account_id = ? AND grant_id = ? "
        "ON CONFLICT (account_id, grant_id, position) DO UPDATE SET "
        "remaining = excluded.remaining, reserved = excluded.reserved, "
        "breakage = excluded.breakage",
        [position, at, account_id, grant_id],
    )


# Reading ---------------------------------------------------------------------------------


def account_lots(
    view: "LedgerViewMixin",
    account_id: str,
    *,
    status: LotStatusFilter,
    at: datetime,
    position: int | None = None,
    after_position: int | None = None,
    limit: int = 100,
) -> LotPage:
    """The account's lots in grant order: now, or at a ``position`` (each lot's newest
    change at or before it); statuses as of ``at``, filtered in the query (a page is
    full whenever that many lots match)."""
    from projections.schema import parse_timestamp, timestamp_text  # noqa: PLC0415

    stamp = timestamp_text(at)
    conditions, params = ["l.account_id = ?"], [account_id]
    if after_position is not None:
        conditions.append("l.granted_position > ?")
        params.append(after_position)  # type: ignore[arg-type]
    figures_of = "l" if position is None else "c"
    if status != "all":
        conditions.append(_status_condition(status, figures_of))
        params.extend([stamp] * _STATUS_STAMPS[status])
    if position is None:
        figures = "l.remaining, l.reserved, l.breakage, l.position AS changed"
        source = "{lots} l"
    else:
        figures = "c.remaining, c.reserved, c.breakage, c.position AS changed"
        source = (
            "{lots} l JOIN {lot_changes} c ON c.account_id = l.account_id "
            "AND c.grant_id = l.grant_id AND c.position = (SELECT MAX(position) "
            "FROM {lot_changes} WHERE account_id = l.account_id AND grant_id = l.grant_id "
            "AND position <= ?)"
        )
        params.insert(0, position)  # type: ignore[arg-type]
    page_size = min(limit, LOTS_PAGE_SIZE_MAX)
    # One row past the page says whether there is a next page (no empty last page).
    rows = view._all(
        f"SELECT {_TERMS}, {figures} FROM {source} WHERE {' AND '.join(conditions)} "
        "ORDER BY l.granted_position LIMIT ?",
        [*params, page_size + 1],
    )
    more = len(rows) > page_size
    rows = rows[:page_size]
    lots = []
    for row in rows:
        expired = row["expires_at"] is not None and row["expires_at"] <= stamp
        lot_state = lot_status(
            int(row["remaining"]), int(row["reserved"]), int(row["breakage"]), expired
        )
        lots.append(
            LotRow(
                account_id=row["account_id"],
                grant_id=row["grant_id"],
                amount=int(row["amount"]),
                remaining=int(row["remaining"]),
                reserved=int(row["reserved"]),
                breakage=int(row["breakage"]),
                expires_at=parse_timestamp(row["expires_at"]) if row["expires_at"] else None,
                effective_at=parse_timestamp(row["effective_at"]),
                priority=int(row["priority"]),
                category=row["category"],
                status=lot_state,
                granted_position=int(row["granted_position"]),
                granted_at=parse_timestamp(row["granted_at"]),
                position=int(row["changed"]),
            )
        )
    return LotPage(items=lots, next_after=int(rows[-1]["granted_position"]) if more else None)


# How many times each status condition compares with the time asked about.
_STATUS_STAMPS: Final = {"live": 1, "expired": 1, "consumed": 0}


def _status_condition(status: LotStatusFilter, figures: str) -> str:
    """``lot_status`` as SQL over a lot's figures (``figures``: the alias of the table
    holding them) and its expiry compared with the time asked about (a ``?``)."""
    holds = f"({figures}.remaining <> 0 OR {figures}.reserved <> 0)"
    expired = "(l.expires_at IS NOT NULL AND l.expires_at <= ?)"
    empty = f"{figures}.remaining = 0 AND {figures}.reserved = 0"
    if status == "live":
        return f"{holds} AND NOT {expired}"
    if status == "expired":
        return f"(({holds} AND {expired}) OR ({empty} AND {figures}.breakage <> 0))"
    return f"{empty} AND {figures}.breakage = 0"


_TERMS: Final = (
    "l.account_id, l.grant_id, l.amount, l.expires_at, l.effective_at, l.priority, "
    "l.category, l.granted_position, l.granted_at"
)


def due_grant_expiries(
    view: "LedgerViewMixin", now: datetime, limit: int, after: str | None = None
) -> list[DueGrant]:
    """Grants whose expiry has come with something still free in their lot, in grant id
    order after ``after`` (a cursor: the expiry worker pages through a burst of them
    without waiting for the view to see the expiries it has just written)."""
    from projections.schema import timestamp_text  # noqa: PLC0415

    rows = view._all(
        "SELECT grant_id, account_id FROM {lots} WHERE expires_at IS NOT NULL "
        "AND expires_at <= ? AND remaining > reserved AND grant_id > ? ORDER BY grant_id LIMIT ?",
        [timestamp_text(now), after or "", limit],
    )
    return [DueGrant(row["grant_id"], row["account_id"]) for row in rows]


def unspendable_free(
    view: "LedgerViewMixin",
    account_id: str,
    at: datetime,
    *,
    position: int | None = None,
) -> int:
    """What the account's lots hold, unreserved, that cannot be spent at ``at`` (not yet
    effective, or expired): ``available`` is the counters' figure minus this. Now, or as
    the lots stood at a ``position``."""
    from projections.schema import timestamp_text  # noqa: PLC0415

    stamp = timestamp_text(at)
    unspendable = "(l.effective_at > ? OR (l.expires_at IS NOT NULL AND l.expires_at <= ?))"
    if position is None:
        row = view._one(
            "SELECT COALESCE(SUM(l.remaining - l.reserved), 0) AS free FROM {lots} l "
            f"WHERE l.account_id = ? AND {unspendable}",
            [account_id, stamp, stamp],
        )
        return int(row["free"])
    row = view._one(
        "SELECT COALESCE(SUM(c.remaining - c.reserved), 0) AS free FROM {lots} l "
        "JOIN {lot_changes} c ON c.account_id = l.account_id AND c.grant_id = l.grant_id "
        "AND c.position = (SELECT MAX(position) FROM {lot_changes} WHERE "
        "account_id = l.account_id AND grant_id = l.grant_id AND position <= ?) "
        f"WHERE l.account_id = ? AND {unspendable}",
        [position, account_id, stamp, stamp],
    )
    return int(row["free"])
