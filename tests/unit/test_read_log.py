"""``read_log`` reads the log page by page: every event after ``after`` up to the stop,
once and in order, whatever the page size and wherever positions skip numbers, and on
SQLite by the recorder's own query (tuples), not the library's slower one."""

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit import log as log_module
from app.audit.log import read_log
from app.compat import ExecutemanySQLiteRecorder
from app.persistence.stores import sqlite_env

UNIT: Final = "CREDITS"
PAGE_SIZE: Final = 3
# Positions removed from the log, so that positions skip numbers (as PostgreSQL's
# sequence does after a rolled back write): two apart, two together, and the first.
REMOVED: Final = (1, 5, 9, 10)
EVENTS_TABLE: Final = "stored_events"  # the library's SQLite table
LOG_MAX: Final = 1_000  # more than any test here writes


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "events.sqlite"
    with Ledger(sqlite_env(str(path))) as ledger:
        ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
        ledger.open_account(OpenAccount("a", UNIT))
        for number in range(5):
            ledger.record_transfer(RecordTransfer(f"t{number}", "bank", "a", number + 1))
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            f"DELETE FROM {EVENTS_TABLE} WHERE rowid = ?",
            [(position,) for position in REMOVED],
        )
    return path


def stored(path: Path) -> list[tuple[int, str, int]]:
    """(position, stream, version) of every row, read past the ledger's code."""
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(
            f"SELECT rowid, originator_id, originator_version FROM {EVENTS_TABLE} ORDER BY rowid"
        ).fetchall()
    return [(position, str(UUID(stream)), version) for position, stream, version in rows]


def read(ledger: Ledger, after: int, stop: int | None) -> list[tuple[int, str, int]]:
    return [
        (position, str(event.originator_id), event.originator_version)
        for position, event in read_log(ledger, after=after, stop_position=stop)
    ]


def test_each_event_after_the_start_up_to_the_stop_is_read_once_in_order_across_gaps(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = stored(log_path)
    head = rows[-1][0]
    assert len(rows) == head - len(REMOVED) > 3 * PAGE_SIZE
    monkeypatch.setattr(log_module, "LOG_PAGE_SIZE", PAGE_SIZE)
    with Ledger(sqlite_env(str(log_path))) as ledger:
        for after in range(head + 2):
            for stop in [None, *range(head + 2)]:
                last = head if stop is None else stop
                expected = [row for row in rows if after < row[0] <= last]
                assert read(ledger, after, stop) == expected, (after, stop)


def test_on_sqlite_the_log_is_read_by_the_recorders_own_query(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library_select = ExecutemanySQLiteRecorder.select_notifications
    asked: list[Any] = []

    def spied(*args: Any, **kwargs: Any) -> Sequence[Any]:
        asked.append(kwargs)
        return library_select(*args, **kwargs)

    monkeypatch.setattr(ExecutemanySQLiteRecorder, "select_notifications", spied)
    monkeypatch.setattr(log_module, "LOG_PAGE_SIZE", PAGE_SIZE)
    rows = stored(log_path)
    with Ledger(sqlite_env(str(log_path))) as ledger:
        assert read(ledger, 0, None) == rows
        assert read(ledger, 2, rows[-3][0]) == [row for row in rows if 2 < row[0] <= rows[-3][0]]
    assert asked == [], "a page went to the library's query (a row object and a UUID per row)"


def test_on_every_backend_each_event_after_the_start_up_to_the_stop_is_read_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page no longer than the positions left, on each store's own query: pages of
    one, two and three events, the start and the stop on each position, beside it and
    in a gap (KurrentDB's commit positions skip numbers between any two events)."""
    ledger.open_account(OpenAccount("bank", UNIT, allow_negative=True))
    ledger.open_account(OpenAccount("a", UNIT))
    for number in range(3):
        ledger.record_transfer(RecordTransfer(f"t{number}", "bank", "a", number + 1))
    positions = [
        notification.id
        for notification in ledger.recorder.select_notifications(start=None, limit=LOG_MAX)
    ]
    assert positions[-1] == ledger.recorder.max_notification_id()
    ends = sorted({0, *positions, *(position + step for position in positions for step in (-1, 1))})
    for page_size in range(1, PAGE_SIZE + 1):
        monkeypatch.setattr(log_module, "LOG_PAGE_SIZE", page_size)
        for after in ends:
            for stop in [None, *ends]:
                last = positions[-1] if stop is None else stop
                expected = [position for position in positions if after < position <= last]
                found = read_log(ledger, after=after, stop_position=stop)
                assert [position for position, _ in found] == expected, (page_size, after, stop)
