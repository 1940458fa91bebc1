"""The write function's arrays packed whole in PostgreSQL's binary format
(app/persistence/binary_arrays.py), read back by the real throwaway server: every value
as given, empty arrays too, and an array whose elements are not of the statement's type
refused by the server rather than misread."""

from typing import Any, Final
from uuid import UUID, uuid4

import psycopg
import psycopg.errors
import pytest

import app.persistence.postgres  # noqa: F401  # registers the packed arrays' dumper
from app.persistence.binary_arrays import bigint_array, bytea_array, text_array, uuid_array

pytestmark = pytest.mark.postgres

BIGINTS: Final = [0, 1, -1, 2**15, 2**31, 2**63 - 1, -(2**63)]
TEXTS: Final = ["", "a", 'quote " and comma , {braces} \\ NULL', "é ü 漢字 🙂", "x" * 10_000]
STATES: Final = [b"", bytes(range(256)), b"\x00" * 3, b"{}" * 5_000]


def read_back(url: str, cast: str, packed: Any, client_encoding: str = "UTF8") -> list[Any]:
    with psycopg.connect(url, autocommit=True, client_encoding=client_encoding) as connection:
        row = connection.execute(f"SELECT %b::{cast}", (packed,), prepare=True).fetchone()
    assert row is not None
    found: list[Any] = row[0]
    return found


def test_each_packed_array_reads_back_as_the_values_given(postgres_url: str) -> None:
    ids: list[UUID] = [uuid4() for _ in range(5)]
    assert read_back(postgres_url, "uuid[]", uuid_array(ids)) == ids
    assert read_back(postgres_url, "bigint[]", bigint_array(BIGINTS)) == BIGINTS
    assert read_back(postgres_url, "text[]", text_array(TEXTS)) == TEXTS
    assert read_back(postgres_url, "bytea[]", bytea_array(STATES)) == STATES


def test_empty_packed_arrays_read_back_empty(postgres_url: str) -> None:
    assert read_back(postgres_url, "uuid[]", uuid_array([])) == []
    assert read_back(postgres_url, "bigint[]", bigint_array([])) == []
    assert read_back(postgres_url, "text[]", text_array([])) == []
    assert read_back(postgres_url, "bytea[]", bytea_array([])) == []


def test_an_array_of_another_element_type_is_refused_not_misread(postgres_url: str) -> None:
    with pytest.raises(psycopg.errors.DatatypeMismatch):
        read_back(postgres_url, "uuid[]", bigint_array([1, 2]))
    with pytest.raises(psycopg.errors.DatatypeMismatch):
        read_back(postgres_url, "bytea[]", text_array(["a"]))


def test_texts_read_back_as_given_whatever_the_clients_encoding(postgres_url: str) -> None:
    # The server reads a binary text in the client's encoding (PGCLIENTENCODING, or a
    # LATIN1 database's default): UTF-8 bytes sent as they are would be stored as "Ã©".
    texts = ["é ü", "plain"]
    assert read_back(postgres_url, "text[]", text_array(texts), "LATIN1") == texts
