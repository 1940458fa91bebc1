"""The views' place is named by the version of their tables (decision 0036): a process
of a newer version builds its own views beside an older version's, which it leaves as
they are, so that the older processes still running (a rolling upgrade) keep theirs."""

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from app.persistence.stores import sqlite_url
from projections.runner import open_view, view_file, view_schema
from projections.schema import SCHEMA_VERSION
from tests.support.pgserver import PostgresServer

OLDER_VERSION = 5


def test_a_newer_version_builds_its_sqlite_views_beside_an_older_ones(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "views.sqlite")
    older = tmp_path / "views.g1.sqlite"  # where version 5 kept generation 1
    with closing(sqlite3.connect(older)) as connection, connection:
        connection.execute("CREATE TABLE view_schema (id INTEGER PRIMARY KEY, version INTEGER)")
        connection.execute("INSERT INTO view_schema VALUES (1, ?)", [OLDER_VERSION])

    view = open_view(url, 1)
    checkpoint = view.checkpoint()
    cast(Any, view).datastore.close()

    assert checkpoint == 0  # its own, new views
    assert view_file(url, 1).exists()
    assert view_file(url, 1) != older
    with closing(sqlite3.connect(older)) as connection:
        assert connection.execute("SELECT version FROM view_schema").fetchall() == [
            (OLDER_VERSION,)
        ]
    with closing(sqlite3.connect(view_file(url, 1))) as connection:
        assert connection.execute("SELECT version FROM view_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


@pytest.mark.postgres
def test_a_newer_version_builds_its_postgres_views_beside_an_older_ones(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database("view_versions")
    with psycopg.connect(url, autocommit=True) as connection:
        # Where version 5 kept generation 1: its version and a checkpoint of its own.
        connection.execute("CREATE SCHEMA ledger_views_g1")
        connection.execute(
            "CREATE TABLE ledger_views_g1.view_schema (id INTEGER PRIMARY KEY, version INTEGER)"
        )
        connection.execute(
            "INSERT INTO ledger_views_g1.view_schema VALUES (1, %s)", [OLDER_VERSION]
        )

    view = open_view(url, 1)
    checkpoint = view.checkpoint()
    cast(Any, view).datastore.close()

    assert checkpoint == 0
    assert view_schema(1) != "ledger_views_g1"
    with psycopg.connect(url, autocommit=True) as connection:
        older = connection.execute("SELECT version FROM ledger_views_g1.view_schema").fetchall()
        newer = connection.execute(
            f'SELECT version FROM "{view_schema(1)}".view_schema'  # our own schema's name
        ).fetchall()
    assert older == [(OLDER_VERSION,)]
    assert newer == [(SCHEMA_VERSION,)]
