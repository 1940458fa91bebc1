"""Counting the PostgreSQL connections code under test opens."""

from typing import Any

import psycopg
import pytest


def counting_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection psycopg opens from now on (to the test's end), by the URL it was
    given."""
    opened: list[str] = []
    connect = psycopg.connect

    def counted(url: str, **options: Any) -> psycopg.Connection[Any]:
        opened.append(url)
        return connect(url, **options)

    monkeypatch.setattr(psycopg, "connect", counted)
    return opened
