"""The views' writer keeps the ``balances`` rows it committed between batches
(``RowWriter._account_rows``): a live batch does not read back the rows of accounts
that earlier batches of the same writer changed, the views it writes are those of one
catch-up whatever the batches and failures, and a failed batch leaves nothing kept."""

import copy
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Notification, Tracking
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.application.ledger import Ledger
from app.persistence.decoding import domain_event_reader
from app.persistence.stores import sqlite_url
from projections import projection
from projections.runner import open_view, view_file
from projections.schema import TABLES, timestamp_text
from tests.support.view_log import apply, every_kind_log


class BatchFailedError(Exception):
    """The failure a test puts into one batch's transaction."""


@pytest.fixture(scope="module")
def log(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Ledger, Sequence[Notification]]]:
    """Every kind of event the views fold, then many transfers among a few accounts."""
    with every_kind_log(tmp_path_factory.mktemp("log")) as log:
        yield log


def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table's rows. A metadata pair's count row stays at zero when the pair
    leaves its last account in a later batch than it came (it is gone when both happen
    in one): the same for a search, so zero counts are left out."""
    with sqlite3.connect(path) as connection:
        found = {
            table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in TABLES
        }
    found["account_metadata_counts"] = [
        row for row in found["account_metadata_counts"] if row[-1] != 0
    ]
    return found


def generation_file(directory: Path, generation: int) -> Path:
    return view_file(sqlite_url(directory / "views.sqlite"), generation)


def test_a_live_batch_reads_back_no_row_of_an_account_an_earlier_batch_wrote(
    log: tuple[Ledger, Sequence[Notification]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, notifications = log
    view = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    half = len(notifications) // 2
    apply(view, ledger, notifications[:half])
    asked: list[tuple[str, set[str]]] = []
    select_in = view._select_in

    def spy(cursor: Any, table: str, columns: tuple[str, ...], ids: Any) -> list[Any]:
        asked.append((table, set(ids)))
        return select_in(cursor, table, columns, ids)

    monkeypatch.setattr(view, "_select_in", spy)
    apply(view, ledger, notifications[half:])
    assert [ids for table, ids in asked if table == "balances"] == [set()]


def test_a_failed_batch_leaves_no_row_kept(
    log: tuple[Ledger, Sequence[Notification]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold changes the kept rows in place: after a rollback they are not what the
    views hold, so the batch tried again reads them back and the balances come out
    right (not moved twice)."""
    ledger, notifications = log
    view = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    half = len(notifications) // 2
    apply(view, ledger, notifications[:half])
    kept_before: object = view._account_rows
    assert kept_before

    def failing(cursor: Any, tracking: Tracking) -> None:
        raise BatchFailedError

    monkeypatch.setattr(view, "_insert_tracking_in", failing)
    with pytest.raises(BatchFailedError):
        apply(view, ledger, notifications[half:])
    kept_after: object = view._account_rows
    assert kept_after is None
    monkeypatch.undo()
    apply(view, ledger, notifications[half:])
    whole = open_view(sqlite_url(tmp_path / "views.sqlite"), 2)
    apply(whole, ledger, notifications)
    assert tables(generation_file(tmp_path, 1)) == tables(generation_file(tmp_path, 2))


def test_the_rows_kept_are_bounded_oldest_first(
    log: tuple[Ledger, Sequence[Notification]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, notifications = log
    monkeypatch.setattr(projection, "ACCOUNT_ROWS_KEPT_MAX", 2)
    view = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    apply(view, ledger, notifications)
    assert view._account_rows is not None
    assert len(view._account_rows) == 2


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=12),
    failing=st.lists(st.integers(min_value=0, max_value=12), max_size=3),
)
def test_the_views_written_batch_by_batch_are_those_of_one_catch_up(
    log: tuple[Ledger, Sequence[Notification]],
    tmp_path_factory: pytest.TempPathFactory,
    cuts: list[int],
    failing: list[int],
) -> None:
    """Any split of the log into batches, some batches failing once (and tried again,
    as the runner's restart does from the checkpoint): the same tables, row for row."""
    ledger, notifications = log
    directory = tmp_path_factory.mktemp("views")
    ends = sorted({min(cut, len(notifications)) for cut in cuts} | {len(notifications)})
    view = open_view(sqlite_url(directory / "views.sqlite"), 1)
    insert_tracking = view._insert_tracking_in
    start = 0
    for number, end in enumerate(ends):
        if number in failing:

            def fail(cursor: Any, tracking: Tracking) -> None:
                raise BatchFailedError

            view._insert_tracking_in = fail  # type: ignore[method-assign]
            with pytest.raises(BatchFailedError):
                apply(view, ledger, notifications[start:end])
            view._insert_tracking_in = insert_tracking  # type: ignore[method-assign]
        apply(view, ledger, notifications[start:end])
        start = end
    whole = open_view(sqlite_url(directory / "views.sqlite"), 2)
    apply(whole, ledger, notifications)
    assert tables(generation_file(directory, 1)) == tables(generation_file(directory, 2))


def apart_in_time(event: Any) -> Any:
    """A copy of ``event`` (its commit marks too) with a time stamp object of its own."""
    copied = copy.copy(event)
    object.__setattr__(copied, "timestamp", event.timestamp.replace())
    return copied


def test_a_batch_formats_each_instant_once_however_its_events_interleave(
    log: tuple[Ledger, Sequence[Notification]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each event with a time stamp object of its own (as decoding gives a group write's
    events, whose commands' instants interleave): one formatting per instant, and the
    rows those of the events as decoded."""
    ledger, notifications = log
    decode = domain_event_reader(ledger.mapper)
    events = [decode(n) for n in notifications]
    apart = [apart_in_time(event) for event in events]
    assert len({id(e.timestamp) for e in apart}) == len(apart)
    formatted: list[datetime] = []

    def counting(moment: datetime) -> str:
        formatted.append(moment)
        return timestamp_text(moment)

    monkeypatch.setattr(projection, "timestamp_text", counting)
    # A grant's terms are written with their times (an instant of the fold's, when the
    # grant takes effect at once) by a path of their own: not counted.
    monkeypatch.setattr(projection, "_time_text", timestamp_text)
    positions = [n.id for n in notifications]
    tracking = Tracking(ledger.name, positions[-1])
    url = sqlite_url(tmp_path / "views.sqlite")
    open_view(url, 1).apply_at_positions(apart, positions, tracking)
    # (A hold's expiry is a time formatted too.)
    assert {e.timestamp for e in events} <= set(formatted)
    assert [moment for moment, times in Counter(formatted).items() if times > 1] == []
    open_view(url, 2).apply_at_positions(events, positions, tracking)
    assert tables(generation_file(tmp_path, 1)) == tables(generation_file(tmp_path, 2))
