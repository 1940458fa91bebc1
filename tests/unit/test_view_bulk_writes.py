"""On PostgreSQL the views' writer sends each table's rows of a batch as one statement
(a column each as an array: ``PostgresLedgerView._insert_many`` and ``_update_many``);
the views it leaves are those of the general path, one statement per row."""

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from projections.backends import PostgresLedgerView
from projections.runner import open_view, view_schema
from projections.schema import TABLES, SqlAccess
from tests.support.pgserver import PostgresServer
from tests.support.view_log import Log, apply, every_kind_log, postgres_rows


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    with every_kind_log(tmp_path_factory.mktemp("log")) as log:  # every kind of event
        yield log


def rows_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table's rows (the first generation's schema)."""
    schema = view_schema(1)
    rows = postgres_rows(url, [f"{schema}.{table}" for table in TABLES])
    return {name.removeprefix(f"{schema}."): found for name, found in rows.items()}


@pytest.mark.parametrize("batch_events", [1, 7, 10_000])
def test_the_views_written_in_one_statement_per_table_are_those_of_one_per_row(
    log: Log,
    postgres_server: PostgresServer,
    batch_events: int,
    tmp_path: Path,
) -> None:
    ledger, notifications = log
    urls = [postgres_server.create_database(f"{tmp_path.name[:40]}_{side}") for side in "ab"]
    bulk, general = (open_view(url, 1) for url in urls)
    assert isinstance(bulk, PostgresLedgerView)
    assert isinstance(general, PostgresLedgerView)
    general._insert_many = partial(SqlAccess._insert_many, general)  # type: ignore[method-assign]
    general._update_many = partial(SqlAccess._update_many, general)  # type: ignore[method-assign]
    try:
        for start in range(0, len(notifications), batch_events):
            for view in (bulk, general):
                apply(view, ledger, notifications[start : start + batch_events])
        bulk_rows, general_rows = rows_of(urls[0]), rows_of(urls[1])
    finally:
        bulk.datastore.close()
        general.datastore.close()
    assert bulk_rows == general_rows
    # Every table the log reaches has rows (a table left empty by both would prove nothing).
    assert [table for table, rows in bulk_rows.items() if not rows] == []
