"""On PostgreSQL the feed projector inserts each table's rows of a batch as one
statement (``app.persistence.bulk_rows``); the feed it leaves is that of the general
path, one statement per row."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.events import database
from app.events.database import Database, insert_each
from app.events.projector import FeedProjector
from app.events.store import FeedStore
from tests.support.pgserver import PostgresServer
from tests.support.view_log import Log, every_kind_log, postgres_rows

FEED_TABLES = (
    "ledger_feed_head",
    "ledger_feed_events",
    "ledger_feed_event_accounts",
    "ledger_feed_accounts",
    "ledger_feed_effects",
)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    with every_kind_log(tmp_path_factory.mktemp("log")) as log:  # every kind of event
        yield log


def project(log: Log, url: str, step_events: int) -> list[dict[str, list[tuple[Any, ...]]]]:
    """The feed's tables after each step of ``step_events``."""
    ledger, _ = log
    store = FeedStore(Database(url))
    try:
        projector = FeedProjector(ledger, store)
        steps = []
        while projector.step(step_events):
            steps.append(postgres_rows(url, FEED_TABLES))
        return steps
    finally:
        store.database.close()


@pytest.mark.parametrize("step_events", [1, 7, 5_000])
def test_the_feed_written_in_one_statement_per_table_is_that_of_one_per_row(
    log: Log,
    postgres_server: PostgresServer,
    step_events: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bulk_url, general_url = (
        postgres_server.create_database(f"{tmp_path.name[:40]}_{side}") for side in "ab"
    )
    bulk = project(log, bulk_url, step_events)
    monkeypatch.setattr(database._Rewriting, "insert_many", insert_each)
    general = project(log, general_url, step_events)
    assert bulk == general
    # Every table held rows at some step (left empty by both, it would prove nothing);
    # effects wait only while a step ends between a transfer's account events and its own.
    written = {table for step in bulk for table, rows in step.items() if rows}
    expected = set(FEED_TABLES) - ({"ledger_feed_effects"} if step_events == 5_000 else set())
    assert written == expected
