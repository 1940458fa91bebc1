"""The bulk writers' column types (``app.persistence.bulk_rows.CatalogTypes``): read from
the catalog once, and again for a table created since (a later generation's table, the
feed's tables made after the first write)."""

from pathlib import Path

import psycopg
import pytest

from app.persistence.bulk_rows import CatalogTypes
from tests.support.pgserver import PostgresServer


def test_a_table_created_after_the_first_read_is_found(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database(tmp_path.name[:40])
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA kept")
        connection.execute("CREATE TABLE kept.first (id bigint, note text)")
        catalog = CatalogTypes("kept")
        assert dict(catalog.of(connection, "first")) == {"id": "bigint", "note": "text"}
        connection.execute("CREATE TABLE kept.later (at timestamp with time zone)")
        assert dict(catalog.of(connection, "later")) == {"at": "timestamp with time zone"}
        # Another schema's tables are not this catalog's.
        connection.execute("CREATE TABLE public.elsewhere (id bigint)")
        with pytest.raises(KeyError):
            catalog.of(connection, "elsewhere")
