"""The read-model port's contract, on every read-model backend (SQLite, PostgreSQL):
each query and filter of the query service over real projected views, checked against
the log itself (folds of the events) rather than against hard-coded figures."""

import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections.reader
from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.queries import Queries
from app.application.read_model import (
    AccountFilter,
    Interval,
    Lag,
    ReadModel,
    TransferFilter,
)
from app.application.views import DueGrant, LotStatusFilter
from app.domain.account import Account
from app.domain.errors import AccountNotFoundError, ValidationError
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env, sqlite_url
from projections.backends import LedgerView, PostgresLedgerView
from projections.runner import measure_lag, open_view, start_runner
from projections.schema import SCHEMA_VERSION
from tests.support.pgserver import PostgresServer
from tests.support.threads import run_in_threads

CATCH_UP_SECONDS: Final = 60.0
UNIT: Final = "CREDITS"
OTHER_UNIT: Final = "USD"
_databases = itertools.count()


class Clock:
    """The ledger's clock for checks (expiry); events keep the real time."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(tz=UTC) + self.offset


class FixedSource:
    """A ReadModelSource over one view generation (no pointer)."""

    def __init__(self, ledger: Ledger, view: LedgerView) -> None:
        self.ledger = ledger
        self.view = view

    def read_model(self) -> ReadModel:
        return self.view

    def lag(self) -> Lag:
        return measure_lag(self.ledger, self.view, 1)


@dataclass
class Books:
    ledger: Ledger
    queries: Queries
    view: LedgerView
    event_store_url: str
    read_model_url: str
    clock: Clock
    positions: list[int]

    def project(self) -> None:
        """Catch the views up with the log's head."""
        runner = start_runner(self.event_store_url, self.read_model_url, 1)
        try:
            runner.wait(self.queries.head(), CATCH_UP_SECONDS)
        finally:
            runner.__exit__(None, None, None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def read_model_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "views.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"read_model_{next(_databases)}")


@pytest.fixture
def books(read_model_url: str, tmp_path: Path) -> Iterator[Books]:
    event_store_url = sqlite_url(tmp_path / "events.sqlite")
    clock = Clock()
    ledger = Ledger(event_store_env(event_store_url), clock=clock)
    view = open_view(read_model_url, 1)
    queries = Queries(ledger, FixedSource(ledger, view), wait_seconds=CATCH_UP_SECONDS)
    try:
        yield Books(ledger, queries, view, event_store_url, read_model_url, clock, [])
    finally:
        ledger.close()
        view_any: Any = view
        view_any.datastore.close()


def write_history(books: Books) -> None:
    """Accounts of two units with metadata, every kind of statement line, and closing."""
    ledger = books.ledger
    record = books.positions.append
    record(ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True)).position)
    record(ledger.open_account(OpenAccount("fx:bank", OTHER_UNIT, allow_negative=True)).position)
    for number in range(6):
        plan = "pro" if number % 2 else "free"
        command = OpenAccount(f"user:{number}", UNIT, metadata={"plan": plan, "n": str(number)})
        record(ledger.open_account(command).position)
    record(ledger.open_account(OpenAccount("fx:user", OTHER_UNIT)).position)
    for number in range(6):
        funding = RecordTransfer(
            f"fund:{number}", "bank", f"user:{number}", 100 + number, metadata={"kind": "fund"}
        )
        record(ledger.record_transfer(funding).position)
    record(ledger.record_transfer(RecordTransfer("fx:fund", "fx:bank", "fx:user", 7)).position)
    record(ledger.record_transfer(RecordTransfer("spend", "user:1", "user:2", 30)).position)
    holds = {
        "hold:capture": 40,
        "hold:release": 20,
        "hold:expire": 10,
    }
    for transfer_id, amount in holds.items():
        hold = RecordTransfer(
            transfer_id, "user:3", "bank", amount, pending=True, timeout_seconds=60
        )
        record(ledger.record_transfer(hold).position)
    record(ledger.post_pending("hold:capture", 25).position)
    record(ledger.void_pending("hold:release").position)
    books.clock.offset = timedelta(minutes=5)
    record(ledger.expire_pending("hold:expire").position)
    record(ledger.record_transfer(RecordTransfer("empty", "user:5", "bank", 105)).position)
    record(ledger.close_account("user:5").position)


@pytest.fixture
def history(books: Books) -> Books:
    write_history(books)
    books.project()
    return books


# Accounts ------------------------------------------------------------------------------


def ids(accounts: list[Any]) -> list[str]:
    return [account.id for account in accounts]


def test_accounts_are_listed_in_id_order_and_filtered(history: Books) -> None:
    queries = history.queries
    everything = queries.accounts(AccountFilter()).value
    assert ids(everything) == sorted(ids(everything))
    assert len(everything) == 9
    users = queries.accounts(AccountFilter(prefix="user:")).value
    assert ids(users) == [f"user:{n}" for n in range(6)]
    assert ids(queries.accounts(AccountFilter(unit=OTHER_UNIT)).value) == ["fx:bank", "fx:user"]
    assert ids(queries.accounts(AccountFilter(status="closed")).value) == ["user:5"]
    open_users = queries.accounts(AccountFilter(prefix="user:", status="open")).value
    assert "user:5" not in ids(open_users)
    assert len(open_users) == 5


def test_accounts_are_searched_by_metadata_pairs_all_of_which_must_match(history: Books) -> None:
    queries = history.queries
    pro = queries.accounts(AccountFilter(metadata={"plan": "pro"})).value
    assert ids(pro) == ["user:1", "user:3", "user:5"]
    both = queries.accounts(AccountFilter(metadata={"plan": "pro", "n": "3"})).value
    assert ids(both) == ["user:3"]
    assert queries.accounts(AccountFilter(metadata={"plan": "pro", "n": "2"})).value == []
    assert queries.accounts(AccountFilter(metadata={"plan": "gold"})).value == []


def test_a_search_by_several_pairs_finds_what_a_filter_of_every_account_finds(
    history: Books,
) -> None:
    """Whichever pair drives the search (the rarest), the answer is the accounts that
    have every pair, in id order, before and after metadata updates move the counts."""
    queries = history.queries
    history.ledger.update_account("user:0", {"plan": "pro", "n": "3"})
    history.ledger.update_account("user:3", {"plan": "free"})
    history.ledger.update_account("user:4", {"region": "eu"})
    history.project()
    everyone = queries.accounts(AccountFilter()).value
    searches = [
        {"plan": "pro", "n": "3"},
        {"plan": "free", "n": "3"},
        {"plan": "free", "region": "eu"},
        {"plan": "free", "n": "4", "region": "eu"},
        {"plan": "pro", "n": "0"},  # user:0's old pair: gone
        {"plan": "gold", "n": "1"},  # a pair on no account
    ]
    found_some = 0
    for pairs in searches:
        expected = [
            account.id
            for account in everyone
            if all(account.metadata.get(key) == value for key, value in pairs.items())
        ]
        assert ids(queries.accounts(AccountFilter(metadata=pairs)).value) == expected, pairs
        found_some += bool(expected)
    assert found_some >= 3, "most searches find someone"


def test_a_search_by_pairs_with_every_other_filter_pages_through_what_a_filter_finds(
    history: Books,
) -> None:
    """Pairs combined with the unit, the status, a prefix and a page start: page after
    page of two, the answer is the accounts of a filter of every account, in id order
    (PostgreSQL probes the unit and status per account; SQLite joins them)."""
    ledger = history.ledger
    for number, plan in enumerate(["pro", "free", "pro"]):
        opened = OpenAccount(f"fx:{number}", OTHER_UNIT, metadata={"plan": plan, "tier": "a"})
        ledger.open_account(opened)
    ledger.update_account("user:1", {"tier": "a"})
    ledger.close_account("fx:2")
    history.project()
    queries = history.queries
    everyone = queries.accounts(AccountFilter()).value
    searches: list[dict[str, str]] = [
        {"plan": "pro"},
        {"plan": "free"},
        {"plan": "pro", "tier": "a"},
        {"tier": "a", "plan": "free"},
        {"plan": "gold", "tier": "a"},
    ]
    found_some = 0
    statuses: list[Literal["open", "closed"] | None] = [None, "open", "closed"]
    for pairs, unit, status, prefix in itertools.product(
        searches, [None, UNIT, OTHER_UNIT], statuses, [None, "user:", "fx:"]
    ):
        expected = [
            account.id
            for account in everyone
            if all(account.metadata.get(key) == value for key, value in pairs.items())
            and unit in (None, account.unit)
            and status in (None, account.status)
            and account.id.startswith(prefix or "")
        ]
        seen: list[str] = []
        after: str | None = None
        while True:
            search = AccountFilter(
                metadata=pairs, unit=unit, status=status, prefix=prefix, after_id=after, limit=2
            )
            page = ids(queries.accounts(search).value)
            seen += page
            if len(page) < 2:
                break
            after = page[-1]
        assert seen == expected, (pairs, unit, status, prefix)
        found_some += len(expected) > 1
    assert found_some >= 10, "many searches span more than one page"


def test_account_pages_follow_each_other_without_gaps_or_repeats(history: Books) -> None:
    queries = history.queries
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = queries.accounts(AccountFilter(after_id=after, limit=2)).value
        pages += 1
        seen += ids(page)
        if len(page) < 2:
            break
        after = page[-1].id
    assert pages >= 5
    assert seen == ids(queries.accounts(AccountFilter()).value)


def test_a_metadata_update_is_found_by_its_new_value_only(history: Books) -> None:
    outcome = history.ledger.update_account("user:0", {"plan": "pro", "n": None})
    assert outcome.account.metadata == {"plan": "pro"}
    assert history.queries.account("user:0").metadata == {"plan": "pro"}  # from the stream
    history.project()
    queries = history.queries
    assert "user:0" in ids(queries.accounts(AccountFilter(metadata={"plan": "pro"})).value)
    assert queries.accounts(AccountFilter(metadata={"n": "0"})).value == []
    assert "user:0" not in ids(queries.accounts(AccountFilter(metadata={"plan": "free"})).value)
    unchanged = history.ledger.update_account("user:0", {"plan": "pro"})
    assert unchanged.position == outcome.position  # nothing changed: no event


def test_a_past_read_shows_the_metadata_of_then(history: Books) -> None:
    """Metadata travels in time with the balances: at a position or a time before an
    update the account shows what it had then, after it what it has now."""
    queries = history.queries
    before = history.queries.head()
    moment_before = datetime.now(tz=UTC)
    first = history.ledger.update_account("user:0", {"plan": "pro", "n": None})
    second = history.ledger.update_account("user:0", {"tier": "gold"})
    history.project()
    opened_at = history.positions[2]  # user:0's opening
    assert queries.account("user:0", at_position=opened_at).metadata == {"plan": "free", "n": "0"}
    assert queries.account("user:0", at_position=before).metadata == {"plan": "free", "n": "0"}
    assert queries.account("user:0", as_of=moment_before).metadata == {"plan": "free", "n": "0"}
    assert queries.account("user:0", at_position=first.position).metadata == {"plan": "pro"}
    now = {"plan": "pro", "tier": "gold"}
    assert queries.account("user:0", at_position=second.position).metadata == now
    assert queries.account("user:0", as_of=datetime.now(tz=UTC)).metadata == now
    assert queries.account("user:0").metadata == now
    # Another account's past is its own: user:1 never changed.
    assert queries.account("user:1", at_position=before).metadata == {"plan": "pro", "n": "1"}


LONG_CATCH_UP_TRANSFERS: Final = 2_000
LONG_CATCH_UP_ACCOUNTS: Final = 40


@pytest.mark.slow
def test_a_long_catch_up_in_full_batches_reaches_the_head_with_every_balance(
    books: Books,
) -> None:
    """Thousands of events caught up by the runner in full batches (on PostgreSQL each
    batch's statements are pipelined): the views reach the head and every balance
    equals the account's own stream."""
    ledger = books.ledger
    ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
    users = [f"long:{number:02}" for number in range(LONG_CATCH_UP_ACCOUNTS)]
    for user in users:
        ledger.open_account(OpenAccount(user, UNIT, metadata={"plan": "free"}))
    commands = [
        RecordTransfer(f"long:t{number}", "bank", users[number % len(users)], 1 + number % 7)
        for number in range(LONG_CATCH_UP_TRANSFERS)
    ]
    for start in range(0, len(commands), 1_000):
        ledger.record_batch(commands[start : start + 1_000], atomic=True)
    head = books.queries.head()
    assert head > 3 * LONG_CATCH_UP_TRANSFERS
    books.project()
    assert books.view.checkpoint() == head
    for user in users:
        written = ledger.get_account(user)
        projected = books.view.balance(user)
        assert projected is not None
        assert (projected.credits_posted, projected.balance) == (
            written.credits_posted,
            written.balance,
        )


def reopen(books: Books) -> LedgerView:
    view_any: Any = books.view
    view_any.datastore.close()
    books.view = open_view(books.read_model_url, 1)
    books.queries = Queries(
        books.ledger, FixedSource(books.ledger, books.view), wait_seconds=CATCH_UP_SECONDS
    )
    return books.view


@pytest.mark.parametrize("built_by", ["version 1 (no version row)", "another version"])
def test_views_built_by_another_schema_version_are_rebuilt_from_the_log(
    history: Books, built_by: str
) -> None:
    view: Any = history.view
    head = history.queries.head()
    assert view.checkpoint() == head
    expected = history.queries.accounts(AccountFilter()).value
    with view.datastore.transaction(commit=True) as cursor:
        if built_by == "another version":
            cursor.execute(view._sql("UPDATE {view_schema} SET version = 999"))
        else:
            cursor.execute(view._sql("DELETE FROM {view_schema}"))
    reopened: Any = reopen(history)
    assert not reopened.checkpoint(), "emptied: the runner starts again from the log"
    assert history.queries.accounts(AccountFilter()).value == []
    history.project()
    assert reopened.checkpoint() == head
    assert history.queries.accounts(AccountFilter()).value == expected
    reopen(history)  # the rebuilt views are of this version: kept as they are
    assert history.view.checkpoint() == head


def test_views_from_before_account_types_are_rebuilt_and_say_each_accounts_type(
    history: Books,
) -> None:
    opened = history.ledger.open_account(OpenAccount("revenue", UNIT, account_type="income"))
    history.positions.append(opened.position)
    history.project()
    view: Any = history.view
    with view.datastore.transaction(commit=True) as cursor:
        # A version 3 database: its balances have no account_type column.
        cursor.execute(view._sql("ALTER TABLE {balances} DROP COLUMN account_type"))
        cursor.execute(view._sql("UPDATE {view_schema} SET version = 3"))
    reopen(history)
    history.project()
    listed = {row.id: row.account_type for row in history.queries.accounts(AccountFilter()).value}
    from_streams = {name: history.queries.account(name).account_type for name in listed}
    assert listed == from_streams
    assert (listed["revenue"], listed["bank"], listed["user:0"]) == (
        "income",
        "equity",
        "liability",
    )


def index_names(view: LedgerView) -> set[str]:
    if isinstance(view, PostgresLedgerView):
        schema = cast("Any", view).datastore.schema
        rows = view._all("SELECT indexname AS name FROM pg_indexes WHERE schemaname = ?", [schema])
    else:
        rows = view._all("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {row["name"] for row in rows}


def test_views_with_an_older_versions_account_indexes_of_transfers_drop_them_and_keep_rows(
    history: Books,
) -> None:
    """Views an older version built (with ``transfers_by_debit`` and
    ``transfers_by_credit``) are of the same schema version: opened by this one they
    keep their rows and checkpoint, lose the two indexes, and list each account's
    transfers as before (decision 0033)."""
    queries, head = history.queries, history.queries.head()
    accounts = ("bank", "user:1", "user:3")

    def listings() -> dict[str, list[str]]:
        return {
            name: transfer_ids(queries.transfers(TransferFilter(account_id=name)).value)
            for name in accounts
        }

    expected = listings()
    assert all(expected.values())
    older = {"transfers_by_debit_idx", "transfers_by_credit_idx"}
    view: Any = history.view
    with view.datastore.transaction(commit=True) as cursor:
        for leg in ("debit", "credit"):
            statement = (
                f"CREATE INDEX transfers_by_{leg}_idx ON {{transfers}} ({leg}_account_id, position)"
            )
            cursor.execute(view._sql(statement))
    assert older <= index_names(history.view)
    reopened = reopen(history)
    assert reopened.checkpoint() == head, "not rebuilt"
    assert not older & index_names(reopened)
    queries = history.queries
    assert listings() == expected


def test_processes_opening_views_of_another_version_at_once_rebuild_them_once(
    history: Books,
) -> None:
    """``serve`` and ``project`` may open the same views together: each open succeeds,
    the views are emptied once (not once per opener) and end at this version."""
    view: Any = history.view
    with view.datastore.transaction(commit=True) as cursor:
        cursor.execute(view._sql("UPDATE {view_schema} SET version = 999"))
    view.datastore.close()
    openers = 3
    barrier = threading.Barrier(openers)
    opened: list[Any] = []

    def open_together() -> None:
        barrier.wait(timeout=CATCH_UP_SECONDS)
        opened.append(open_view(history.read_model_url, 1))

    run_in_threads([open_together] * openers, timeout=CATCH_UP_SECONDS)
    assert len(opened) == openers
    for each in opened:
        assert not each.checkpoint()
        assert each._schema_version() == SCHEMA_VERSION
        each.datastore.close()
    reopen(history)
    history.project()
    assert history.view.checkpoint() == history.queries.head()


def test_a_metadata_update_past_the_limits_is_refused_and_changes_nothing(history: Books) -> None:
    before = history.queries.account("user:0")
    too_many = {f"k{number}": "v" for number in range(100)}
    with pytest.raises(ValidationError):
        history.ledger.update_account("user:0", too_many)
    assert history.queries.account("user:0") == before


def test_a_current_account_read_comes_from_its_stream_with_its_last_position(
    books: Books,
) -> None:
    write_history(books)  # nothing projected: the views are empty
    account = books.queries.account("user:3")
    stream = list(books.ledger.events.get(account_uuid("user:3")))
    assert account.version == stream[-1].originator_version
    assert account.position is not None
    assert account.position <= books.queries.head()
    with pytest.raises(AccountNotFoundError):
        books.queries.account("nobody")


# Statements ----------------------------------------------------------------------------


def test_statement_lines_say_what_happened_with_balance_and_available_changes(
    history: Books,
) -> None:
    lines = history.queries.statement("user:3").value
    by_transfer = {(line.transfer_id, line.action) for line in lines}
    assert by_transfer == {
        ("fund:3", "credit"),
        ("hold:capture", "hold_placed"),
        ("hold:capture", "hold_captured"),
        ("hold:release", "hold_placed"),
        ("hold:release", "hold_released"),
        ("hold:expire", "hold_placed"),
        ("hold:expire", "hold_expired"),
    }
    for line in lines:
        if line.action == "hold_placed":
            # user:3 pays the holds: a reservation leaves the balance, takes available
            assert line.amount < 0
            assert (line.balance_change, line.available_change) == (0, line.amount)
        if line.transfer_id == "hold:capture" and line.action == "hold_captured":
            assert line.balance_change == -25
            assert line.available_change == 40 - 25
    debits = history.queries.statement("user:1").value
    assert {(line.transfer_id, line.action) for line in debits} == {
        ("fund:1", "credit"),
        ("spend", "debit"),
    }
    # The counters after each line add up: the newest line's figures are the account's.
    newest = lines[0]
    current = history.queries.account("user:3")
    assert (newest.balance, newest.available) == (current.balance, current.available)


# Transfers -----------------------------------------------------------------------------


def transfer_ids(transfers: list[Any]) -> list[str]:
    return [transfer.id for transfer in transfers]


def test_transfers_are_filtered_by_status(history: Books) -> None:
    queries = history.queries
    statuses = {
        status: set(transfer_ids(queries.transfers(TransferFilter(status=status)).value))
        for status in ("pending", "posted", "voided", "expired")
    }
    assert statuses["voided"] == {"hold:release"}
    assert statuses["expired"] == {"hold:expire"}
    assert statuses["pending"] == set()
    assert "hold:capture" in statuses["posted"]
    every = set(transfer_ids(queries.transfers(TransferFilter(limit=1000)).value))
    assert every == set().union(*statuses.values())


def test_transfers_are_filtered_by_account_metadata_and_time(history: Books) -> None:
    queries = history.queries
    of_user1 = transfer_ids(queries.transfers(TransferFilter(account_id="user:1")).value)
    assert of_user1 == ["spend", "fund:1"]  # newest first
    funds = queries.transfers(TransferFilter(metadata={"kind": "fund"})).value
    assert sorted(transfer_ids(funds)) == [f"fund:{n}" for n in range(6)]
    everything = queries.transfers(TransferFilter(order="asc")).value
    middle = everything[len(everything) // 2].recorded_at
    since = queries.transfers(TransferFilter(since=middle, order="asc")).value
    until = queries.transfers(TransferFilter(until=middle, order="asc")).value
    assert all(transfer.recorded_at >= middle for transfer in since)
    assert all(transfer.recorded_at < middle for transfer in until)
    assert transfer_ids(until) + transfer_ids(since) == transfer_ids(everything)


def test_transfer_pages_run_in_either_order_without_gaps(history: Books) -> None:
    queries = history.queries
    for order in ("asc", "desc"):
        seen: list[str] = []
        cursor: int | None = None
        while True:
            page = queries.transfers(TransferFilter(order=order, cursor=cursor, limit=3)).value
            seen += transfer_ids(page)
            if len(page) < 3:
                break
            cursor = page[-1].position
        everything = queries.transfers(TransferFilter(order=order)).value
        assert len(everything) > 6
        assert seen == transfer_ids(everything)
        positions = [transfer.position or 0 for transfer in everything]
        assert positions == sorted(positions, reverse=order == "desc")


PAIRS: Final = [("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")]


def assert_lines_in_transfer_order(view: LedgerView) -> None:
    """The writer's promise that an account's listing rests on (decision 0033 addendum):
    each account's opening lines (a transfer's debit, credit or reservation) run in the
    order of the transfers they belong to, within a commit as across commits; and some
    commit holds several transfers of one account, so that the check has met one."""
    rows = view._all(
        "SELECT e.account_id, e.position AS line, t.position AS transfer "
        "FROM {entries} e JOIN {transfers} t ON t.transfer_id = e.transfer_id "
        "WHERE e.kind IN ('Debited', 'Credited', 'DebitReserved', 'CreditReserved') "
        "ORDER BY e.account_id, e.position"
    )
    accounts: dict[str, list[int]] = {}
    for row in rows:
        accounts.setdefault(row["account_id"], []).append(int(row["transfer"]))
    for account_id, transfers in accounts.items():
        assert transfers == sorted(transfers), account_id
    spans = view._all("SELECT start_position, end_position FROM {commits}")
    shared = 0
    for span in spans:
        start, end = int(span["start_position"]), int(span["end_position"])
        within = [row["account_id"] for row in rows if start <= int(row["transfer"]) <= end]
        shared += len(within) > len(set(within))
    assert shared, "no commit held two transfers of one account"


@pytest.mark.parametrize("pairs", ["rare", "common"])
def test_an_accounts_transfer_pages_are_the_transfers_with_it_on_a_leg(
    books: Books, pairs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account's transfers are read through its statement lines, or for a hold's
    status or a metadata pair from their indexes (decision 0033): page after page of
    three, in either order and with each filter, they are the transfers of the
    unfiltered listing that have the account on a leg. The history holds atomic batches
    whose transfers' ids run against their order, holds posted and voided (lines of the
    same transfer in later commits), a reversal, a grant and its expiry, and single
    transfers written by threads together (group commits); the writer put every
    account's lines in its transfers' order. A metadata pair is taken as rare (its
    index the start) or as common (checked on each of the account's lines)."""
    if pairs == "common":
        monkeypatch.setattr(projections.reader, "RARE_PAIR_TRANSFERS", 1)
    ledger = books.ledger
    ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
    for name in ("a", "b", "c"):
        ledger.open_account(OpenAccount(name, UNIT, allow_negative=True))
    for batch in range(3):
        commands = [
            RecordTransfer(f"batch:{batch}:{9 - n}", *PAIRS[n % 4], 1 + n) for n in range(8)
        ]
        ledger.record_batch(commands, atomic=True)
    soon = datetime.now(tz=UTC) + timedelta(hours=1)
    grant = RecordTransfer("grant", "bank", "a", 50, grant=GrantTerms(expires_at=soon))
    ledger.record_transfer(grant)
    for number in range(4):
        hold = RecordTransfer(f"hold:{number}", "a", "c", 2, pending=True, timeout_seconds=600)
        ledger.record_transfer(hold)
    ledger.post_pending("hold:0")
    ledger.void_pending("hold:1")
    ledger.record_transfer(RecordTransfer("tagged", "c", "a", 3, metadata={"kind": "tag"}))
    ledger.reverse_transfer("batch:1:9", "reversal")

    def single(number: int) -> Callable[[], object]:
        pair = ("a", "b") if number % 2 else ("c", "a")
        single = RecordTransfer(f"one:{number}", *pair, 1, metadata={"from": "threads"})
        return lambda: ledger.record_transfer(single)

    run_in_threads([single(number) for number in range(12)], CATCH_UP_SECONDS)
    books.clock.offset = timedelta(hours=2)
    assert ledger.expire_grant("grant") is not None
    books.project()
    assert_lines_in_transfer_order(books.view)
    queries = books.queries
    everything = queries.transfers(TransferFilter(order="asc", limit=1000)).value
    assert [t.id for t in everything][:3] == ["batch:0:9", "batch:0:8", "batch:0:7"]
    middle = everything[len(everything) // 2].recorded_at
    filters: list[dict[str, Any]] = [
        {},
        {"status": "posted"},
        {"status": "pending"},
        {"status": "voided"},
        {"metadata": {"kind": "tag"}},
        {"metadata": {"from": "threads"}},
        {"metadata": {"from": "threads"}, "status": "posted"},
        {"since": middle},
        {"until": middle},
    ]
    checked = 0
    for account_id, order, fields in itertools.product(("a", "b", "c"), ("asc", "desc"), filters):
        every = queries.transfers(TransferFilter(order=order, limit=1000, **fields)).value
        expected = [t.id for t in every if account_id in (t.debit_account_id, t.credit_account_id)]
        seen: list[str] = []
        cursor: int | None = None
        while True:
            search = TransferFilter(
                account_id=account_id, order=order, cursor=cursor, limit=3, **fields
            )
            page = queries.transfers(search).value
            seen += transfer_ids(page)
            if len(page) < 3:
                break
            cursor = page[-1].position
        assert seen == expected, (account_id, order, fields)
        checked += len(expected) > 3
    assert checked >= 12, "many listings span several pages"


# History and totals --------------------------------------------------------------------


def folded_balance(ledger: Ledger, account_id: str, before: datetime) -> tuple[int, int]:
    """(balance, available) from the account's own events recorded before ``before``."""
    counters = [0, 0, 0]
    events: list[Any] = list(ledger.events.get(account_uuid(account_id)))
    for event in events:
        if event.timestamp >= before or not isinstance(event, Account.BalanceChanged):
            continue
        delta = event.delta()
        counters[0] += delta.debits_posted
        counters[1] += delta.credits_posted
        counters[2] += delta.debits_pending
    balance = counters[1] - counters[0]
    return balance, balance - counters[2]


@pytest.mark.parametrize("interval", ["hour", "day", "month"])
def test_history_buckets_equal_a_fold_of_the_log_at_each_end(
    history: Books, interval: Interval
) -> None:
    since = datetime.now(tz=UTC) - timedelta(days=40)
    until = datetime.now(tz=UTC)
    answer = history.queries.history("user:3", interval=interval, since=since, until=until)
    points = answer.value
    assert points, "at least one interval"
    assert points[0].start <= since < points[0].end
    for previous, point in itertools.pairwise(points):
        assert previous.end == point.start
    for point in points:
        assert (point.balance, point.available) == folded_balance(
            history.ledger, "user:3", point.end
        )
    assert (points[-1].balance, points[-1].available) == (
        history.queries.account("user:3").balance,
        history.queries.account("user:3").available,
    )


def test_history_of_too_many_intervals_is_refused(history: Books) -> None:
    with pytest.raises(ValidationError):
        history.queries.history(
            "user:3",
            interval="hour",
            since=datetime(2000, 1, 1, tzinfo=UTC),
            until=datetime.now(tz=UTC),
        )


def folded_totals(ledger: Ledger, position: int) -> dict[str, tuple[int, int, int]]:
    """Per unit (debits, credits, accounts) from the log up to ``position``."""
    units: dict[Any, str] = {}
    totals: dict[str, list[int]] = {}
    for notification in ledger.recorder.select_notifications(start=None, limit=100_000):
        if notification.id > position:
            break
        event: Any = ledger.mapper.to_domain_event(notification)
        if isinstance(event, Account.Opened):
            units[event.originator_id] = event.unit
            totals.setdefault(event.unit, [0, 0, 0])[2] += 1
        elif isinstance(event, Account.BalanceChanged):
            delta = event.delta()
            unit_totals = totals[units[event.originator_id]]
            unit_totals[0] += delta.debits_posted
            unit_totals[1] += delta.credits_posted
    return {unit: (d, c, n) for unit, (d, c, n) in totals.items()}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_totals_balance_to_zero_at_every_commit_and_match_the_log(
    history: Books, data: st.DataObject
) -> None:
    assert len(history.positions) > 20
    position = data.draw(st.sampled_from(history.positions), label="commit position")
    answer = history.queries.totals(at_position=position)
    assert answer.position == position
    assert answer.value, "every commit has at least one account"
    for totals in answer.value:
        assert totals.balance_sum == 0, (position, totals)
    expected = folded_totals(history.ledger, position)
    assert {t.unit: (t.debits_posted, t.credits_posted, t.account_count) for t in answer.value} == (
        expected
    )


def test_totals_now_and_as_of_a_time_balance_to_zero(history: Books) -> None:
    now = history.queries.totals()
    assert now.position == history.queries.head()
    assert {t.unit for t in now.value} == {UNIT, OTHER_UNIT}
    assert all(t.balance_sum == 0 for t in now.value)
    assert sum(t.account_count for t in now.value) == 9
    before_anything = history.queries.totals(as_of=datetime(2000, 1, 1, tzinfo=UTC))
    assert before_anything.value == []


# Current balances under concurrent writes ------------------------------------------------

WRITER_THREADS: Final = 4
WRITES_PER_THREAD: Final = 15


@pytest.mark.parametrize(
    "event_store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_balance_read_is_never_older_than_the_callers_last_acknowledged_write(
    event_store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if event_store == "sqlite":
        event_store_url = sqlite_url(tmp_path / "events.sqlite")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        event_store_url = server.create_database(f"consistent_{next(_databases)}")
    ledger = Ledger(event_store_env(event_store_url))
    view = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)  # never projected: unused
    queries = Queries(ledger, FixedSource(ledger, view))
    ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
    shared = "shared"
    ledger.open_account(OpenAccount(shared, UNIT))
    stale: list[str] = []

    def write_then_read(worker: int) -> None:
        for number in range(WRITES_PER_THREAD):
            written = ledger.record_transfer(
                RecordTransfer(f"w{worker}:{number}", "bank", shared, 1)
            )
            read = queries.account(shared)
            # Every other writer only adds: at least this caller's writes so far are in.
            if read.credits_posted < number + 1 or (read.position or 0) < written.position:
                stale.append(f"{worker}:{number} read {read.credits_posted} at {read.position}")

    try:
        run_in_threads(
            [functools.partial(write_then_read, worker) for worker in range(WRITER_THREADS)],
            timeout=CATCH_UP_SECONDS,
        )
        assert stale == []
        final = queries.account(shared)
        assert final.credits_posted == WRITER_THREADS * WRITES_PER_THREAD
        assert final.position == queries.head()
    finally:
        ledger.close()
        view_any: Any = view
        view_any.datastore.close()


def test_lots_are_filtered_by_status_in_the_query_and_each_page_is_full(books: Books) -> None:
    ledger, view = books.ledger, books.view
    ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user:lots", UNIT))
    ledger.open_account(OpenAccount("shop", UNIT))
    soon = datetime.now(tz=UTC) + timedelta(hours=1)
    terms = {
        "used": GrantTerms(priority=0),
        "kept": GrantTerms(priority=90),
        "short": GrantTerms(expires_at=soon, priority=95),
    }
    for number in range(3):  # consumed, live and expiring lots alternate in grant order
        for name, grant in terms.items():
            command = RecordTransfer(f"{name}{number}", "bank", "user:lots", 5, grant=grant)
            ledger.record_transfer(command)
    ledger.record_transfer(RecordTransfer("spend", "user:lots", "shop", 15))
    books.project()
    now, later = datetime.now(tz=UTC), soon + timedelta(seconds=1)

    def pages(status: LotStatusFilter, at: datetime) -> list[list[str]]:
        found: list[list[str]] = []
        after = None
        while True:
            page = view.lots("user:lots", status=status, at=at, after_position=after, limit=2)
            found.append([lot.grant_id for lot in page.items])
            assert all(lot.status == status for lot in page.items)
            if page.next_after is None:
                return found
            after = page.next_after

    assert pages("live", now) == [["kept0", "short0"], ["kept1", "short1"], ["kept2", "short2"]]
    assert pages("consumed", now) == [["used0", "used1"], ["used2"]]
    assert pages("expired", now) == [[]]
    assert pages("live", later) == [["kept0", "kept1"], ["kept2"]]
    assert pages("expired", later) == [["short0", "short1"], ["short2"]]
    assert view.due_grant_expiries(now, 10) == []
    assert view.due_grant_expiries(later, 2) == [
        DueGrant("short0", "user:lots"),
        DueGrant("short1", "user:lots"),
    ]
    assert view.due_grant_expiries(later, 2, after="short1") == [DueGrant("short2", "user:lots")]


def test_a_hold_posted_in_part_moves_its_lot_twice_in_one_event_and_the_view_folds_them(
    books: Books,
) -> None:
    ledger, view = books.ledger, books.view
    ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("user:hold", UNIT))
    ledger.open_account(OpenAccount("shop", UNIT))
    ledger.record_transfer(RecordTransfer("pack", "bank", "user:hold", 10, grant=GrantTerms()))
    held = ledger.record_transfer(RecordTransfer("h1", "user:hold", "shop", 6, pending=True))
    posted = ledger.post_pending("h1", 4)  # consumes 4 of the lot and releases 2: one event
    books.project()
    now = datetime.now(tz=UTC)
    [lot] = view.lots("user:hold", status="live", at=now).items
    assert (lot.remaining, lot.reserved) == (6, 0)
    assert held.position < lot.position <= posted.position
    [before] = view.lots("user:hold", status="live", at=now, position=held.position).items
    assert (before.remaining, before.reserved) == (10, 6)
    [after] = view.lots("user:hold", status="live", at=now, position=posted.position).items
    assert (after.remaining, after.reserved, after.position) == (6, 0, lot.position)
