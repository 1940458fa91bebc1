"""Many rows in one PostgreSQL statement: a parameter per column, a binary array cast to
the column's type, turned back into rows by ``unnest``. PostgreSQL then runs one insert
(or one update joined by key) for all the rows instead of one per row, and psycopg
sends a parameter per column instead of one per value and row. The views' writer and
the feed projector write a batch's rows so (``executemany`` elsewhere)."""

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

# A table's column types by column name, as the catalog writes them (``bigint``, …).
ColumnTypes = Mapping[str, str]


def column_types(
    connection: psycopg.Connection[Any], schema: str | None
) -> dict[str, dict[str, str]]:
    """Each table's column types in ``schema`` (None: the connection's current schema)."""
    with connection.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = coalesce(%s, current_schema()) AND c.relkind = 'r' "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            (schema,),
        )
        found: dict[str, dict[str, str]] = {}
        for table, column, kind in cursor.fetchall():
            found.setdefault(table, {})[column] = kind
    return found


class CatalogTypes:
    """The column types of a schema's tables (``column_types``), read from the catalog
    when first asked for and kept; read again when asked for a table they do not have
    (one created since). Safe to share between threads."""

    def __init__(self, schema: str | None = None) -> None:
        self._schema = schema
        self._found: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def of(self, connection: psycopg.Connection[Any], table: str) -> ColumnTypes:
        with self._lock:
            if table not in self._found:
                self._found = column_types(connection, self._schema)
            return self._found[table]


def insert_row_sql(table: str, columns: Sequence[str], conflict: str = "") -> str:
    """The general path's INSERT of one row (``?`` placeholders), for ``executemany``."""
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {conflict}"  # noqa: S608


def insert_rows_sql(
    table: str, columns: Sequence[str], types: ColumnTypes, conflict: str = ""
) -> str:
    """An INSERT of ``column_arrays(rows)`` into ``table`` (its name as SQL text),
    ``conflict`` (an ``ON CONFLICT`` clause) after it."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608  # our names
        f"SELECT * FROM unnest({_arrays(columns, types)}) {conflict}"
    )


def update_rows_sql(table: str, columns: Sequence[str], key: str, types: ColumnTypes) -> str:
    """An UPDATE of ``columns`` of ``table``'s rows by ``key``, from ``column_arrays`` of
    rows holding those columns' values and then the key's (keys distinct)."""
    named = [*columns, key]
    return (
        f"UPDATE {table} AS t "  # noqa: S608  # our names
        f"SET {', '.join(f'{c} = v.{c}' for c in columns)} "
        f"FROM unnest({_arrays(named, types)}) AS v({', '.join(named)}) "
        f"WHERE t.{key} = v.{key}"
    )


def column_arrays(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The statements' parameters: the rows' values column by column."""
    return [list(values) for values in zip(*rows, strict=True)]


def _arrays(columns: Sequence[str], types: ColumnTypes) -> str:
    return ", ".join(f"%b::{types[column]}[]" for column in columns)
