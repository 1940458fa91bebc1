"""The audit against the projections, instants inside a commit, and journal names.

- ``ledger audit`` compares the views with the replay row for row and reports a row
  changed by hand (balances, transfers, entries, time travel).
- A position or time inside one command's commit is extended to the commit's end:
  replay, audit and export never see half of a command.
- The hledger export quotes commodities with digits; journal names never collide.
"""

import csv
import io
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.application.ledger import Ledger
from app.audit.audit import Auditor
from app.audit.export import account_name
from app.audit.log import Instant
from app.audit.replay import replay
from projections.runner import GenerationPointer
from tests.conftest import postgres_server  # noqa: F401  # the session's server
from tests.e2e.test_audit import (  # noqa: F401  # fixtures
    Built,
    assert_journal_matches_replay,
    bean_check,
    books,
    healthy,
    in_process_cli,
    kinds,
    planted,
    run_many,
    template,
)
from tests.support.audit_ledger import ALICE, SHOP


def run_view_sql(stores: Any, statement: str, params: list[Any]) -> None:
    """One statement on the live view generation's tables, by hand."""
    generation = GenerationPointer(stores.read_model_url).current
    if stores.backend == "sqlite":
        path = Path(stores.read_model_url.removeprefix("sqlite://")[1:])
        path = path.with_name(f"{path.stem}.g{generation}{path.suffix}")
        with closing(sqlite3.connect(path)) as connection:
            connection.execute(statement.format(schema=""), params)
            connection.commit()
        return
    with psycopg.connect(stores.read_model_url, autocommit=True) as connection:
        connection.execute(
            statement.format(schema=f'"ledger_views_g{generation}".').replace("?", "%s"),
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
            assert reported[account_name(account.id)] == account.balance
