"""Shared fixtures: one real PostgreSQL server per test session, fresh stores per test."""

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.application.ledger import Ledger
from app.persistence.stores import event_store_env
from tests.support.pgserver import PostgresServer, running_postgres

_database_numbers = itertools.count()

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database(f"test_{next(_database_numbers)}")


def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite'}"
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def event_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(str(request.param), tmp_path, request)


@pytest.fixture
def ledger(event_store_url: str) -> Iterator[Ledger]:
    app = Ledger(event_store_env(event_store_url))
    yield app
    app.close()
