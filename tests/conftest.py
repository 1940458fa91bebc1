"""Shared fixtures: one real PostgreSQL server per test session, fresh stores per test."""

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.application.ledger import Ledger
from app.persistence.stores import event_store_env
from tests.support.fake_kurrentdb import fake_env
from tests.support.pgserver import PostgresServer, running_postgres

_database_numbers = itertools.count()

BACKENDS = ["memory", "sqlite", "postgres", "kurrentdb-fake", "kurrentdb-real"]
KURRENTDB_REAL_SKIP = "KURRENTDB_URI is not set: no KurrentDB server to run the suite against"
# The soak test's length (tests/e2e/test_soak.py): short in the suite, longer when asked.
SOAK_MINUTES_DEFAULT = 0.5
# The soak's bound on top of its length: start, set-up, stop.
SOAK_OVERHEAD_SECONDS = 240


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=SOAK_MINUTES_DEFAULT,
        help=f"how long the soak test loads the server (default {SOAK_MINUTES_DEFAULT})",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak test's timeout follows the length asked for."""
    minutes = float(config.getoption("--soak-minutes"))
    for item in items:
        if "soak_minutes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(minutes * 60 + SOAK_OVERHEAD_SECONDS))


@pytest.fixture
def soak_minutes(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--soak-minutes"))


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
    if backend == "kurrentdb-fake":
        return f"fake://{uuid.uuid4().hex}"
    if backend == "kurrentdb-real":
        uri = os.environ.get("KURRENTDB_URI")
        if not uri:
            pytest.skip(KURRENTDB_REAL_SKIP)
        return uri
    raise ValueError(backend)


def store_env(url: str) -> dict[str, str]:
    """The library environment for a test store URL (the fake KurrentDB included)."""
    if url.startswith("fake://"):
        return fake_env(url.removeprefix("fake://"))
    return event_store_env(url)


@pytest.fixture(params=BACKENDS)
def event_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(str(request.param), tmp_path, request)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An event store several processes (or ledgers) can open at once: a SQLite file or
    a PostgreSQL database."""
    return store_url(str(request.param), tmp_path, request)


@pytest.fixture
def ledger(event_store_url: str) -> Iterator[Ledger]:
    app = Ledger(store_env(event_store_url))
    yield app
    app.close()
