"""An account's transfer listing on SQLite's views: a hold's status is read from the
partial indexes of the transfers not posted (the planner's choice checked on the
statement the reader sends), and opening the views drops an older version's index
waiting for the views' writer no longer than its bound (decision 0033 addendum). What
the listings answer is the read-model contract's (tests/contract/test_read_model.py)."""

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from app.application.read_model import TransferFilter
from app.domain.transfer import TransferStatus
from app.persistence.stores import sqlite_url
from projections.backends import INDEX_DROP_LOCK_WAIT_SECONDS, LedgerView
from projections.runner import open_view, view_file

# Well past the bound, well short of the views' busy timeout (10 s per index).
OPEN_DEADLINE_SECONDS = INDEX_DROP_LOCK_WAIT_SECONDS + 4


def views_file(tmp_path: Path) -> Path:
    return view_file(sqlite_url(tmp_path / "views.sqlite"), 1)


def index_names(view: LedgerView) -> set[str]:
    return {row["name"] for row in view._all("SELECT name FROM sqlite_master WHERE type = 'index'")}


@pytest.mark.parametrize("status", ["pending", "voided", "expired"])
def test_a_holds_status_listing_of_an_account_walks_the_partial_indexes(
    tmp_path: Path, status: TransferStatus, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    sent: list[tuple[str, list[Any]]] = []
    read = view._all

    def kept(statement: str, params: Any = ()) -> Any:
        sent.append((statement, list(params)))
        return read(statement, params)

    monkeypatch.setattr(view, "_all", kept)
    assert view.transfers(TransferFilter(account_id="user:1", status=status)) == []
    (statement, params), *_ = sent
    plan = " ".join(str(row["detail"]) for row in read(f"EXPLAIN QUERY PLAN {statement}", params))
    assert "transfers_held_by_debit_idx" in plan, plan
    assert "transfers_held_by_credit_idx" in plan, plan
    assert "transfers_by_status_idx" not in plan, plan


def test_an_older_index_behind_a_busy_views_writer_is_kept_and_the_views_still_open(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "views.sqlite")
    first = open_view(url, 1)
    with first._transaction(commit=True) as cursor:
        first._run(cursor, "CREATE INDEX transfers_by_debit_idx ON {transfers} (debit_account_id)")
    first.datastore.close()  # type: ignore[attr-defined]
    writer = sqlite3.connect(views_file(tmp_path), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # the views' write lock, held
        opened: list[LedgerView] = []
        opener = threading.Thread(target=lambda: opened.append(open_view(url, 1)))
        opener.start()
        opener.join(timeout=OPEN_DEADLINE_SECONDS)
        assert opened, "opening the views waited out the busy writer"
        assert "transfers_by_debit_idx" in index_names(opened[0])
        opened[0].datastore.close()  # type: ignore[attr-defined]
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    later = open_view(url, 1)
    assert "transfers_by_debit_idx" not in index_names(later)
    later.datastore.close()  # type: ignore[attr-defined]
