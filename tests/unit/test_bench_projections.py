"""scripts/bench_projections.py's list and search latencies run on any number of
accounts, a few more than a page as well as the default 100,000."""

from pathlib import Path

import bench_projections  # scripts/: measured as the benchmark measures
import pytest

from app.persistence.stores import sqlite_url
from projections.runner import open_view

FEW_ACCOUNTS = bench_projections.ACCOUNT_PAGE + 50


def test_the_list_latencies_run_on_a_few_more_accounts_than_a_page(tmp_path: Path) -> None:
    view = open_view(sqlite_url(tmp_path / "accounts.sqlite"), bench_projections.GENERATION)
    bench_projections.fill_accounts(view, FEW_ACCOUNTS, seed=7)
    latencies = bench_projections.account_list_latencies(view, FEW_ACCOUNTS, 7, "sqlite")
    timed = {latency.query: len(latency.samples_ms) for latency in latencies}
    assert timed == {
        f"accounts: {kind}": bench_projections.ACCOUNT_QUERIES
        for kind in ("list after id", "prefix", "metadata", "metadata x2", "unit")
    }


def test_fewer_than_two_accounts_are_refused_with_a_message() -> None:
    with pytest.raises(SystemExit, match="--accounts: at least 2"):
        bench_projections.plan_from(bench_projections.parse_args(["--quick", "--accounts", "1"]))
