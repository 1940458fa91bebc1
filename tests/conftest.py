"""Shared fixtures: one real PostgreSQL server per test session (per xdist worker), fresh
stores per test; checks that a test leaves no thread running."""

import dataclasses
import gc
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings

from app.application.ledger import Ledger
from app.heap import SettledHeap
from app.persistence.stores import event_store_env
from tests.support.fake_kurrentdb import fake_env
from tests.support.pgserver import PostgresServer, running_postgres

_database_numbers = itertools.count()

# Property tests are failed by what they find, never by how long an example took: on a
# loaded machine (2 cores shared by many jobs, or CI) Hypothesis' default deadline of
# 200 ms per example failed them at random ("Unreliable test timings"). Speed is
# measured by the scripts under scripts/, not by tests.
settings.register_profile("ledger", deadline=None)
settings.load_profile("ledger")

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
    """Slow tests first (in their order), so that with several workers the long ones start
    early and the short ones fill in at the end. The soak test's timeout follows the
    length asked for."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    minutes = float(config.getoption("--soak-minutes"))
    for item in items:
        if "soak_minutes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(minutes * 60 + SOAK_OVERHEAD_SECONDS))


@pytest.fixture
def soak_minutes(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--soak-minutes"))


# How long a thread a test started may take to end once the test and its fixtures are done.
THREAD_EXIT_SECONDS = 5.0
# An event loop's executor workers (asyncio_0, …) end when their loop closes; a loop of a
# wider-scoped fixture (the browser tests' Playwright) starts them lazily, inside a test.
LOOP_EXECUTOR_PREFIX = "asyncio_"


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    """A non-daemon thread a test (or its function-scoped fixtures) started has ended when
    the test is over: one left running keeps the process from exiting, logs into streams
    pytest has since closed and races later tests. Threads of wider-scoped fixtures,
    started before the test, are theirs to stop."""
    before = set(threading.enumerate())
    yield
    started = [
        thread
        for thread in threading.enumerate()
        if thread not in before
        and not thread.daemon
        and not thread.name.startswith(LOOP_EXECUTOR_PREFIX)
    ]
    deadline = time.monotonic() + THREAD_EXIT_SECONDS
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [thread.name for thread in started if thread.is_alive()]
    assert not left, f"threads still running after the test: {left}"


@pytest.fixture(autouse=True)
def nothing_stays_frozen_after_a_test() -> Iterator[None]:
    """The projections' first catch-up in a process freezes every object alive then, out
    of the cyclic collector's reach for good (``freeze_long_lived_objects``, once per
    process; ``settle_heap`` does it for a server): in the test process that was the
    test's app, ledger and fixtures, which a reference cycle then kept for the rest of
    the session. Handed back to the collector after each test, and a server's keeper of
    its settled heap (``app.heap.SettledHeap``, installed by ``settle_heap``) removed,
    and the collector's thresholds (``settle_heap``, ``collect_less_often``) restored."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    for callback in list(gc.callbacks):
        if isinstance(callback, SettledHeap):
            callback.remove()
    if gc.get_freeze_count():
        gc.unfreeze()


# The committer's writer thread (app/application/committer.py): a daemon, so the check
# above passes it by, but one left running means a ledger was never closed.
COMMITTER_THREAD_NAME = "ledger-committer"


@pytest.fixture(scope="module", autouse=True)
def every_ledger_of_a_module_is_closed() -> Iterator[None]:
    """A ledger's committer thread ends when the ledger is closed; one still running
    after the module (its module-scoped fixtures closed by then) belongs to a ledger a
    test or a fixture never closed: it holds that ledger, its connections and its cache
    for the rest of the session. Checked per module, not per test, because a ledger of
    a module-scoped fixture starts its committer in whichever test writes first."""
    before = set(threading.enumerate())
    yield
    started = [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.name == COMMITTER_THREAD_NAME
    ]
    deadline = time.monotonic() + THREAD_EXIT_SECONDS
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [thread for thread in started if thread.is_alive()]
    assert not left, f"{len(left)} ledger(s) never closed: their committer threads still run"


@dataclasses.dataclass(frozen=True)
class SessionPostgres(PostgresServer):
    """The session's server, which remembers the databases it made so that each test's
    own are dropped after it (a database is 7.5 MB: hundreds filled gigabytes, whose
    deletion at the end of the session took a minute)."""

    made: list[str] = dataclasses.field(default_factory=list)

    def create_database(self, dbname: str) -> str:
        url = super().create_database(dbname)
        self.made.append(dbname)
        return url

    def drop_databases_made_since(self, count: int) -> None:
        dropped = self.made[count:]
        if not dropped:
            return
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            for dbname in dropped:
                connection.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        del self.made[count:]


_session_postgres: list[SessionPostgres] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # fsync off: only an operating-system crash could lose what the server wrote, and
    # each DROP DATABASE would otherwise wait a second for a synced checkpoint.
    with running_postgres(fsync=False) as server:
        fields = {field.name: getattr(server, field.name) for field in dataclasses.fields(server)}
        session = SessionPostgres(**fields)
        _session_postgres.append(session)
        try:
            yield session
        finally:
            _session_postgres.clear()


@pytest.fixture(autouse=True)
def databases_dropped_after_each_test() -> Iterator[None]:
    """The databases a test made on the session's server are dropped after it (its
    ledgers closed by then); those of wider-scoped fixtures, made before, are kept."""
    made_before = len(_session_postgres[0].made) if _session_postgres else 0
    yield
    if _session_postgres:
        _session_postgres[0].drop_databases_made_since(made_before)


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
