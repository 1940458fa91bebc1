"""The audit: every invariant of SPEC.md checked over the whole log, independently of
the projections, and then the projections checked against it.

Memory stays bounded whatever the log length: accounts are folded in memory (their
state is O(1) each), while per-transfer and per-stream bookkeeping lives in a scratch
SQLite file that is flushed page by page and queried at the end.
"""

import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from app.application.ledger import Ledger
from app.application.read_model import PAGE_SIZE_MAX, ReadModel
from app.audit.log import LOG_PAGE_SIZE, Instant, InstantWindow, read_log
from app.audit.lots import LotAudit
from app.audit.replay import ReplayedAccount, Replayer
from app.domain.account import Account
from app.domain.chain import GENESIS, expected_chain
from app.domain.transfer import Transfer

VIOLATIONS_KEPT_MAX: Final = 1000
PROJECTION_WAIT_SECONDS: Final = 30.0
SQLITE_IN_CLAUSE_MAX: Final = 500


@dataclass(frozen=True)
class Violation:
    kind: str
    subject: str
    detail: str
    position: int | None = None


@dataclass
class AuditReport:
    instant: Instant
    events: int = 0
    accounts: int = 0
    transfers: int = 0
    unit_sums: dict[str, int] = field(default_factory=dict)
    unit_sums_at_instant: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    projections_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def add(self, violation: Violation) -> None:
        self.violation_count += 1
        if len(self.violations) < VIOLATIONS_KEPT_MAX:
            self.violations.append(violation)


@dataclass
class _TransferPage:
    """Per-transfer facts gathered in one page of the log, before they are flushed."""

    records: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # Per transfer: the sums of its legs (debits and credits, posted and pending), their
    # count, and the position of its first line opening it on a debit and on a credit
    # account (a debit or debit reservation; a credit or credit reservation), if any.
    legs: dict[str, list[Any]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0, 0, None, None])
    )
    statuses: list[tuple[str, int | None, str]] = field(default_factory=list)


SCRATCH_SCHEMA: Final = [
    "CREATE TABLE streams (stream_id TEXT PRIMARY KEY, last_version INTEGER, "
    "last_chain TEXT, broken INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE transfers (transfer_id TEXT PRIMARY KEY, stream_id TEXT, unit TEXT, "
    "amount INTEGER, pending INTEGER, status TEXT, amount_posted INTEGER, "
    "debit_account_id TEXT, credit_account_id TEXT, recorded INTEGER NOT NULL DEFAULT 0, "
    "dp INTEGER NOT NULL DEFAULT 0, cp INTEGER NOT NULL DEFAULT 0, "
    "dpend INTEGER NOT NULL DEFAULT 0, cpend INTEGER NOT NULL DEFAULT 0, "
    "legs INTEGER NOT NULL DEFAULT 0, position INTEGER, debit_line INTEGER, "
    "credit_line INTEGER)",
    "CREATE INDEX transfers_by_stream ON transfers (stream_id)",
]
# The lines that open a transfer on an account, on its debit side and on its credit
# side: an account lists its transfers in the order of these lines (decision 0033).
OPENS_DEBIT: Final = (Account.Debited, Account.DebitReserved)
OPENS_CREDIT: Final = (Account.Credited, Account.CreditReserved)


@contextmanager
def scratch_database() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory(prefix="ledger-audit-") as folder:
        connection = sqlite3.connect(Path(folder) / "scratch.sqlite", isolation_level=None)
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        for statement in SCRATCH_SCHEMA:
            connection.execute(statement)
        try:
            yield connection
        finally:
            connection.close()


class Auditor:
    def __init__(
        self,
        ledger: Ledger,
        instant: Instant,
        view: ReadModel | None = None,
    ) -> None:
        self.ledger = ledger
        self.instant = instant
        self.view = view
        self.report = AuditReport(instant)
        self.full = Replayer()
        self.at_instant = Replayer()
        self.window = InstantWindow(instant)
        self.entry_counts: dict[str, int] = defaultdict(int)
        self.lots = LotAudit(
            lambda kind, subject, detail, position: self.report.add(
                Violation(kind, subject, detail, None if position < 0 else position)
            )
        )

    def run(self, on_page: Callable[[int, int], None] | None = None) -> AuditReport:
        with scratch_database() as scratch:
            self.scratch = scratch
            page: list[tuple[int, Any]] = []
            for position, event in read_log(self.ledger, on_page=on_page):
                page.append((position, event))
                if len(page) >= LOG_PAGE_SIZE:
                    self._process_page(page)
                    page = []
            self._process_page(page)
            self._check_transfers()
            self._check_pending_holds()
            self._check_opening_order()
            self._check_unit_sums()
            self.lots.check_breakage(datetime.now(tz=UTC))
            if self.view is not None:
                self._check_projections(self.view)
        return self.report

    # One page of the log ---------------------------------------------------------------

    def _process_page(self, page: list[tuple[int, Any]]) -> None:
        if not page:
            return
        transfers = _TransferPage()
        for position, event in page:
            self.report.events += 1
            self._fold_accounts(position, event)
            self._gather_transfer_facts(position, event, transfers)
        # One transaction for the page's writes: the scratch connection commits each
        # statement on its own, each row of an ``executemany`` too (4x the CPU). A failure
        # needs no rollback: it ends the run, and the scratch database goes with it.
        self.scratch.execute("BEGIN")
        self._flush_transfers(transfers)
        self._check_streams(page)
        self.scratch.execute("COMMIT")

    def _fold_accounts(self, position: int, event: Any) -> None:
        # Independent on purpose: the audit folds the log itself (app.audit.replay) and
        # keeps its own transfer bookkeeping in a scratch database, rather than using the
        # read model (projections/) or its fold, because it exists to catch their bugs.
        self.lots.apply(position, event)
        account = self.full.apply(position, event)
        for admitted_position, admitted in self.window.admit(position, event):
            self.at_instant.apply(admitted_position, admitted)
        if account is None or not isinstance(event, Account.BalanceChanged):
            return
        self.entry_counts[account.id] += 1
        floor = None if account.allow_negative else -account.overdraft_limit
        if floor is not None and account.available < floor:
            self.report.add(
                Violation(
                    "below_floor",
                    account.id,
                    f"available {account.available} below floor {floor} after {event.transfer_id}",
                    position,
                )
            )

    def _gather_transfer_facts(self, position: int, event: Any, page: _TransferPage) -> None:
        # Independent on purpose: these legs sums and statuses are the audit's own, not
        # the domain's fold (app.domain.postings.post) or fate rule (fate_after), which
        # every other reader shares: a bug there must not hide from the cross-check.
        if isinstance(event, Transfer.TransferRecorded):
            if event.originator_version != Transfer.INITIAL_VERSION or (
                event.transfer_id in page.records
            ):
                self.report.add(
                    Violation(
                        "duplicate_transfer",
                        event.transfer_id,
                        "transfer recorded twice",
                        position,
                    )
                )
                return
            page.records[event.transfer_id] = (
                event.transfer_id,
                event.originator_id.hex,
                event.unit,
                event.amount,
                int(event.pending),
                "pending" if event.pending else "posted",
                0 if event.pending else event.amount,
                event.debit_account_id,
                event.credit_account_id,
                position,
            )
        elif isinstance(event, Account.BalanceChanged):
            delta = event.delta()
            legs = page.legs[event.transfer_id]
            legs[0] += delta.debits_posted
            legs[1] += delta.credits_posted
            legs[2] += delta.debits_pending
            legs[3] += delta.credits_pending
            legs[4] += 1
            side = (
                5 if isinstance(event, OPENS_DEBIT) else 6 if isinstance(event, OPENS_CREDIT) else 0
            )
            if side and legs[side] is None:
                legs[side] = position
        elif isinstance(event, Transfer.PendingPosted):
            page.statuses.append(("posted", event.amount, event.originator_id.hex))
        elif isinstance(event, Transfer.PendingVoided):
            page.statuses.append(("voided", None, event.originator_id.hex))
        elif isinstance(event, Transfer.PendingExpired):
            page.statuses.append(("expired", None, event.originator_id.hex))

    def _flush_transfers(self, page: _TransferPage) -> None:
        self.scratch.executemany(
            "INSERT INTO transfers (transfer_id, stream_id, unit, amount, pending, status, "
            "amount_posted, debit_account_id, credit_account_id, position, recorded) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (transfer_id) DO UPDATE SET "
            "stream_id = excluded.stream_id, unit = excluded.unit, amount = excluded.amount, "
            "pending = excluded.pending, status = excluded.status, "
            "amount_posted = excluded.amount_posted, "
            "debit_account_id = excluded.debit_account_id, "
            "credit_account_id = excluded.credit_account_id, position = excluded.position, "
            "recorded = transfers.recorded + 1",
            list(page.records.values()),
        )
        self.scratch.executemany(
            "INSERT INTO transfers (transfer_id, dp, cp, dpend, cpend, legs, debit_line, "
            "credit_line) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (transfer_id) DO UPDATE "
            "SET dp = dp + excluded.dp, cp = cp + excluded.cp, dpend = dpend + excluded.dpend, "
            "cpend = cpend + excluded.cpend, legs = legs + excluded.legs, "
            "debit_line = COALESCE(debit_line, excluded.debit_line), "
            "credit_line = COALESCE(credit_line, excluded.credit_line)",
            [(transfer_id, *legs) for transfer_id, legs in page.legs.items()],
        )
        self.scratch.executemany(
            "UPDATE transfers SET status = ?, amount_posted = COALESCE(?, amount_posted) "
            "WHERE stream_id = ?",
            page.statuses,
        )

    def _check_streams(self, page: list[tuple[int, Any]]) -> None:
        """Versions without gaps and unbroken hash chains, stream by stream."""
        stream_ids = sorted({event.originator_id.hex for _, event in page})
        known: dict[str, list[Any]] = {}
        for start in range(0, len(stream_ids), SQLITE_IN_CLAUSE_MAX):
            chunk = stream_ids[start : start + SQLITE_IN_CLAUSE_MAX]
            marks = ",".join("?" * len(chunk))
            for row in self.scratch.execute(
                f"SELECT stream_id, last_version, last_chain, broken FROM streams "  # noqa: S608
                f"WHERE stream_id IN ({marks})",
                chunk,
            ):
                known[row[0]] = [row[1], row[2], row[3]]
        for position, event in page:
            stream_id = event.originator_id.hex
            last_version, last_chain, broken = known.get(stream_id, [None, GENESIS, 0])
            expected_version = 0 if last_version is None else last_version + 1
            if event.originator_version != expected_version:
                self.report.add(
                    Violation(
                        "version_gap",
                        stream_id,
                        f"version {event.originator_version} follows {last_version}",
                        position,
                    )
                )
            if not broken and getattr(event, "chain", None) != expected_chain(last_chain, event):
                broken = 1
                self.report.add(
                    Violation(
                        "broken_chain",
                        self._subject(event, stream_id),
                        f"first broken link at version {event.originator_version} "
                        f"({type(event).__qualname__})",
                        position,
                    )
                )
            known[stream_id] = [event.originator_version, getattr(event, "chain", ""), broken]
        self.scratch.executemany(
            "INSERT INTO streams VALUES (?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
            "last_version = excluded.last_version, last_chain = excluded.last_chain, "
            "broken = excluded.broken",
            [(stream_id, *values) for stream_id, values in known.items()],
        )

    def _subject(self, event: Any, stream_id: str) -> str:
        """A name a person recognises: the account or transfer id where we know it."""
        account = self.full.accounts.get(event.originator_id)
        if account is not None:
            return f"account {account.id}"
        row = self.scratch.execute(
            "SELECT transfer_id FROM transfers WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        return f"transfer {row[0]}" if row else f"stream {stream_id}"

    # At the end ------------------------------------------------------------------------

    def _check_transfers(self) -> None:
        self.report.transfers = self.scratch.execute(
            "SELECT COUNT(*) FROM transfers WHERE recorded > 0"
        ).fetchone()[0]
        checks = [
            ("recorded = 0", "legs_without_transfer", "postings name a transfer never recorded"),
            (
                "legs = 0 AND recorded > 0",
                "transfer_without_postings",
                "transfer recorded but no account moved",
            ),
            ("dp != cp OR dpend != cpend", "unbalanced_transfer", "postings do not sum to zero"),
            (
                "recorded > 0 AND NOT ("
                "(status = 'posted' AND pending = 0 AND dp = amount AND dpend = 0) OR "
                "(status = 'pending' AND dp = 0 AND dpend = amount) OR "
                "(status = 'posted' AND pending = 1 AND dp = amount_posted AND dpend = 0) OR "
                "(status IN ('voided', 'expired') AND dp = 0 AND dpend = 0))",
                "postings_mismatch",
                "postings differ from the transfer's amount and status",
            ),
        ]
        for condition, kind, detail in checks:
            for row in self.scratch.execute(
                f"SELECT transfer_id, dp, cp, dpend, cpend, amount, status, position "  # noqa: S608
                f"FROM transfers WHERE {condition} LIMIT {VIOLATIONS_KEPT_MAX}"
            ):
                self.report.add(
                    Violation(
                        kind,
                        row[0],
                        f"{detail}: debits {row[1]}, credits {row[2]}, pending debits {row[3]}, "
                        f"pending credits {row[4]}, amount {row[5]}, status {row[6]}",
                        row[7],
                    )
                )

    def _check_pending_holds(self) -> None:
        """Every account's pending counters equal the holds still pending on it."""
        held: dict[tuple[str, str], int] = defaultdict(int)
        for side, column in (("debit", "debit_account_id"), ("credit", "credit_account_id")):
            for account_id, total in self.scratch.execute(
                f"SELECT {column}, SUM(amount) FROM transfers "  # noqa: S608
                f"WHERE status = 'pending' GROUP BY {column}"
            ):
                held[(side, account_id)] = int(total)
        for account in self.full.accounts.values():
            for side, pending in (
                ("debit", account.debits_pending),
                ("credit", account.credits_pending),
            ):
                if pending != held[(side, account.id)]:
                    self.report.add(
                        Violation(
                            "pending_mismatch",
                            account.id,
                            f"{side}s pending {pending} but pending holds total "
                            f"{held[(side, account.id)]}",
                        )
                    )

    def _check_opening_order(self) -> None:
        """Each account's opening lines come in the order of their transfers' own
        recordings: an account's transfers are listed, and paged, in its lines' order
        (decision 0033), which the writer promises to keep the transfers' order. A
        transfer's first line on each side counts: a second one is a money violation,
        reported as such."""
        rows = self.scratch.execute(
            "SELECT * FROM (SELECT account_id, transfer_id, position, line, "
            "LAG(transfer_id) OVER lines, LAG(position) OVER lines AS before FROM ("
            "SELECT debit_account_id AS account_id, transfer_id, position, "
            "debit_line AS line FROM transfers WHERE debit_line IS NOT NULL "
            "AND recorded > 0 UNION ALL "
            "SELECT credit_account_id, transfer_id, position, credit_line FROM transfers "
            "WHERE credit_line IS NOT NULL AND recorded > 0) "
            "WINDOW lines AS (PARTITION BY account_id ORDER BY line)) "
            "WHERE position < before LIMIT ?",
            (VIOLATIONS_KEPT_MAX,),
        )
        for account_id, transfer_id, recorded, line, before, before_recorded in rows:
            self.report.add(
                Violation(
                    "lines_out_of_order",
                    account_id,
                    f"the line of {transfer_id} (recorded at {recorded}) follows the line "
                    f"of {before} (recorded at {before_recorded}): the account's transfers "
                    "would be listed out of their order",
                    line,
                )
            )

    def _check_unit_sums(self) -> None:
        self.report.accounts = len(self.full.accounts)
        checks = [("at the head", self.full, self.report.unit_sums)]
        if self.instant.position is not None or self.instant.moment is not None:
            checks.append(
                (self.instant.describe(), self.at_instant, self.report.unit_sums_at_instant)
            )
        for label, replayer, sums in checks:
            for account in replayer.accounts.values():
                sums[account.unit] = sums.get(account.unit, 0) + account.balance
            for unit, total in sums.items():
                if total != 0:
                    self.report.add(
                        Violation("unit_not_balanced", unit, f"balances sum to {total} {label}")
                    )

    def _check_projections(self, view: ReadModel) -> None:
        head = self.ledger.recorder.max_notification_id() or 0
        if not view.wait_for(head, PROJECTION_WAIT_SECONDS):
            self.report.add(
                Violation("projection_lagging", "views", f"at {view.checkpoint()}, log head {head}")
            )
            return
        self.report.projections_checked = True
        self._compare_balances(view)
        self._compare_entries(view)
        self._compare_transfers(view)
        if self.instant.position is not None or self.instant.moment is not None:
            self._compare_instant(view)

    def _compare_balances(self, view: ReadModel) -> None:
        replayed = {account.id: account for account in self.full.accounts.values()}
        seen: set[str] = set()
        for row in view.all_balances():
            seen.add(row.id)
            account = replayed.get(row.id)
            if account is None:
                self.report.add(
                    Violation("projection_extra_account", row.id, "in the view, not in the log")
                )
                continue
            _compare_counters(self.report, "projection_balance_mismatch", account, row)
        for missing in sorted(set(replayed) - seen):
            self.report.add(
                Violation("projection_missing_account", missing, "in the log, not in the view")
            )

    def _compare_entries(self, view: ReadModel) -> None:
        projected = view.entry_counts()
        for account_id in sorted(set(projected) | set(self.entry_counts)):
            expected, actual = self.entry_counts.get(account_id, 0), projected.get(account_id, 0)
            if expected != actual:
                self.report.add(
                    Violation(
                        "projection_entries_mismatch",
                        account_id,
                        f"{actual} statement lines in the view, {expected} postings in the log",
                    )
                )

    def _compare_transfers(self, view: ReadModel) -> None:
        """Walk the view's transfers index and the scratch table in id order together."""
        after = ""
        while True:
            rows = view.transfer_page(after, PAGE_SIZE_MAX)
            if not rows:
                break
            ids = [row.id for row in rows]
            marks = ",".join("?" * len(ids))
            expected = {
                record[0]: record[1:]
                for record in self.scratch.execute(
                    f"SELECT transfer_id, status, amount, amount_posted, debit_account_id, "  # noqa: S608
                    f"credit_account_id FROM transfers WHERE transfer_id IN ({marks})",
                    ids,
                )
            }
            for row in rows:
                actual = (
                    row.status,
                    row.amount,
                    row.amount_posted,
                    row.debit_account_id,
                    row.credit_account_id,
                )
                if expected.get(row.id) != actual:
                    self.report.add(
                        Violation(
                            "projection_transfer_mismatch",
                            row.id,
                            f"view has {actual}, the log says {expected.get(row.id)}",
                        )
                    )
            after = rows[-1].id
        projected_count = 0
        after = ""
        while rows := view.transfer_page(after, PAGE_SIZE_MAX):
            projected_count += len(rows)
            after = rows[-1].id
        if projected_count != self.report.transfers:
            self.report.add(
                Violation(
                    "projection_transfer_count",
                    "transfers",
                    f"{projected_count} in the view, {self.report.transfers} in the log",
                )
            )

    def _compare_instant(self, view: ReadModel) -> None:
        for account in self.at_instant.accounts.values():
            if self.instant.position is not None:
                # The instant's commit may end after the position asked for.
                position = max(self.instant.position, self.window.last_position or 0)
                row = view.balance_at_position(account.id, position)
            else:
                assert self.instant.moment is not None
                row = view.balance_as_of(account.id, self.instant.moment)
            if row is None:
                self.report.add(
                    Violation(
                        "projection_time_travel_mismatch",
                        account.id,
                        f"no answer {self.instant.describe()}",
                    )
                )
                continue
            _compare_counters(self.report, "projection_time_travel_mismatch", account, row)


def _compare_counters(report: AuditReport, kind: str, account: ReplayedAccount, row: Any) -> None:
    expected = (
        account.debits_posted,
        account.credits_posted,
        account.debits_pending,
        account.credits_pending,
        account.status,
    )
    actual = (
        row.debits_posted,
        row.credits_posted,
        row.debits_pending,
        row.credits_pending,
        row.status,
    )
    if expected != actual:
        report.add(Violation(kind, account.id, f"view has {actual}, the log says {expected}"))
