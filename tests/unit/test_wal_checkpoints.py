"""The views' and the feed's SQLite files copy their WAL back into the database file only
once it holds many pages (``VIEWS_WAL_AUTOCHECKPOINT_PAGES``,
``FEED_WAL_AUTOCHECKPOINT_PAGES``), not at SQLite's default of 1,000: a live batch
dirties a page per row of each random-key index, and pages many batches rewrite are
then copied back once per checkpoint (decision 0013, eighth-session addendum)."""

import os
from pathlib import Path
from typing import Any, Final

from app.events.database import FEED_WAL_AUTOCHECKPOINT_PAGES, Database, events_database_url
from app.persistence.stores import sqlite_url
from projections.backends import VIEWS_WAL_AUTOCHECKPOINT_PAGES
from projections.runner import open_view

SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES: Final = 1_000
# Rows of about a page each: one commit of more pages than SQLite's default checkpoint.
PAGE_SIZED_ROWS: Final = 1_500
ROW_BYTES: Final = 3_000


def _fill(cursor: Any) -> None:
    cursor.execute("CREATE TABLE filler (n INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    cursor.executemany(
        "INSERT INTO filler (n, body) VALUES (?, ?)",
        [(n, os.urandom(ROW_BYTES)) for n in range(PAGE_SIZED_ROWS)],
    )


def test_a_views_commit_of_more_than_a_thousand_pages_stays_in_the_wal(tmp_path: Path) -> None:
    view: Any = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    with view.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == VIEWS_WAL_AUTOCHECKPOINT_PAGES
        cursor.execute("PRAGMA page_size")
        page_size = cursor.fetchone()[0]
    database_file = Path(view.datastore.pool.db_name)
    before = database_file.stat().st_size
    with view.datastore.transaction(commit=True) as cursor:
        _fill(cursor)
    # With SQLite's default the commit would have copied its pages into the file.
    assert database_file.stat().st_size == before
    wal = Path(f"{database_file}-wal").stat().st_size
    assert wal > SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES * page_size
    view.datastore.close()


def test_a_feed_commit_of_more_than_a_thousand_pages_stays_in_the_wal(tmp_path: Path) -> None:
    url = events_database_url(sqlite_url(tmp_path / "views.sqlite"))
    database = Database(url)
    with database.transaction(write=True) as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == FEED_WAL_AUTOCHECKPOINT_PAGES
        cursor.execute("PRAGMA page_size")
        page_size = cursor.fetchone()[0]
        cursor.execute("CREATE TABLE IF NOT EXISTS started (n INTEGER)")
    database_file = tmp_path / "views.events.sqlite"
    before = database_file.stat().st_size
    with database.transaction(write=True) as cursor:
        _fill(cursor)
    assert database_file.stat().st_size == before
    wal = Path(f"{database_file}-wal").stat().st_size
    assert wal > SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES * page_size
    database.close()
