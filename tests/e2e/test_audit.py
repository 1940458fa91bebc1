"""The audit tooling end to end, on SQLite and on a real PostgreSQL server: the audit
passes on a healthy ledger and catches every kind of planted violation; explain's
running balance ends at the account's balance; the beancount (and hledger) round trip;
replay's output files; all of it through the `ledger` command too.

One healthy ledger is built per backend (tests/support/audit_ledger.py) and copied:
a read-only copy for the tests that only read, a fresh copy for each test that plants
a violation behind the ledger's back (raw SQL, or events appended straight into the
store with a correct-looking hash chain).
"""

import csv
import dataclasses
import io
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO, cast
from uuid import UUID

import psycopg
import pytest
from beancount import loader
from beancount.core import realization
from typer.testing import CliRunner

import app.cli
from app.application.ledger import Ledger
from app.audit.audit import Auditor, AuditReport, Violation
from app.audit.explain import StatementLine, explain
from app.audit.export import account_name, commodity, write_journal
from app.audit.log import Instant, read_log
from app.audit.replay import ReplayedAccount, render, replay
from app.domain.account import Account, default_account_type
from app.domain.chain import expected_chain, first_broken_link
from app.domain.errors import AccountNotFoundError
from app.domain.transfer import Transfer
from app.domain.values import account_uuid, transfer_uuid
from app.persistence.positions import recorded_position
from projections.runner import GenerationPointer, view_file, view_schema
from tests.support.audit_ledger import (
    ALICE,
    BOB,
    CLOSED,
    EXPIRED_HOLD,
    IDLE,
    ISSUANCE,
    OPEN_HOLD,
    SHOP,
    VOIDED_HOLD,
    History,
    Stores,
    clone_stores,
    commit_boundary_times,
    healthy_ledger,
    make_stores,
    release_connections,
)
from tests.support.pgserver import PostgresServer

BACKENDS: Final = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
LEDGER_COMMAND: Final = str(Path(sys.executable).with_name("ledger"))
BEAN_CHECK: Final = str(Path(sys.executable).with_name("bean-check"))
CLI_TIMEOUT_SECONDS: Final = 180
CLI_PARALLELISM: Final = 4
# The event tables, as named in each database (the library's defaults for our app).
EVENTS_TABLES: Final = {"sqlite": "stored_events", "postgres": "ledger_events"}

_names = itertools.count()


@dataclass(frozen=True)
class Built:
    stores: Stores
    history: History
    postgres: PostgresServer | None
    # An as-of time between two commits, before the expired hold expired.
    moment_before_expiry: datetime
    # A few as-of times between commits, spread over the history.
    boundary_moments: list[datetime]


# Fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The healthy ledger, built once per backend; only ever copied, never opened."""
    backend = str(request.param)
    postgres: PostgresServer | None = (
        request.getfixturevalue("postgres_server") if backend == "postgres" else None
    )
    folder = tmp_path_factory.mktemp(f"audit-template-{backend}")
    stores = make_stores(backend, folder, postgres, f"audit_template_{next(_names)}")
    with healthy_ledger(stores) as (ledger, history):
        boundaries = commit_boundary_times(ledger, history.commit_positions)
        before_expiry = commit_boundary_times(ledger, [history.marks["before_expiry"]])[0]
    release_connections(stores, postgres)
    return Built(
        stores, history, postgres, before_expiry, boundaries[:: max(1, len(boundaries) // 6)]
    )


def copy_of(built: Built, folder: Path) -> Built:
    stores = clone_stores(built.stores, folder, built.postgres, f"audit_copy_{next(_names)}")
    return dataclasses.replace(built, stores=stores)


@pytest.fixture(scope="module")
def healthy(template: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A copy for the tests that only read."""
    return copy_of(template, tmp_path_factory.mktemp(f"audit-healthy-{template.stores.backend}"))


@pytest.fixture(scope="module")
def books(healthy: Built) -> Iterator[Ledger]:
    """A ledger on the read-only copy."""
    with healthy.stores.open_ledger() as ledger:
        yield ledger


@pytest.fixture
def planted(template: Built, tmp_path: Path) -> Built:
    """A fresh copy for one test to tamper with."""
    return copy_of(template, tmp_path / "stores")


# Helpers: audits, forgeries, raw SQL -----------------------------------------------------


def audit(stores: Stores, instant: Instant | None = None) -> AuditReport:
    """The audit of the log alone (projections are compared elsewhere)."""
    with stores.open_ledger() as ledger:
        return Auditor(ledger, instant or Instant()).run()


def kinds(report: AuditReport) -> set[str]:
    return {violation.kind for violation in report.violations}


def violations_of(report: AuditReport, kind: str) -> list[Violation]:
    return [violation for violation in report.violations if violation.kind == kind]


def stream(ledger: Ledger, originator_id: UUID) -> list[Any]:
    return list(ledger.events.get(originator_id))


def append_to_store(ledger: Ledger, events: Sequence[Any]) -> list[int]:
    """Write events straight into the store, past every check of the application."""
    positions = ledger.recorder.insert_events(
        [ledger.mapper.to_stored_event(event) for event in events]
    )
    assert positions, "the application recorder returns the new positions"
    return list(positions)


def forge(stores: Stores, originator_id: UUID, event_class: type[Any], **fields: Any) -> Any:
    """Append one event to a stream at the next version, its hash chained like the real
    write path would (so only the money, not the chain, gives it away)."""
    with stores.open_ledger() as ledger:
        aggregate: Any = ledger.repository.get(originator_id)
        aggregate.trigger_event(event_class, **fields)
        events = aggregate.collect_events()
        append_to_store(ledger, events)
        return events[0]


def events_table(stores: Stores) -> str:
    return EVENTS_TABLES[stores.backend]


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite://")[1:])


def run_sql(stores: Stores, statement: str, params: Sequence[Any]) -> list[Any]:
    """One statement on the event store's own database (``?`` placeholders), as an
    intruder with database access would run it."""
    if stores.backend == "sqlite":
        with closing(sqlite3.connect(_sqlite_path(stores.event_store_url))) as connection:
            rows = connection.execute(statement, params).fetchall()
            connection.commit()
            return rows
    with psycopg.connect(stores.event_store_url, autocommit=True) as connection:
        cursor = connection.execute(statement.replace("?", "%s"), list(params))
        return cursor.fetchall() if cursor.description else []


def _stored_id(stores: Stores, originator_id: UUID) -> Any:
    return originator_id.hex if stores.backend == "sqlite" else originator_id


def read_state(stores: Stores, originator_id: UUID, version: int) -> bytes:
    rows = run_sql(
        stores,
        f"SELECT state FROM {events_table(stores)} "
        "WHERE originator_id = ? AND originator_version = ?",
        [_stored_id(stores, originator_id), version],
    )
    assert len(rows) == 1
    return bytes(rows[0][0])


def write_state(stores: Stores, originator_id: UUID, version: int, state: bytes) -> None:
    run_sql(
        stores,
        f"UPDATE {events_table(stores)} SET state = ? "
        "WHERE originator_id = ? AND originator_version = ?",
        [state, _stored_id(stores, originator_id), version],
    )


def edit_stored_event(
    stores: Stores, originator_id: UUID, version: int, change: Callable[[dict[str, Any]], None]
) -> None:
    """Change a stored event's JSON behind the ledger's back."""
    state = json.loads(read_state(stores, originator_id, version))
    change(state)
    write_state(stores, originator_id, version, json.dumps(state).encode())


def position_of(stores: Stores, originator_id: UUID, version: int) -> int:
    with stores.open_ledger() as ledger:
        return recorded_position(ledger.recorder, originator_id, version)


# The audit on a healthy ledger ------------------------------------------------------------


def test_the_event_tables_have_the_names_the_tampering_tests_use(
    healthy: Built, books: Ledger
) -> None:
    recorder: Any = books.recorder
    assert recorder.events_table_name == events_table(healthy.stores)
    rows = run_sql(healthy.stores, f"SELECT COUNT(*) FROM {events_table(healthy.stores)}", [])
    assert rows[0][0] == healthy.history.head


def test_the_audit_passes_on_a_healthy_ledger(healthy: Built, books: Ledger) -> None:
    report = Auditor(books, Instant()).run()

    assert report.violations == []
    assert report.ok
    assert report.events == healthy.history.head
    assert report.accounts == len(healthy.history.account_ids)
    transfers_recorded = sum(
        isinstance(event, Transfer.TransferRecorded) for _, event in read_log(books)
    )
    assert report.transfers == transfers_recorded
    assert report.unit_sums == {"CREDITS": 0, "USD": 0, "9_": 0}
    assert report.unit_sums_at_instant == {}  # no instant asked for: the head alone


def test_the_audit_passes_at_every_commit_boundary(healthy: Built, books: Ledger) -> None:
    """Positions where a commit ends, and times between two commits: the books balance."""
    instants = [Instant(position=position) for position in healthy.history.commit_positions]
    instants += [Instant(moment=moment) for moment in healthy.boundary_moments]
    for instant in instants:
        report = Auditor(books, instant).run()
        assert report.violations == [], instant.describe()
        assert set(report.unit_sums_at_instant.values()) <= {0}, instant.describe()


# Planted violations: each kind in its own test --------------------------------------------


def test_a_forged_credit_for_a_recorded_transfer_is_an_unbalanced_transfer(
    planted: Built,
) -> None:
    forge(planted.stores, account_uuid(ALICE), Account.Credited, transfer_id="fund:alice", amount=5)

    report = audit(planted.stores)

    assert kinds(report) == {"unbalanced_transfer", "unit_not_balanced"}
    [unbalanced] = violations_of(report, "unbalanced_transfer")
    assert unbalanced.subject == "fund:alice"
    unit = violations_of(report, "unit_not_balanced")
    assert {(v.subject, v.detail) for v in unit} >= {("CREDITS", "balances sum to 5 at the head")}


def test_a_forged_credit_naming_no_transfer_is_legs_without_transfer(planted: Built) -> None:
    forge(planted.stores, account_uuid(BOB), Account.Credited, transfer_id="made-up", amount=9)

    report = audit(planted.stores)

    assert kinds(report) == {"legs_without_transfer", "unbalanced_transfer", "unit_not_balanced"}
    [legs] = violations_of(report, "legs_without_transfer")
    assert legs.subject == "made-up"


def test_a_forged_debit_past_the_floor_is_below_floor(planted: Built) -> None:
    forge(planted.stores, account_uuid(ALICE), Account.Debited, transfer_id="spend:1", amount=5000)

    report = audit(planted.stores)

    assert "below_floor" in kinds(report)
    [below] = violations_of(report, "below_floor")
    assert below.subject == ALICE
    assert below.position == planted.history.head + 1
    assert kinds(report) == {
        "below_floor",
        "unbalanced_transfer",
        "postings_mismatch",
        "unit_not_balanced",
    }


def test_an_edited_amount_breaks_the_chain_at_that_event(planted: Built) -> None:
    alice = account_uuid(ALICE)
    with planted.stores.open_ledger() as ledger:
        events = stream(ledger, alice)
    funding = next(e for e in events if getattr(e, "transfer_id", None) == "fund:alice")
    assert funding.amount == 1000

    edit_stored_event(
        planted.stores, alice, funding.originator_version, lambda s: s.update(amount=1_000_000)
    )

    with planted.stores.open_ledger() as ledger:
        edited = stream(ledger, alice)
    assert edited[funding.originator_version].amount == 1_000_000  # the edit took
    assert first_broken_link(edited) == funding.originator_version
    report = audit(planted.stores)
    [broken] = violations_of(report, "broken_chain")  # one per stream: the first link only
    assert broken.subject == f"account {ALICE}"
    assert f"first broken link at version {funding.originator_version} " in broken.detail
    assert broken.position == position_of(planted.stores, alice, funding.originator_version)
    # The edit also made money out of nothing, and the audit says so too.
    assert {"unbalanced_transfer", "unit_not_balanced"} <= kinds(report)


def test_an_edit_that_moves_no_money_is_still_caught_by_the_chain(planted: Built) -> None:
    """Metadata and time are covered by the chain as well: a broken chain is the only sign."""
    spend = transfer_uuid("spend:1")
    edit_stored_event(planted.stores, spend, 0, lambda s: s.update(metadata={"order": "B-2"}))
    edit_stored_event(
        planted.stores,
        account_uuid(SHOP),
        1,
        lambda s: s["timestamp"].update(_data_="2020-01-01T00:00:00+00:00"),
    )

    report = audit(planted.stores)

    assert kinds(report) == {"broken_chain"}
    assert sorted(v.subject for v in report.violations) == [
        f"account {SHOP}",
        "transfer spend:1",
    ]


def test_an_edit_hidden_by_recomputing_its_link_breaks_the_next_link(planted: Built) -> None:
    alice = account_uuid(ALICE)
    with planted.stores.open_ledger() as ledger:
        events = stream(ledger, alice)
        version = next(
            e.originator_version for e in events if getattr(e, "transfer_id", None) == "spend:1"
        )
        forged = dataclasses.replace(events[version], amount=1)
        forged = dataclasses.replace(
            forged, chain=expected_chain(events[version - 1].chain, forged)
        )
        state = ledger.mapper.to_stored_event(forged).state
    write_state(planted.stores, alice, version, state)

    with planted.stores.open_ledger() as ledger:
        assert first_broken_link(stream(ledger, alice)) == version + 1
    report = audit(planted.stores)
    [broken] = violations_of(report, "broken_chain")
    assert broken.subject == f"account {ALICE}"
    assert f"first broken link at version {version + 1} " in broken.detail


def test_a_deleted_event_is_a_version_gap_and_a_broken_chain(planted: Built) -> None:
    bob = account_uuid(BOB)
    run_sql(
        planted.stores,
        f"DELETE FROM {events_table(planted.stores)} "
        "WHERE originator_id = ? AND originator_version = ?",
        [_stored_id(planted.stores, bob), 2],
    )

    report = audit(planted.stores)

    [gap] = violations_of(report, "version_gap")
    assert (gap.subject, gap.detail) == (bob.hex, "version 3 follows 1")
    [broken] = violations_of(report, "broken_chain")
    assert broken.subject == f"account {BOB}"
    assert "first broken link at version 3 " in broken.detail


def test_a_skipped_version_is_a_version_gap(planted: Built) -> None:
    """An event appended two versions ahead, with a chain that links to the stream's head:
    only the version numbering gives it away."""
    idle = account_uuid(IDLE)
    with planted.stores.open_ledger() as ledger:
        head = stream(ledger, idle)[-1]
        aggregate: Any = ledger.repository.get(idle)
        aggregate.trigger_event(Account.Closed)
        [closed] = aggregate.collect_events()
        ahead = dataclasses.replace(closed, originator_version=closed.originator_version + 1)
        ahead = dataclasses.replace(ahead, chain=expected_chain(head.chain, ahead))
        append_to_store(ledger, [ahead])

    report = audit(planted.stores)

    assert kinds(report) == {"version_gap"}
    assert report.violations[0].subject == idle.hex
    assert (
        report.violations[0].detail
        == f"version {head.originator_version + 2} follows {head.originator_version}"
    )


def test_an_accounts_lines_against_their_transfers_order_are_lines_out_of_order(
    planted: Built,
) -> None:
    """Two whole, balanced transfers whose lines on Alice run against the order of their
    recordings, every chain and version right: only the listing's order gives it away."""
    alice, shop = account_uuid(ALICE), account_uuid(SHOP)
    with planted.stores.open_ledger() as ledger:
        first, second = (
            Transfer.record(name, ALICE, SHOP, 3, "CREDITS", False, None, {})
            for name in ("swapped:1", "swapped:2")
        )
        payer: Any = ledger.repository.get(alice)
        payee: Any = ledger.repository.get(shop)
        now = payer.modified_on
        for name in ("swapped:2", "swapped:1"):
            payer.debit(name, 3, pending=False, now=now)
        for name in ("swapped:1", "swapped:2"):
            payee.credit(name, 3, pending=False)
        events = [*first.collect_events(), *second.collect_events()]
        positions = append_to_store(
            ledger, [*events, *payer.collect_events(), *payee.collect_events()]
        )

    report = audit(planted.stores)

    assert kinds(report) == {"lines_out_of_order"}
    [out_of_order] = report.violations
    assert out_of_order.subject == ALICE
    assert out_of_order.position == positions[3]  # Alice's line of swapped:1, her second
    assert out_of_order.detail.startswith(
        f"the line of swapped:1 (recorded at {positions[0]}) follows the line of swapped:2 "
        f"(recorded at {positions[1]})"
    )


def test_a_duplicated_debit_leg_is_an_unbalanced_transfer(planted: Built) -> None:
    """The same transfer's debit leg appended again to the account's stream."""
    forge(planted.stores, account_uuid(ALICE), Account.Debited, transfer_id="spend:1", amount=37)

    report = audit(planted.stores)

    assert kinds(report) == {"unbalanced_transfer", "postings_mismatch", "unit_not_balanced"}
    assert {v.subject for v in report.violations if v.kind != "unit_not_balanced"} == {"spend:1"}


def test_a_transfer_applied_twice_is_a_postings_mismatch(planted: Built) -> None:
    """Both legs appended again: the books still balance, yet money moved twice."""
    forge(planted.stores, account_uuid(ALICE), Account.Debited, transfer_id="spend:1", amount=37)
    forge(planted.stores, account_uuid(SHOP), Account.Credited, transfer_id="spend:1", amount=37)

    report = audit(planted.stores)

    assert kinds(report) == {"postings_mismatch"}
    [mismatch] = report.violations
    assert mismatch.subject == "spend:1"
    assert "debits 74, credits 74" in mismatch.detail


def test_a_transfer_recorded_twice_is_a_duplicate_transfer(planted: Built) -> None:
    spend = transfer_uuid("spend:1")
    with planted.stores.open_ledger() as ledger:
        [recorded] = stream(ledger, spend)
        again = dataclasses.replace(recorded, originator_version=1)
        again = dataclasses.replace(again, chain=expected_chain(recorded.chain, again))
        append_to_store(ledger, [again])

    report = audit(planted.stores)

    assert kinds(report) == {"duplicate_transfer"}
    assert report.violations[0].subject == "spend:1"


def test_a_transfer_recorded_without_postings_is_caught(planted: Built) -> None:
    with planted.stores.open_ledger() as ledger:
        ghost = Transfer.record("ghost", ALICE, BOB, 10, "CREDITS", False, None, {})
        append_to_store(ledger, ghost.collect_events())

    report = audit(planted.stores)

    assert kinds(report) == {"transfer_without_postings", "postings_mismatch"}
    assert {v.subject for v in report.violations} == {"ghost"}


def test_a_forged_reservation_is_a_pending_mismatch(planted: Built) -> None:
    forge(
        planted.stores,
        account_uuid(ALICE),
        Account.DebitReserved,
        transfer_id=OPEN_HOLD,
        amount=5,
    )

    report = audit(planted.stores)

    assert kinds(report) == {"pending_mismatch", "unbalanced_transfer", "postings_mismatch"}
    [pending] = violations_of(report, "pending_mismatch")
    assert pending.subject == ALICE
    assert pending.detail == "debits pending 16 but pending holds total 11"


# Running the `ledger` command ---------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_ledger(env: dict[str, str], args: Sequence[str]) -> CliRun:
    """`ledger ARGS` in its own process, as an operator or cron runs it."""
    done = subprocess.run(
        [LEDGER_COMMAND, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return CliRun(done.returncode, done.stdout, done.stderr)


def run_many(env: dict[str, str], commands: dict[str, list[str]]) -> dict[str, CliRun]:
    """Several `ledger` processes side by side (each is mostly start-up time)."""
    with ThreadPoolExecutor(max_workers=CLI_PARALLELISM) as pool:
        futures = {name: pool.submit(run_ledger, env, args) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


@contextmanager
def in_process_cli(env: dict[str, str]) -> Iterator[Callable[[list[str]], CliRun]]:
    """The same commands run in this process (no start-up cost); the ledgers the
    commands open and leave to process exit are closed afterwards."""
    opened: list[Ledger] = []
    real_open_ledger = app.cli.open_ledger

    def tracked_open_ledger() -> Ledger:
        opened.append(real_open_ledger())
        return opened[-1]

    runner = CliRunner()

    def run(args: list[str]) -> CliRun:
        result = runner.invoke(app.cli.cli, args, env=env)
        return CliRun(result.exit_code, result.stdout, result.stderr)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app.cli, "open_ledger", tracked_open_ledger)
        try:
            yield run
        finally:
            for ledger in opened:
                ledger.close()


@dataclass(frozen=True)
class CliResults:
    runs: dict[str, CliRun]
    folder: Path
    position: int
    moment: datetime

    def __getitem__(self, name: str) -> CliRun:
        return self.runs[name]

    def file(self, name: str) -> Path:
        return self.folder / name


@pytest.fixture(scope="module")
def cli(healthy: Built, tmp_path_factory: pytest.TempPathFactory) -> CliResults:
    """Every command, run once against the healthy copy: the audit and an export in
    their own processes, the rest in this one."""
    folder = tmp_path_factory.mktemp(f"audit-cli-{healthy.stores.backend}")
    position = str(healthy.history.marks["before_odd_unit"])
    moment = healthy.moment_before_expiry.isoformat()

    def out(name: str) -> str:
        return str(folder / name)

    env = healthy.stores.cli_env()
    runs = run_many(
        env,
        {
            "audit": ["audit", "--no-projections", "--out", out("audit.txt")],
            "audit-json": [
                "audit",
                "--no-projections",
                "--at-position",
                position,
                "--format",
                "json",
                "--out",
                out("audit.json"),
            ],
            "export": ["export", "--format", "beancount", "--out", out("journal.beancount")],
        },
    )
    commands = {
        "explain": ["explain", ALICE],
        "explain-json": ["explain", ALICE, "--format", "json"],
        "explain-csv": ["explain", BOB, "--format", "csv"],
        "explain-as-of": ["explain", BOB, "--as-of", moment, "--format", "json"],
        "explain-unknown": ["explain", "nobody:home"],
        "export-as-of": ["export", "--as-of", moment, "--out", out("journal-as-of.beancount")],
        "export-at-position": [
            "export",
            "--at-position",
            position,
            "--out",
            out("journal-at-position.beancount"),
        ],
        "export-hledger": [
            "export",
            "--format",
            "hledger",
            "--at-position",
            position,
            "--out",
            out("journal.hledger"),
        ],
        "replay-csv": ["replay", "--format", "csv", "--out", out("replay.csv")],
        "replay-json": [
            "replay",
            "--format",
            "json",
            "--at-position",
            position,
            "--out",
            out("replay.json"),
        ],
        "replay-table": ["replay", "--account", ALICE, "--account", SHOP],
        "replay-bad-format": ["replay", "--format", "xml", "--out", out("bad-format.csv")],
        "replay-both-instants": [
            "replay",
            "--as-of",
            moment,
            "--at-position",
            "3",
            "--out",
            out("both-instants.csv"),
        ],
        "replay-bad-time": ["replay", "--as-of", "last tuesday", "--out", out("bad-time.csv")],
        "export-bad-format": ["export", "--format", "ledger", "--out", out("bad-format.journal")],
    }
    with in_process_cli(env) as run:
        runs |= {name: run(args) for name, args in commands.items()}
    # A store that cannot be opened: a directory where the SQLite file should be.
    unopenable = {**env, "LEDGER_EVENT_STORE": f"sqlite:///{folder}"}
    with in_process_cli(unopenable) as run:
        runs["replay-unopenable"] = run(["replay", "--format", "csv", "--out", out("no.csv")])
        runs["export-unopenable"] = run(["export", "--out", out("no.beancount")])
    return CliResults(runs, folder, int(position), healthy.moment_before_expiry)


# The audit from the command line -----------------------------------------------------------


def test_ledger_audit_exits_zero_on_a_healthy_ledger(healthy: Built, cli: CliResults) -> None:
    run = cli["audit"]
    assert run.returncode == 0, run.describe()
    assert "violations: 0" in run.stdout
    assert run.stdout.rstrip().endswith("RESULT: OK")
    assert f"events {healthy.history.head}," in run.stdout
    assert cli.file("audit.txt").read_text() == run.stdout

    run = cli["audit-json"]
    assert run.returncode == 0, run.describe()
    report = json.loads(cli.file("audit.json").read_text())
    assert report == json.loads(run.stdout)
    assert (report["ok"], report["violation_count"], report["violations"]) == (True, 0, [])
    assert report["events"] == healthy.history.head
    assert report["instant"] == f"position {cli.position}"


def test_ledger_audit_exits_non_zero_and_prints_what_was_planted(
    planted: Built, tmp_path: Path
) -> None:
    edit_stored_event(planted.stores, account_uuid(ALICE), 1, lambda s: s.update(amount=999))
    forge(planted.stores, account_uuid(BOB), Account.Credited, transfer_id="made-up", amount=9)
    report_file = tmp_path / "report.json"

    runs = run_many(
        planted.stores.cli_env(),
        {
            "text": ["audit", "--no-projections"],
            "json": ["audit", "--no-projections", "--format", "json", "--out", str(report_file)],
        },
    )

    text = runs["text"]
    assert text.returncode == 1, text.describe()
    assert f"broken_chain: account {ALICE} @" in text.stdout
    assert "first broken link at version 1 " in text.stdout
    assert "legs_without_transfer: made-up" in text.stdout
    assert text.stdout.rstrip().endswith("RESULT: VIOLATIONS FOUND")
    assert runs["json"].returncode == 1, runs["json"].describe()
    report = json.loads(report_file.read_text())
    assert report["ok"] is False
    assert {"broken_chain", "legs_without_transfer", "unbalanced_transfer"} <= {
        violation["kind"] for violation in report["violations"]
    }


# explain ---------------------------------------------------------------------------------


def assert_statement_adds_up(lines: list[StatementLine]) -> None:
    """Each line's balance is the previous one plus what the line posted."""
    balance = 0
    for line in lines:
        moved = line.balance - balance
        # A line moves the balance by its amount, or (a hold reserved or released) not at all.
        assert moved in (0, line.amount), line
        if line.kind in ("Debited", "Credited"):
            assert moved == line.amount != 0, line
        assert line.available == line.balance - line.debits_pending
        balance = line.balance
    assert [line.version for line in lines] == sorted({line.version for line in lines})


def test_explain_ends_at_each_accounts_balance(healthy: Built, books: Ledger) -> None:
    for account_id in healthy.history.account_ids:
        account = books.get_account(account_id)
        lines = list(explain(books, account_id, None))
        assert_statement_adds_up(lines)
        if account_id == IDLE:
            assert lines == []
            assert account.balance == 0
            continue
        last = lines[-1]
        assert (last.balance, last.available, last.debits_pending, last.credits_pending) == (
            account.balance,
            account.available,
            account.debits_pending,
            account.credits_pending,
        ), account_id


def test_explain_as_of_ends_at_the_balance_of_that_time(healthy: Built, books: Ledger) -> None:
    for moment in [*healthy.boundary_moments, healthy.moment_before_expiry]:
        then = {account.id: account for account in replay(books, Instant(moment=moment))}
        for account_id in healthy.history.account_ids:
            if account_id not in then:
                with pytest.raises(AccountNotFoundError):
                    list(explain(books, account_id, moment))
                continue
            lines = list(explain(books, account_id, moment))
            assert all(line.recorded_at <= moment for line in lines)
            balance, available = (lines[-1].balance, lines[-1].available) if lines else (0, 0)
            assert (balance, available) == (then[account_id].balance, then[account_id].available)


def test_explain_tells_counterparties_metadata_and_the_fate_of_holds(
    healthy: Built, books: Ledger
) -> None:
    first = next(iter(explain(books, ALICE, None)))
    assert (first.transfer_id, first.kind, first.counterparty_id, first.amount) == (
        "fund:alice",
        "Credited",
        ISSUANCE,
        1000,
    )
    assert first.metadata == {"reason": "top-up"}

    def fates(account_id: str, moment: datetime | None) -> dict[str, str | None]:
        return {line.transfer_id: line.hold_fate for line in explain(books, account_id, moment)}

    assert fates(ALICE, None)[VOIDED_HOLD] == "voided"
    assert fates(ALICE, None)[OPEN_HOLD] == "pending"
    assert fates(ALICE, None)["spend:1"] is None
    assert fates(BOB, None)[EXPIRED_HOLD] == "expired"
    assert fates(BOB, healthy.moment_before_expiry)[EXPIRED_HOLD] == "pending"
    with pytest.raises(AccountNotFoundError):
        list(explain(books, ALICE, datetime(2000, 1, 1).astimezone()))


def test_ledger_explain_prints_a_table_json_and_csv(books: Ledger, cli: CliResults) -> None:
    alice, bob = books.get_account(ALICE), books.get_account(BOB)

    table = cli["explain"]
    assert table.returncode == 0, table.describe()
    assert ALICE in table.stdout
    assert "fund:alice" in table.stdout
    assert f"balance {alice.balance}, available {alice.available}" in table.stdout

    as_json = cli["explain-json"]
    assert as_json.returncode == 0, as_json.describe()
    lines = json.loads(as_json.stdout)
    assert [line["transfer_id"] for line in lines] == [
        line.transfer_id for line in explain(books, ALICE, None)
    ]
    assert (lines[-1]["balance"], lines[-1]["available"]) == (alice.balance, alice.available)

    as_csv = cli["explain-csv"]
    assert as_csv.returncode == 0, as_csv.describe()
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == len(list(explain(books, BOB, None)))
    assert int(rows[-1]["balance"]) == bob.balance
    assert json.loads(rows[0]["metadata"]) == {}

    as_of = cli["explain-as-of"]
    assert as_of.returncode == 0, as_of.describe()
    then = {account.id: account for account in replay(books, Instant(moment=cli.moment))}
    past = json.loads(as_of.stdout)
    assert past[-1]["balance"] == then[BOB].balance
    assert {line["transfer_id"]: line["hold_fate"] for line in past}[EXPIRED_HOLD] == "pending"

    unknown = cli["explain-unknown"]
    assert unknown.returncode == 2, unknown.describe()
    assert "account_not_found" in unknown.stderr


# The beancount and hledger round trips ---------------------------------------------------


def beancount_balances(path: Path) -> dict[str, Decimal]:
    """Every account's balance in the journal, as beancount itself computes it."""
    entries, errors, _ = loader.load_file(str(path))
    assert errors == [], errors
    root = realization.realize(entries)  # type: ignore[no-untyped-call]
    balances: dict[str, Decimal] = {}
    for real_account in realization.iter_children(root):  # type: ignore[no-untyped-call]
        if real_account.account.count(":") < 2:
            continue
        for position in real_account.balance:
            balances[real_account.account] = position.units.number
        balances.setdefault(real_account.account, Decimal(0))
    return balances


def bean_check(path: Path) -> None:
    check = subprocess.run(
        [BEAN_CHECK, str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr


def journal_name(account: ReplayedAccount) -> str:
    """The history here opens accounts without a type: the default for their floor."""
    return account_name(account.id, default_account_type(account.allow_negative))


def assert_journal_matches_replay(path: Path, accounts: list[ReplayedAccount]) -> None:
    """beancount's loader (what bean-check runs: syntax, balancing, balance assertions)
    accepts the journal, and its balances are ours, account by account."""
    text = path.read_text()
    balances = beancount_balances(path)
    assert set(balances) == {journal_name(account) for account in accounts}
    for account in accounts:
        name = journal_name(account)
        # Journals count debits positive: a ledger balance (credits - debits) is negated.
        assert balances[name] == -account.balance, account.id
        assert f"open {name} {commodity(account.unit)}" in text
        # ... and the journal asserts it, so bean-check itself proved the same.
        assert f" balance {name} {-account.balance} {commodity(account.unit)}\n" in text


def test_the_beancount_export_passes_bean_check_and_balances_match(
    books: Ledger, cli: CliResults
) -> None:
    run = cli["export"]
    assert run.returncode == 0, run.describe()
    accounts = replay(books, Instant())
    assert {account.unit for account in accounts} == {"CREDITS", "USD", "9_"}
    bean_check(cli.file("journal.beancount"))
    assert_journal_matches_replay(cli.file("journal.beancount"), accounts)


def test_the_beancount_export_as_of_a_time_matches_the_replay_then(
    books: Ledger, cli: CliResults
) -> None:
    run = cli["export-as-of"]
    assert run.returncode == 0, run.describe()
    accounts = replay(books, Instant(moment=cli.moment))
    assert_journal_matches_replay(cli.file("journal-as-of.beancount"), accounts)
    text = cli.file("journal-as-of.beancount").read_text()
    assert '"transfer hold:partial"' in text  # posted before the moment
    assert "batch:1" not in text  # recorded after it


def test_the_beancount_export_at_a_position_matches_the_replay_then(
    books: Ledger, cli: CliResults
) -> None:
    run = cli["export-at-position"]
    assert run.returncode == 0, run.describe()
    accounts = replay(books, Instant(position=cli.position))
    assert_journal_matches_replay(cli.file("journal-at-position.beancount"), accounts)


def test_the_hledger_export_writes_a_journal_hledger_reads(books: Ledger, cli: CliResults) -> None:
    run = cli["export-hledger"]
    assert run.returncode == 0, run.describe()
    journal = cli.file("journal.hledger")
    text = journal.read_text()
    accounts = replay(books, Instant(position=cli.position))
    posted = {"fund:alice", "spend:1", "hold:posted", "hold:partial", "refund:1", "batch:3"}
    assert all(f"transfer {transfer_id}" in text for transfer_id in posted)
    assert "hold:voided" not in text
    assert "hold:expired" not in text
    hledger = shutil.which("hledger")
    if hledger is None:
        return  # the journal's syntax is checked only where hledger is installed
    done = subprocess.run(
        [hledger, "-f", str(journal), "balance", "--flat", "-E", "--no-total", "-O", "csv"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reported = {
        row["account"]: int(row["balance"].split()[0])
        for row in csv.DictReader(io.StringIO(done.stdout))
    }
    moved = {journal_name(a): -a.balance for a in accounts if a.debits_posted or a.credits_posted}
    assert {name: balance for name, balance in reported.items() if name in moved} == moved


# replay's files --------------------------------------------------------------------------


def test_ledger_replay_writes_csv_and_json_files(books: Ledger, cli: CliResults) -> None:
    assert cli["replay-csv"].returncode == 0, cli["replay-csv"].describe()
    assert cli.file("replay.csv").read_bytes() == render(replay(books, Instant()), "csv").encode()

    assert cli["replay-json"].returncode == 0, cli["replay-json"].describe()
    at_position = replay(books, Instant(position=cli.position))
    assert json.loads(cli.file("replay.json").read_text()) == json.loads(
        render(at_position, "json")
    )

    table = cli["replay-table"]
    assert table.returncode == 0, table.describe()
    assert ALICE in table.stdout
    assert SHOP in table.stdout
    assert BOB not in table.stdout


FAILED_RUNS: Final = {
    "replay-bad-format": "bad-format.csv",
    "replay-both-instants": "both-instants.csv",
    "replay-bad-time": "bad-time.csv",
    "export-bad-format": "bad-format.journal",
    "replay-unopenable": "no.csv",
    "export-unopenable": "no.beancount",
}


@pytest.mark.parametrize("name", sorted(FAILED_RUNS))
def test_a_refused_or_failed_run_leaves_no_file_behind(cli: CliResults, name: str) -> None:
    run = cli[name]
    assert run.returncode != 0, run.describe()
    written = FAILED_RUNS[name]
    assert not cli.file(written).exists()
    assert not list(cli.folder.glob(f".{written}.*")), "a temporary file was left behind"


def test_a_run_that_fails_halfway_leaves_the_previous_file_untouched(
    planted: Built, tmp_path: Path
) -> None:
    """An undecodable event in the middle of the log: the export has already written
    part of the journal when it fails, and the replay has read part of the log."""
    write_state(planted.stores, account_uuid(BOB), 3, b"{not json")
    folder = tmp_path / "out"
    folder.mkdir()
    journal, balances = folder / "journal.beancount", folder / "balances.csv"
    journal.write_text("the previous journal\n")

    with in_process_cli(planted.stores.cli_env()) as run:
        exported = run(["export", "--out", str(journal)])
        replayed = run(["replay", "--format", "csv", "--out", str(balances)])

    assert exported.returncode != 0, exported.describe()
    assert replayed.returncode != 0, replayed.describe()
    assert journal.read_text() == "the previous journal\n"
    assert sorted(path.name for path in folder.iterdir()) == [journal.name]


class _InterruptedStream:
    """Passes writes on until the n-th, then acts as if Ctrl-C had been pressed."""

    def __init__(self, stream: TextIO, writes_allowed: int) -> None:
        self.stream = stream
        self.writes_allowed = writes_allowed

    def write(self, text: str) -> int:
        if self.writes_allowed == 0:
            raise KeyboardInterrupt
        self.writes_allowed -= 1
        return self.stream.write(text)


def test_an_interrupted_export_leaves_the_previous_file_untouched(
    healthy: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C halfway through writing the journal."""
    out = tmp_path / "journal.beancount"
    out.write_text("the previous journal\n")

    def write_then_interrupt(
        ledger: Ledger, instant: Instant, output: TextIO, journal_format: str, on_page: Any = None
    ) -> int:
        interrupting = cast(TextIO, _InterruptedStream(output, 20))
        return write_journal(ledger, instant, interrupting, journal_format, on_page)

    monkeypatch.setattr(app.cli, "write_journal", write_then_interrupt)
    with in_process_cli(healthy.stores.cli_env()) as run:
        result = run(["export", "--out", str(out)])

    assert result.returncode == 130, result.describe()
    assert "interrupted: nothing was written" in result.stderr
    assert out.read_text() == "the previous journal\n"
    assert [path.name for path in tmp_path.iterdir()] == [out.name]


def test_an_interrupted_replay_writes_nothing(
    healthy: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the fold, after the first page."""
    out = tmp_path / "balances.csv"

    def replay_then_interrupt(
        ledger: Ledger, instant: Instant, on_page: Callable[[int, int], None] | None = None
    ) -> list[ReplayedAccount]:
        replay(ledger, instant, on_page=on_page)
        raise KeyboardInterrupt

    monkeypatch.setattr(app.cli, "replay", replay_then_interrupt)
    with in_process_cli(healthy.stores.cli_env()) as run:
        result = run(["replay", "--format", "csv", "--out", str(out)])

    assert result.returncode == 130, result.describe()
    assert "interrupted: nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


# Replay itself --------------------------------------------------------------------------


def test_replay_at_the_head_equals_the_write_side(healthy: Built, books: Ledger) -> None:
    replayed = replay(books, Instant())
    assert [account.id for account in replayed] == sorted(healthy.history.account_ids)
    for account in replayed:
        written = books.get_account(account.id)
        assert (
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending,
            account.status,
            account.unit,
        ) == (
            written.debits_posted,
            written.credits_posted,
            written.debits_pending,
            written.credits_pending,
            written.status,
            written.unit,
        ), account.id
    statuses = {account.id: account.status for account in replayed}
    assert statuses[CLOSED] == "closed"
    assert replay(books, Instant(position=0)) == []
    before = datetime.now().astimezone() - timedelta(days=3650)
    assert replay(books, Instant(moment=before)) == []


# The audit against the projections, instants inside a commit, journal names -----


def run_view_sql(stores: Any, statement: str, params: list[Any]) -> None:
    """One statement on the live view generation's tables, by hand."""
    generation = GenerationPointer(stores.read_model_url).current
    if stores.backend == "sqlite":
        path = view_file(stores.read_model_url, generation)
        with closing(sqlite3.connect(path)) as connection:
            connection.execute(statement.format(schema=""), params)
            connection.commit()
        return
    with psycopg.connect(stores.read_model_url, autocommit=True) as connection:
        connection.execute(
            statement.format(schema=f'"{view_schema(generation)}".').replace("?", "%s"),
            params,
        )


# Bug 1 -------------------------------------------------------------------------------------


def test_the_audit_with_projections_passes_on_a_healthy_ledger(
    healthy: Built, books: Ledger
) -> None:
    view = healthy.stores.open_view()
    instants = [
        Instant(),
        Instant(position=healthy.history.marks["before_expiry"]),
        Instant(moment=healthy.moment_before_expiry),
    ]
    for instant in instants:
        report = Auditor(books, instant, view).run()
        assert report.violations == [], instant.describe()
        assert report.projections_checked


def test_a_projection_row_changed_by_hand_is_a_projection_balance_mismatch(
    planted: Built,
) -> None:
    run_view_sql(
        planted.stores,
        "UPDATE {schema}balances SET credits_posted = credits_posted + 1 WHERE account_id = ?",
        [ALICE],
    )
    with planted.stores.open_ledger() as ledger:
        report = Auditor(ledger, Instant(), planted.stores.open_view()).run()
    assert kinds(report) == {"projection_balance_mismatch"}
    assert report.violations[0].subject == ALICE


def test_a_transfer_row_changed_by_hand_is_a_projection_transfer_mismatch(
    planted: Built,
) -> None:
    run_view_sql(
        planted.stores,
        "UPDATE {schema}transfers SET status = 'voided' WHERE transfer_id = ?",
        ["hold:posted"],
    )
    with planted.stores.open_ledger() as ledger:
        report = Auditor(ledger, Instant(), planted.stores.open_view()).run()
    assert kinds(report) == {"projection_transfer_mismatch"}
    assert report.violations[0].subject == "hold:posted"


def test_a_deleted_statement_line_is_caught(planted: Built) -> None:
    """Entries are the balance history: a lost line shows in the counts and in time travel."""
    position = planted.history.commit_positions[12]  # the commit of spend:1
    run_view_sql(
        planted.stores,
        "DELETE FROM {schema}entries WHERE account_id = ? AND transfer_id = ?",
        [SHOP, "spend:1"],
    )
    with planted.stores.open_ledger() as ledger:
        report = Auditor(ledger, Instant(position=position), planted.stores.open_view()).run()
    assert kinds(report) == {"projection_entries_mismatch", "projection_time_travel_mismatch"}


def test_ledger_audit_compares_the_projections_from_the_command_line(planted: Built) -> None:
    healthy_run = run_many(planted.stores.cli_env(), {"audit": ["audit"]})["audit"]
    assert healthy_run.returncode == 0, healthy_run.describe()
    assert "projections compared: yes" in healthy_run.stdout

    run_view_sql(
        planted.stores,
        "UPDATE {schema}balances SET debits_posted = debits_posted + 7 WHERE account_id = ?",
        [SHOP],
    )
    planted_run = run_many(planted.stores.cli_env(), {"audit": ["audit"]})["audit"]
    assert planted_run.returncode == 1, planted_run.describe()
    assert f"projection_balance_mismatch: {SHOP}" in planted_run.stdout


# Bug 2 -------------------------------------------------------------------------------------


def test_the_audit_passes_at_every_position_of_a_healthy_ledger(
    healthy: Built, books: Ledger
) -> None:
    for position in range(healthy.history.head + 1):
        report = Auditor(books, Instant(position=position)).run()
        assert report.violations == [], position


def test_the_export_at_any_position_passes_bean_check(
    healthy: Built, books: Ledger, tmp_path: Path
) -> None:
    position = healthy.history.commit_positions[12] - 1  # inside a transfer's commit
    out = tmp_path / "journal.beancount"
    with in_process_cli(healthy.stores.cli_env()) as run:
        result = run(["export", "--at-position", str(position), "--out", str(out)])
    assert result.returncode == 0, result.describe()
    bean_check(out)
    assert_journal_matches_replay(out, replay(books, Instant(position=position)))


# Bug 3 -------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("hledger") is None, reason="hledger is not installed")
def test_hledger_reads_the_whole_hledger_export(
    healthy: Built, books: Ledger, tmp_path: Path
) -> None:
    out = tmp_path / "journal.hledger"
    with in_process_cli(healthy.stores.cli_env()) as run:
        result = run(["export", "--format", "hledger", "--out", str(out)])
    assert result.returncode == 0, result.describe()
    done = subprocess.run(
        ["hledger", "-f", str(out), "balance", "--flat", "-E", "--no-total", "-O", "csv"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reported = {
        row["account"]: int(row["balance"].split()[0])
        for row in csv.DictReader(io.StringIO(done.stdout))
    }
    for account in replay(books, Instant()):
        if account.debits_posted or account.credits_posted:
            assert reported[journal_name(account)] == -account.balance
