"""The reader: the read-model port's queries, in SQL over the views' tables."""

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final

import orjson

from app.application.read_model import (
    PAGE_SIZE_MAX,
    AccountFilter,
    Interval,
    TransferFilter,
    interval_bounds,
)
from app.application.views import (
    AccountView,
    DueGrant,
    HistoryPoint,
    LotPage,
    LotStatusFilter,
    StatementLine,
    TransferView,
    UnitTotals,
)
from app.domain.account import Account
from app.domain.lots import Allocation
from app.domain.postings import BalanceDelta
from app.domain.statement import statement_action
from projections.lots import account_lots, due_grant_expiries, unspendable_free
from projections.schema import APPLICATION_NAME, SqlAccess, parse_timestamp, timestamp_text

WAIT_POLL_SECONDS_MIN: Final = 0.002
WAIT_POLL_SECONDS_MAX: Final = 0.05
# A metadata filter joins one lookup per pair; more pairs than this is not a search.
METADATA_FILTERS_MAX: Final = 8

# What a page of accounts reads of each balances row (what ``_account`` builds a view
# from): fewer columns to send and decode than ``b.*``, on every list and search.
ACCOUNT_COLUMNS: Final = ", ".join(
    f"b.{column}"
    for column in (
        "account_id",
        "unit",
        "status",
        "allow_negative",
        "overdraft_limit",
        "account_type",
        "metadata",
        "debits_posted",
        "credits_posted",
        "debits_pending",
        "credits_pending",
        "position",
        "updated_at",
    )
)

# The kinds of statement line a transfer's recording writes, one on each leg's account;
# its later lines (a hold settled) are of other kinds.
_OPENING_LINES: Final = tuple(
    kind.__name__
    for kind in (Account.Debited, Account.Credited, Account.DebitReserved, Account.CreditReserved)
)

# A metadata pair carried by fewer transfers than this is an account listing's start
# (its index, then a sort of its matches); a commoner one is checked on each of the
# account's lines, in their order, until the page is full.
RARE_PAIR_TRANSFERS: Final = 1_000

_ZERO_COUNTERS: Final = {
    "debits_posted": 0,
    "credits_posted": 0,
    "debits_pending": 0,
    "credits_pending": 0,
}


class RowReader(SqlAccess):
    """Answers the read-model port (``app.application.read_model.ReadModel``)."""

    # Whether a search by metadata pairs is one statement that picks its rarest pair
    # itself (PostgreSQL: ``rarest_pair_search``); otherwise the pairs' counts are read
    # first and the rarest pair put first (SQLite keeps a CROSS JOIN's order).
    searches_in_one_statement: ClassVar[bool] = False

    if TYPE_CHECKING:  # provided by the library's tracking recorder we are mixed into

        def max_tracking_id(self, application_name: str) -> int | None: ...

    # Positions -------------------------------------------------------------------------

    def checkpoint(self) -> int:
        return self.max_tracking_id(APPLICATION_NAME) or 0

    def wait_for(self, position: int, timeout_seconds: float) -> bool:
        """Block until the view has applied ``position`` (True) or the timeout (False).
        While it waits it tells the view's writer which position it wants
        (``ask_for``), at each look: a writer pausing between batches under load
        applies what it has at once instead of after its pause."""
        deadline = time.monotonic() + timeout_seconds
        interval = WAIT_POLL_SECONDS_MIN
        while self.checkpoint() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.ask_for(position)
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, WAIT_POLL_SECONDS_MAX)
        return True

    def ask_for(self, position: int) -> None:
        """Tell this view's writer that a reader waits for ``position`` (where the
        writer can be told: ``SQLiteLedgerView``); nothing elsewhere."""
        del position

    def commit_end(self, position: int) -> int:
        """The last position of the commit that ``position`` falls in (as far as the
        view has seen it); ``position`` itself between commits."""
        return self._commit_span(position)[1]

    # Accounts --------------------------------------------------------------------------

    def balance(self, account_id: str) -> AccountView | None:
        row = self._one("SELECT * FROM {balances} WHERE account_id = ?", [account_id])
        if row is None:
            return None
        account = _account(row, row, row["position"], row["updated_at"])
        return self._with_lots(account, datetime.now(tz=UTC))

    def balance_at_position(self, account_id: str, position: int) -> AccountView | None:
        """The account as it stood after every event at or before ``position``."""
        account = self._one("SELECT * FROM {balances} WHERE account_id = ?", [account_id])
        then = None if account is None else self._account_then(account, position)
        if then is None:
            return None
        view, _ = then
        assert view.updated_at is not None, "a view row knows when it last changed"
        at = self.time_at_position(position) or view.updated_at
        return self._with_lots(view, at, position=position)

    def balance_as_of(self, account_id: str, moment: datetime) -> AccountView | None:
        """The account as it stood at ``moment``: at the position where ``moment`` cuts
        the log (``_cut``); ``position`` on the answer is its last change up to there.
        The cut is read with the account's row (one statement)."""
        account = self._one(
            f"SELECT b.*, {_cut_of(strict=False)} AS cut FROM {{balances}} b "
            "WHERE b.account_id = ?",
            [timestamp_text(moment), account_id],
        )
        if account is None:
            return None
        cut = 0 if account["cut"] is None else int(account["cut"])
        then = self._account_then(account, cut)
        if then is None:
            return None
        view, changed = then
        return self._with_lots(replace(view, position=changed), moment, position=cut)

    def _account_then(self, account: Any, position: int) -> tuple[AccountView, int] | None:
        """The account (its ``balances`` row) after every event at or before ``position``
        (``position`` on the view), and the position of its last change up to there;
        None before it opened."""
        if account["opened_position"] > position:
            return None
        account_id = account["account_id"]
        entry = self._one(
            "SELECT * FROM {entries} WHERE account_id = ? AND position <= ? "
            "ORDER BY position DESC LIMIT 1",
            [account_id, position],
        )
        closed = account["closed_position"] is not None and account["closed_position"] <= position
        metadata = self._one(
            "SELECT metadata FROM {metadata_changes} WHERE account_id = ? AND position <= ? "
            "ORDER BY position DESC LIMIT 1",
            [account_id, position],
        )
        changed = max(
            entry["position"] if entry else account["opened_position"],
            account["closed_position"] if closed else 0,
        )
        return _as_of(account, entry, position, closed=closed, metadata=metadata), changed

    def _cut(self, moment: datetime, *, strict: bool = False) -> int:
        """Where ``moment`` cuts the log: the end of the last whole commit such that no
        event up to it was recorded after ``moment`` (at or after it: ``strict``); 0
        before the first. Every read by time reads the views at this position, so that
        it is one state of the log whatever the clock did (decision 0036)."""
        row = self._one(f"SELECT {_cut_of(strict=strict)} AS cut", [timestamp_text(moment)])
        return 0 if row is None or row["cut"] is None else int(row["cut"])

    def cut(self, moment: datetime) -> int:
        """Where ``moment`` cuts the log (``_cut``): the position an answer as of it
        reflects."""
        return self._cut(moment)

    def _with_lots(
        self, account: AccountView, at: datetime, *, position: int | None = None
    ) -> AccountView:
        """``available`` as spending saw it at ``at``: without unspendable lots (future
        or expired grants, projections/lots.py), as they stood at ``position``."""
        unspendable = unspendable_free(self, account.id, at, position=position)
        if not unspendable:
            return account
        spendable = account.balance - account.debits_pending - unspendable
        return replace(account, lots_available=spendable)

    def accounts(self, query: AccountFilter) -> list[AccountView]:
        """Accounts in id order, filtered; every filter is an index range or lookup.

        With metadata pairs, the rarest pair's index (key, value, account_id) drives the
        query in id order. SQLite reads the pairs' counts first, puts the rarest first
        and keeps that order (``joined_search``); PostgreSQL does it all in one
        statement whose plan does not depend on its statistics (``rarest_pair_search``)."""
        pairs = sorted(query.metadata.items())
        assert len(pairs) <= METADATA_FILTERS_MAX, "checked at the edge"
        if pairs and self.searches_in_one_statement:
            rows = self._all(*rarest_pair_search(query, pairs))
            return [_account(row, row, row["position"], row["updated_at"]) for row in rows]
        if len(pairs) > 1:
            counts = self._pair_counts(pairs)
            if min(counts.values(), default=0) == 0 or len(counts) < len(pairs):
                return []  # some pair is on no account
            pairs.sort(key=lambda pair: (counts[pair], pair))
        rows = self._all(*joined_search(query, pairs))
        return [_account(row, row, row["position"], row["updated_at"]) for row in rows]

    def _pair_counts(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """How many accounts have each pair (pairs on no account are left out)."""
        rows = self._all(
            "SELECT key, value, accounts FROM {account_metadata_counts} WHERE "
            + " OR ".join("(key = ? AND value = ?)" for _ in pairs),
            [part for pair in pairs for part in pair],
        )
        return {(row["key"], row["value"]): int(row["accounts"]) for row in rows}

    def all_balances(self) -> Iterator[AccountView]:
        """Every account, in id order, page by page (constant memory)."""
        after = ""
        while True:
            page = self.accounts(AccountFilter(after_id=after, limit=PAGE_SIZE_MAX))
            yield from page
            if len(page) < PAGE_SIZE_MAX:
                return
            after = page[-1].id

    def history(
        self, account_id: str, interval: Interval, since: datetime, until: datetime
    ) -> list[HistoryPoint]:
        """The account at the end of each interval (where the instant cuts the log,
        before it): two index lookups per interval."""
        points = []
        for start, end in interval_bounds(interval, since, until):
            entry = self._one(
                "SELECT * FROM {entries} WHERE account_id = ? "
                f"AND position <= {_cut_of(strict=True)} ORDER BY position DESC LIMIT 1",
                [account_id, timestamp_text(end)],
            )
            counters = entry if entry is not None else _ZERO_COUNTERS
            points.append(
                HistoryPoint(
                    start=start,
                    end=end,
                    position=int(entry["position"]) if entry is not None else 0,
                    debits_posted=int(counters["debits_posted"]),
                    credits_posted=int(counters["credits_posted"]),
                    debits_pending=int(counters["debits_pending"]),
                    credits_pending=int(counters["credits_pending"]),
                )
            )
        return points

    def totals(
        self, *, position: int | None = None, moment: datetime | None = None
    ) -> list[UnitTotals]:
        """Per unit, each account's counters as of ``position`` or ``moment`` (where it
        cuts the log: ``_cut``)."""
        if position is None:
            assert moment is not None, "totals need a position or a moment"
            position = self._cut(moment)
        rows = self._all(
            "SELECT b.unit AS unit, COUNT(*) AS account_count, "
            "COALESCE(SUM(l.debits_posted), 0) AS debits_posted, "
            "COALESCE(SUM(l.credits_posted), 0) AS credits_posted "
            "FROM {balances} b LEFT JOIN {entries} l ON l.account_id = b.account_id "
            "AND l.position = (SELECT e.position FROM {entries} e "
            "WHERE e.account_id = b.account_id AND e.position <= ? "
            "ORDER BY e.position DESC LIMIT 1) "
            "WHERE b.opened_position <= ? GROUP BY b.unit ORDER BY b.unit",
            [position, position],
        )
        return [
            UnitTotals(
                unit=row["unit"],
                debits_posted=int(row["debits_posted"]),
                credits_posted=int(row["credits_posted"]),
                balance_sum=int(row["credits_posted"]) - int(row["debits_posted"]),
                account_count=int(row["account_count"]),
            )
            for row in rows
        ]

    # Statements ------------------------------------------------------------------------

    def entries(
        self,
        account_id: str,
        *,
        before_position: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[StatementLine]:
        """Statement lines, newest first; ``before_position`` is the page cursor;
        ``since`` and ``until`` bound them by where each instant cuts the log (before
        it): a range of the primary key."""
        conditions, params = ["e.account_id = ?"], [account_id]
        if before_position is not None:
            conditions.append("e.position < ?")
            params.append(before_position)  # type: ignore[arg-type]
        if since is not None:
            conditions.append(f"e.position > COALESCE({_cut_of(strict=True)}, 0)")
            params.append(timestamp_text(since))
        if until is not None:
            conditions.append(f"e.position <= {_cut_of(strict=True)}")
            params.append(timestamp_text(until))
        rows = self._all(
            "SELECT e.*, t.debit_account_id, t.credit_account_id, t.metadata, "
            "t.status AS transfer_status "
            "FROM {entries} e LEFT JOIN {transfers} t ON t.transfer_id = e.transfer_id "
            f"WHERE {' AND '.join(conditions)} ORDER BY e.position DESC LIMIT ?",
            [*params, min(limit, PAGE_SIZE_MAX)],
        )
        return [_statement_line(row) for row in rows]

    def entry_counts(self) -> dict[str, int]:
        rows = self._all("SELECT account_id, COUNT(*) AS n FROM {entries} GROUP BY account_id")
        return {row["account_id"]: int(row["n"]) for row in rows}

    # Transfers -------------------------------------------------------------------------

    def transfer(self, transfer_id: str) -> TransferView | None:
        row = self._one("SELECT * FROM {transfers} WHERE transfer_id = ?", [transfer_id])
        return None if row is None else _transfer(row)

    def transfers(self, query: TransferFilter) -> list[TransferView]:
        """A page of transfers, from the narrowest start an account's listing has
        (decision 0033): a hold's status from the partial indexes of the transfers not
        posted; a metadata pair that few transfers carry from its index; otherwise the
        account's lines."""
        account_id = query.account_id
        if account_id is None:
            return self._listed(query)
        if query.status is not None and query.status != "posted":
            return self._held(query, account_id)
        if query.metadata and self._a_rare_pair(query.metadata):
            return self._listed(query, account_id)
        return self._account_transfers(query, account_id)

    def _listed(self, query: TransferFilter, account_id: str | None = None) -> list[TransferView]:
        """In position order from the transfers' own indexes (with metadata pairs, from
        the pairs' index), the account a filter on each row."""
        conditions, params = _transfer_conditions(query)
        if account_id is not None:
            conditions[:0] = ["(t.debit_account_id = ? OR t.credit_account_id = ?)"]
            params[:0] = [account_id, account_id]
        joins, join_params = _metadata_joins(
            query.metadata, "transfer_metadata", "transfer_id", "t.transfer_id"
        )
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        direction = "DESC" if query.order == "desc" else "ASC"
        rows = self._all(
            f"SELECT t.* FROM {{transfers}} t {joins}{where}"
            f"ORDER BY t.position {direction} LIMIT ?",
            [*join_params, *params, min(query.limit, PAGE_SIZE_MAX)],
        )
        return [_transfer(row) for row in rows]

    def _held(self, query: TransferFilter, account_id: str) -> list[TransferView]:
        """An account's transfers of a status but ``posted``: a page from each leg's
        partial index (``transfers_held_by_debit``, ``..._by_credit``; the condition
        ``status <> 'posted'`` repeated so that the planner may use them), merged. One
        query per leg under ``UNION ALL``: SQLite plans an ``OR`` of the two legs with
        the status index instead, a walk of every transfer of that status."""
        # The status compared as an expression (``|| ''``): SQLite, without statistics,
        # would walk the status index for an equality on its first column.
        conditions, params = _transfer_conditions(replace(query, status=None))
        conditions[:0] = ["t.status || '' = ?"]
        params[:0] = [query.status]
        joins, join_params = _metadata_joins(
            query.metadata, "transfer_metadata", "transfer_id", "t.transfer_id"
        )
        direction = "DESC" if query.order == "desc" else "ASC"
        limit = min(query.limit, PAGE_SIZE_MAX)
        legs: list[str] = []
        leg_params: list[Any] = []
        for leg, other in (("debit", "credit"), ("credit", "debit")):
            # The credit leg leaves out a transfer the debit leg found (one account on
            # both legs is refused at the edge; this keeps the union exact regardless).
            where = [f"t.{leg}_account_id = ?", "t.status <> 'posted'", *conditions]
            leg_values = [account_id, *params]
            if leg == "credit":
                where.append(f"t.{other}_account_id <> ?")
                leg_values.append(account_id)
            legs.append(
                f"SELECT * FROM (SELECT t.* FROM {{transfers}} t {joins}"
                f"WHERE {' AND '.join(where)} ORDER BY t.position {direction} LIMIT ?) AS {leg}"
            )
            leg_params += [*join_params, *leg_values, limit]
        rows = self._all(
            f"SELECT * FROM ({' UNION ALL '.join(legs)}) AS held "
            f"ORDER BY position {direction} LIMIT ?",
            [*leg_params, limit],
        )
        return [_transfer(row) for row in rows]

    def _a_rare_pair(self, metadata: Mapping[str, str]) -> bool:
        """Whether fewer than ``RARE_PAIR_TRANSFERS`` transfers carry one of these pairs
        (each count bounded by that): then the pair's index is the narrower start;
        a commoner pair is checked on each of the account's lines instead."""
        for key, value in metadata.items():
            row = self._one(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM {transfer_metadata} "
                "WHERE key = ? AND value = ? LIMIT ?) AS matches",
                [key, value, RARE_PAIR_TRANSFERS],
            )
            if row is not None and int(row["n"]) < RARE_PAIR_TRANSFERS:
                return True
        return False

    def _account_transfers(self, query: TransferFilter, account_id: str) -> list[TransferView]:
        """The transfers with ``account_id`` on a leg (all, or those posted), through the
        account's ``entries`` (its primary key, in position order) rather than an index
        of the transfers per debit and per credit account, which every transfer would
        write. Each leg's first line of a transfer (a debit, a credit or a reservation)
        is in the commit that recorded the transfer, and the writer puts an account's
        lines in its transfers' order (the group's commands in turn), so the lines'
        order is the transfers' order (decision 0033 addendum; a test holds the writer
        to it). Metadata pairs (common ones: ``_a_rare_pair``) are checked per line."""
        descending = query.order == "desc"
        conditions, params = _transfer_conditions(query)
        conditions[:0] = [
            "e.account_id = ?",
            f"e.kind IN ({', '.join('?' * len(_OPENING_LINES))})",
            "t.transfer_id = e.transfer_id",
            "(t.debit_account_id = ? OR t.credit_account_id = ?)",
        ]
        params[:0] = [account_id, *_OPENING_LINES, account_id, account_id]
        for index, pair in enumerate(sorted(query.metadata.items())):
            conditions.append(
                f"EXISTS (SELECT 1 FROM {{transfer_metadata}} m{index} WHERE "
                f"m{index}.transfer_id = t.transfer_id AND m{index}.key = ? "
                f"AND m{index}.value = ?)"
            )
            params += pair
        if query.cursor is not None:  # the lines of the cursor's commit, and past it
            start, end = self._commit_span(query.cursor)
            conditions.append("e.position <= ?" if descending else "e.position >= ?")
            params.append(end if descending else start)
        # CROSS JOIN: SQLite keeps the lines as the outer loop (the account's key).
        rows = self._all(
            "SELECT t.* FROM {entries} e CROSS JOIN {transfers} t "
            f"WHERE {' AND '.join(conditions)} "
            f"ORDER BY e.position {'DESC' if descending else 'ASC'} LIMIT ?",
            [*params, min(query.limit, PAGE_SIZE_MAX)],
        )
        return [_transfer(row) for row in rows]

    def _commit_span(self, position: int) -> tuple[int, int]:
        """The first and last position of the commit ``position`` falls in (as far as
        the view has seen it); ``position`` alone between commits."""
        row = self._one(
            "SELECT start_position, end_position FROM {commits} WHERE start_position <= ? "
            "ORDER BY start_position DESC LIMIT 1",
            [position],
        )
        if row is None or int(row["end_position"]) < position:
            return position, position
        return int(row["start_position"]), int(row["end_position"])

    def due_expiries(self, now: datetime, limit: int) -> list[str]:
        rows = self._all(
            "SELECT transfer_id FROM {transfers} WHERE status = 'pending' "
            "AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            [timestamp_text(now), limit],
        )
        return [row["transfer_id"] for row in rows]

    def due_grant_expiries(
        self, now: datetime, limit: int, after: str | None = None
    ) -> list[DueGrant]:
        return due_grant_expiries(self, now, limit, after)

    # Lots ------------------------------------------------------------------------------

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
        """The account's credit lots (projections/lots.py); as of a ``moment``, at the
        position where it cuts the log."""
        if moment is not None:
            position = self._cut(moment)
        return account_lots(
            self,
            account_id,
            status=status,
            at=at,
            position=position,
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

    def transfer_page(self, after_id: str, limit: int) -> list[TransferView]:
        """Transfers in id order after ``after_id``: for audits that walk the index."""
        rows = self._all(
            "SELECT * FROM {transfers} WHERE transfer_id > ? ORDER BY transfer_id LIMIT ?",
            [after_id, min(limit, PAGE_SIZE_MAX)],
        )
        return [_transfer(row) for row in rows]


def _cut_of(*, strict: bool) -> str:
    """Where an instant (one ``?``) cuts the log, as a scalar subquery (NULL before the
    first commit): the end of the last whole commit whose ``latest_at`` is at or before
    it (before it: ``strict``). ``latest_at`` rises with the start position, so this is
    one descent of ``commits_by_time`` (the commit a batch boundary cut, if any, is the
    newest row: one step more)."""
    compare = "<" if strict else "<="
    return (
        f"(SELECT end_position FROM {{commits}} WHERE latest_at {compare} ? AND whole "
        "ORDER BY latest_at DESC, start_position DESC LIMIT 1)"
    )


def _id_range(query: AccountFilter, ids: str) -> tuple[list[str], list[Any]]:
    """The page's start and the id prefix, as ranges on the id column ``ids``."""
    conditions: list[str] = []
    params: list[Any] = []
    if query.after_id is not None:
        conditions.append(f"{ids} > ?")
        params.append(query.after_id)
    if query.prefix:
        # A range on the id, not LIKE: sub-linear on both backends.
        conditions.append(f"{ids} >= ? AND {ids} < ?")
        params += [query.prefix, query.prefix + "\U0010ffff"]
    return conditions, params


def joined_search(query: AccountFilter, pairs: list[tuple[str, str]]) -> tuple[str, list[Any]]:
    """The search as a join of one lookup per pair (in the order given, the first one
    driving: CROSS JOIN keeps SQLite's planner to it) and the balances."""
    ids = "m0.account_id" if pairs else "b.account_id"
    tables = [f"{{account_metadata}} m{n}" for n in range(len(pairs))] + ["{balances} b"]
    conditions: list[str] = []
    params: list[Any] = []
    for number, (key, value) in enumerate(pairs):
        conditions.append(f"m{number}.key = ? AND m{number}.value = ?")
        params += [key, value]
        if number:
            conditions.append(f"m{number}.account_id = m0.account_id")
    if pairs:
        conditions.append("b.account_id = m0.account_id")
    id_conditions, id_params = _id_range(query, ids)
    conditions += id_conditions
    params += id_params
    if query.unit is not None:
        conditions.append("b.unit = ?")
        params.append(query.unit)
    if query.status is not None:
        conditions.append("b.status = ?")
        params.append(query.status)
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    return (
        f"SELECT {ACCOUNT_COLUMNS} FROM {' CROSS JOIN '.join(tables)} {where}"
        f"ORDER BY {ids} LIMIT ?",
        [*params, min(query.limit, PAGE_SIZE_MAX)],
    )


def rarest_pair_search(query: AccountFilter, pairs: list[tuple[str, str]]) -> tuple[str, list[Any]]:
    """A search by metadata pairs (PostgreSQL) whose plan holds whatever the statistics.

    The statement picks the rarest pair itself (``account_metadata_counts``, in a
    MATERIALIZED CTE read once) and walks that pair's index in id order, an index range
    whose bounds are the pick's values; each pair row carries its account's metadata
    (JSONB), so the other pairs are checked on the row walked (``@>``), never by a join
    the planner would order from its statistics. The unit and the status, when asked,
    are probed per account by a correlated ``EXISTS (... OFFSET 0)``, which the planner
    keeps as a per-row index probe. The page's ids then fetch their balances by primary
    key (an array, not a join). Without statistics (a view just built in bulk) the
    planner, believing each pair matched 2 rows, had joined the balances before the
    second pair and walked the commonest pair: ~2,000 accounts checked to answer 100."""
    conditions: list[str] = []
    params: list[Any] = []
    pick = ""
    if len(pairs) == 1:
        conditions.append("m.key = ? AND m.value = ?")
        params += pairs[0]
    else:
        pick = (
            "WITH pick AS MATERIALIZED (SELECT key, value FROM {account_metadata_counts} "
            f"WHERE (key, value) IN ({', '.join('(?, ?)' for _ in pairs)}) "
            "ORDER BY accounts, key, value LIMIT 1) "
        )
        params += [part for pair in pairs for part in pair]
        conditions.append(
            "m.key = (SELECT key FROM pick) AND m.value = (SELECT value FROM pick) "
            "AND m.metadata @> ?::jsonb"
        )
        params.append(json.dumps(dict(pairs)))
    id_conditions, id_params = _id_range(query, "m.account_id")
    conditions += id_conditions
    params += id_params
    balance_conditions = [
        (f"f.{column} = ?", wanted)
        for column, wanted in (("unit", query.unit), ("status", query.status))
        if wanted is not None
    ]
    if balance_conditions:
        conditions.append(
            "EXISTS (SELECT FROM {balances} f WHERE f.account_id = m.account_id AND "
            + " AND ".join(condition for condition, _ in balance_conditions)
            + " OFFSET 0)"
        )
        params += [wanted for _, wanted in balance_conditions]
    statement = (
        f"{pick}SELECT {ACCOUNT_COLUMNS} FROM {{balances}} b WHERE b.account_id = ANY(ARRAY("
        f"SELECT m.account_id FROM {{account_metadata}} m WHERE {' AND '.join(conditions)} "
        "ORDER BY m.account_id LIMIT ?)) ORDER BY b.account_id"
    )
    return statement, [*params, min(query.limit, PAGE_SIZE_MAX)]


def _transfer_conditions(query: TransferFilter) -> tuple[list[str], list[Any]]:
    """The conditions on the transfers' own columns (``t``), but their account's."""
    conditions: list[str] = []
    params: list[Any] = []
    if query.status is not None:
        conditions.append("t.status = ?")
        params.append(query.status)
    if query.since is not None:
        conditions.append("t.recorded_at >= ?")
        params.append(timestamp_text(query.since))
    if query.until is not None:
        conditions.append("t.recorded_at < ?")
        params.append(timestamp_text(query.until))
    if query.cursor is not None:
        conditions.append("t.position < ?" if query.order == "desc" else "t.position > ?")
        params.append(query.cursor)
    return conditions, params


def _metadata_joins(
    metadata: Mapping[str, str], table: str, key_column: str, outer: str
) -> tuple[str, list[Any]]:
    """One indexed join per ``metadata.KEY=VALUE`` pair (all must match)."""
    assert len(metadata) <= METADATA_FILTERS_MAX, "checked at the edge"
    joins, params = [], []
    for index, (key, value) in enumerate(sorted(metadata.items())):
        alias = f"m{index}"
        joins.append(
            f"JOIN {{{table}}} {alias} ON {alias}.{key_column} = {outer} "
            f"AND {alias}.key = ? AND {alias}.value = ? "
        )
        params += [key, value]
    return "".join(joins), params


def _as_of(account: Any, entry: Any, position: int, *, closed: bool, metadata: Any) -> AccountView:
    """The account at a past instant: the counters of its last entry then, its status
    then, and its metadata then (the row of ``metadata_changes`` in force)."""
    counters = entry if entry is not None else _ZERO_COUNTERS
    updated_at = entry["recorded_at"] if entry is not None else account["opened_at"]
    view = _account(account, counters, position, updated_at)
    then = view.metadata if metadata is None else json.loads(metadata["metadata"])
    return AccountView(
        **{**view.__dict__, "status": "closed" if closed else "open", "metadata": then}
    )


def _account(account: Any, counters: Any, position: int, updated_at: str) -> AccountView:
    return AccountView(
        id=account["account_id"],
        unit=account["unit"],
        status=account["status"],
        allow_negative=bool(account["allow_negative"]),
        overdraft_limit=int(account["overdraft_limit"]),
        account_type=account["account_type"],
        metadata=orjson.loads(account["metadata"]),
        debits_posted=int(counters["debits_posted"]),
        credits_posted=int(counters["credits_posted"]),
        debits_pending=int(counters["debits_pending"]),
        credits_pending=int(counters["credits_pending"]),
        position=int(position),
        updated_at=parse_timestamp(updated_at),
    )


def _statement_line(row: Any) -> StatementLine:
    delta = BalanceDelta(
        debits_posted=int(row["debits_posted_delta"]),
        credits_posted=int(row["credits_posted_delta"]),
        debits_pending=int(row["debits_pending_delta"]),
        credits_pending=int(row["credits_pending_delta"]),
    )
    action = statement_action(row["kind"], delta, row["transfer_status"])
    debit_side = bool(delta.debits_posted or delta.debits_pending)
    counterparty = row["credit_account_id"] if debit_side else row["debit_account_id"]
    return StatementLine(
        account_id=row["account_id"],
        position=int(row["position"]),
        transfer_id=row["transfer_id"],
        kind=row["kind"],
        action=action,
        amount=entry_amount(delta),
        balance_change=delta.balance,
        available_change=delta.available,
        counterparty_id=counterparty,
        debits_posted=int(row["debits_posted"]),
        credits_posted=int(row["credits_posted"]),
        debits_pending=int(row["debits_pending"]),
        credits_pending=int(row["credits_pending"]),
        recorded_at=parse_timestamp(row["recorded_at"]),
        metadata=json.loads(row["metadata"]) if row["metadata"] else {},
        allocations=_allocations_of(row["allocations"]),
    )


def entry_amount(delta: BalanceDelta) -> int:
    """A statement line's signed amount: what it did to the posted balance, or for a
    line that only reserves or releases, to the pending amount on its side."""
    if delta.balance:
        return delta.balance
    return delta.credits_pending - delta.debits_pending


def _transfer(row: Any) -> TransferView:
    return TransferView(
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


def _allocations_of(text: str | None) -> tuple[Allocation, ...]:
    return tuple(Allocation(a["grant_id"], a["amount"]) for a in json.loads(text or "[]"))


def _grant_of(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    grant: dict[str, Any] = json.loads(text)
    for key in ("expires_at", "effective_at", "requested_effective_at"):
        if grant.get(key) is not None:
            grant[key] = parse_timestamp(grant[key])
    return grant
