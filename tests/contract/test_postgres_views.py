"""How the views are read on PostgreSQL (the round trips and plans behind list and
search staying within a few milliseconds): a read is one statement in autocommit, with
no BEGIN and ROLLBACK around it; the views' connections plan for a working set in
memory; a search by several metadata pairs is one statement that walks the rarest pair's
rows whatever the planner's statistics. What the reads answer is the read-model
contract's (test_read_model.py)."""

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import psycopg
import pytest
from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.pq import TransactionStatus

from app.application.read_model import AccountFilter
from app.domain.account import Account
from projections.backends import (
    INDEX_DROP_LOCK_WAIT_SECONDS,
    VIEW_RANDOM_PAGE_COST,
    PostgresLedgerView,
)
from projections.reader import rarest_pair_search
from projections.runner import open_view
from projections.schema import APPLICATION_NAME

pytestmark = pytest.mark.postgres

PLANS = ("free", "pro")
REGIONS = ("eu", "us", "apac")
ACCOUNTS = 60


@pytest.fixture
def view(postgres_url: str) -> Iterator[PostgresLedgerView]:
    opened = open_view(postgres_url, 1)
    assert isinstance(opened, PostgresLedgerView)
    try:
        yield opened
    finally:
        opened.datastore.close()


def open_accounts(view: PostgresLedgerView) -> list[Account]:
    """Accounts with a plan and a region each, applied as the projection applies them."""
    accounts = []
    batch: list[tuple[Any, Tracking]] = []
    for number in range(ACCOUNTS):
        metadata = {"plan": PLANS[number % 2], "region": REGIONS[number % 3]}
        account = Account.open(f"acct:{number:03d}", "CREDITS", False, 0, metadata)
        accounts.append(account)
        batch += [
            (event, Tracking(APPLICATION_NAME, len(batch) + 1))
            for event in account.collect_events()
        ]
    view.apply_events(batch)
    return accounts


def test_a_view_read_runs_in_autocommit_without_a_transaction_around_it(
    view: PostgresLedgerView,
) -> None:
    with view._reading() as cursor:
        cursor.execute("SELECT 1")
        connection = cast("Cursor[Any]", cursor).connection
        assert connection.info.transaction_status == TransactionStatus.IDLE


def test_the_views_connections_plan_for_a_working_set_in_memory(
    view: PostgresLedgerView,
) -> None:
    row = view._one("SHOW random_page_cost")
    assert float(row["random_page_cost"]) == VIEW_RANDOM_PAGE_COST


def test_a_search_by_several_pairs_is_one_statement_and_finds_every_match(
    view: PostgresLedgerView, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_accounts(view)

    def no_count_lookup(*_: object) -> None:
        raise AssertionError("the pairs' counts were read first")

    monkeypatch.setattr(view, "_pair_counts", no_count_lookup)
    everyone = view.accounts(AccountFilter(limit=ACCOUNTS))
    assert len(everyone) == ACCOUNTS
    for pairs in ({"plan": "pro", "region": "eu"}, {"region": "us", "plan": "free"}):
        expected = [
            account.id
            for account in everyone
            if all(account.metadata.get(key) == value for key, value in pairs.items())
        ]
        assert expected, "each search matches some accounts"
        found = view.accounts(AccountFilter(metadata=pairs, limit=ACCOUNTS))
        assert [account.id for account in found] == expected
    assert view.accounts(AccountFilter(metadata={"plan": "pro", "region": "mars"})) == []


SEARCHED_ACCOUNTS = 2_000
RARE_EVERY = 20  # one account in 20 is in region "eu"; one in 2 is on plan "pro"
SEARCH_PAGE = 10
JOINS = ("Nested Loop", "Hash Join", "Merge Join")


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


@pytest.mark.parametrize("statistics", ["none (just built in bulk)", "after VACUUM ANALYZE"])
def test_a_two_pair_search_walks_only_the_rarest_pairs_rows_whatever_the_statistics(
    view: PostgresLedgerView, statistics: str
) -> None:
    """Without statistics the planner believed each pair matched 2 rows and walked the
    commonest pair, joining the balances before the other pair (~2,000 accounts checked
    for 100 answers); with them it chose a merge join. The search is now one shape in
    both states: the rarest pair's rows in id order, the other pair checked on each row,
    no join at all."""
    with view._transaction(commit=True) as cursor:
        for table in ("balances", "account_metadata", "account_metadata_counts"):
            view._run(cursor, f"ALTER TABLE {{{table}}} SET (autovacuum_enabled = false)")
    batch: list[tuple[Any, Tracking]] = []
    for number in range(SEARCHED_ACCOUNTS):
        region = "eu" if number % RARE_EVERY == 0 else "us"
        metadata = {"plan": PLANS[number % 2 == 0], "region": region}
        account = Account.open(f"acct:{number:05d}", "CREDITS", False, 0, metadata)
        batch += [(e, Tracking(APPLICATION_NAME, len(batch) + 1)) for e in account.collect_events()]
    view.apply_events(batch)
    if statistics.startswith("after"):
        with view.datastore.get_connection() as connection:
            connection.execute("VACUUM ANALYZE")
    pairs = [("plan", "pro"), ("region", "eu")]
    query = AccountFilter(metadata=dict(pairs), limit=SEARCH_PAGE)
    found = [account.id for account in view.accounts(query)]
    rare = [f"acct:{n:05d}" for n in range(0, SEARCHED_ACCOUNTS, RARE_EVERY)]
    assert found == rare[:SEARCH_PAGE], "every rare account is on plan pro"
    statement, params = rarest_pair_search(query, pairs)
    explained = view._all("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
    nodes = list(plan_nodes(explained[0]["QUERY PLAN"][0]["Plan"]))
    assert not [node["Node Type"] for node in nodes if node["Node Type"] in JOINS]
    walks = [node for node in nodes if node.get("Relation Name") == "account_metadata"]
    assert len(walks) == 1, "one walk over the pairs' rows"
    walked = walks[0]["Actual Rows"] + walks[0].get("Rows Removed by Filter", 0)
    assert walked == SEARCH_PAGE, "only the rarest pair's rows, up to the page's end"


OPENERS = 4
FRESH_GENERATIONS = 5


def test_processes_opening_new_views_at_once_all_open_them(postgres_url: str) -> None:
    """``serve`` and ``project`` starting together on a new database create the same
    schema and tables at once; PostgreSQL's catalog lets only one of them win ("tuple
    concurrently updated", a duplicate ``pg_type``). Every opener must still get its
    view, for several fresh generations (each a new schema)."""
    for generation in range(2, 2 + FRESH_GENERATIONS):
        start = threading.Barrier(OPENERS)

        def open_at_once(generation: int = generation, start: threading.Barrier = start) -> Any:
            start.wait()
            return open_view(postgres_url, generation)

        with ThreadPoolExecutor(OPENERS) as pool:
            futures = [pool.submit(open_at_once) for _ in range(OPENERS)]
            opened = [future.result() for future in futures]  # raises an opener's error
        try:
            assert all(isinstance(view, PostgresLedgerView) for view in opened)
            assert [view.checkpoint() for view in opened] == [0] * OPENERS
        finally:
            for view in opened:
                view.datastore.close()


def index_names(view: PostgresLedgerView) -> set[str]:
    schema = cast("Any", view).datastore.schema
    rows = view._all("SELECT indexname AS name FROM pg_indexes WHERE schemaname = ?", [schema])
    return {row["name"] for row in rows}


def test_an_older_index_behind_a_long_read_is_kept_and_the_views_still_open(
    postgres_url: str,
) -> None:
    """Dropping an index an older version made (``DROPPED_INDEXES``) takes the table's
    ACCESS EXCLUSIVE lock, which waits for every read of it and holds every later read
    behind it. Opening the views behind a long read (an export, an audit) waits for it
    at most ``INDEX_DROP_LOCK_WAIT_SECONDS``, keeps the index, and lets other readers
    on; a later start drops it."""
    first = open_view(postgres_url, 1)
    assert isinstance(first, PostgresLedgerView)
    older = "transfers_by_debit_idx"
    schema = cast("Any", first).datastore.schema
    with first.datastore.transaction(commit=True) as cursor:
        cursor.execute(first._sql(f"CREATE INDEX {older} ON {{transfers}} (debit_account_id)"))
    first.datastore.close()
    with psycopg.connect(postgres_url) as long_read:
        # The read's transaction stays open, holding its lock on the table.
        long_read.execute(f'SELECT COUNT(*) FROM "{schema}".transfers').fetchone()
        opened: list[PostgresLedgerView] = []

        def open_behind_the_read() -> None:
            view = open_view(postgres_url, 1)
            assert isinstance(view, PostgresLedgerView)
            opened.append(view)

        opener = threading.Thread(target=open_behind_the_read)
        opener.start()
        opener.join(timeout=INDEX_DROP_LOCK_WAIT_SECONDS + 30)
        assert opened, "opening the views waited for the long read"
        view = opened[0]
        try:
            assert older in index_names(view), "dropped although a read held the table"
            assert view._one("SELECT COUNT(*) AS n FROM {transfers}")["n"] == 0  # others read
        finally:
            view.datastore.close()
        long_read.rollback()
    later = open_view(postgres_url, 1)
    assert isinstance(later, PostgresLedgerView)
    try:
        assert older not in index_names(later)
    finally:
        later.datastore.close()
