"""The connection a store keeps on PostgreSQL (``KeptConnection``): the views' generation
pointer, read every second by a reader on a request's path and by the projections'
watcher, and the log's digest checkpoints, recorded every second by the projections, use
it instead of a connection opened per use; one a holder dropped without closing it is
closed when the holder goes."""

import gc
import threading
import warnings
from pathlib import Path
from typing import Final

import psycopg
import pytest

from app.audit.anchors import Anchor
from app.bootstrap import build_services, shutdown
from app.events import store as feed_schema
from app.events.database import (
    Database,
    PartSchema,
    SchemaStep,
    SchemaTooNewError,
    events_database_url,
)
from app.persistence.kept_connection import KeptConnection
from app.persistence.schema_lock import creating_schema
from app.settings import Settings
from projections.catchup import CatchUpRunner
from projections.digest import DigestCheckpoints
from projections.runner import GenerationPointer
from tests.support.connects import counting_connects
from tests.support.waiting import eventually

pytestmark = pytest.mark.postgres

READS: Final = 5
TIMEOUT_SECONDS: Final = 3
SESSIONS_GONE_SECONDS: Final = 5.0


def test_the_generation_pointer_read_again_opens_no_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pointer = GenerationPointer(postgres_url)
    opened = counting_connects(monkeypatch)
    assert [pointer.read() for _ in range(READS)] == [(1, None)] * READS
    pointer.start_building(2)
    assert pointer.read() == (1, 2)  # each read asks the table
    assert opened == []


def test_digest_checkpoints_recorded_again_open_no_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = DigestCheckpoints(postgres_url)
    opened = counting_connects(monkeypatch)
    for position in range(1, READS + 1):
        checkpoints.record(Anchor(position, f"digest{position}", position))
    assert checkpoints.newest() == Anchor(READS, f"digest{READS}", READS)
    assert opened == []
    checkpoints.close()


def test_a_connection_whose_holder_is_dropped_unclosed_is_closed_without_a_warning(
    postgres_url: str,
) -> None:
    kept = KeptConnection(postgres_url)
    with kept.using() as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del kept
        gc.collect()
    assert connection.closed
    assert [str(warning.message) for warning in caught] == []


def test_a_kept_connection_keeps_the_urls_server_options_beside_its_statement_timeout(
    postgres_url: str,
) -> None:
    """A URL that sets server options (``?options=-c …``) keeps them: the statement
    timeout the connection adds goes beside them, not in their place."""
    url = f"{postgres_url}?options=-c%20search_path%3Dkept_probe"
    kept = KeptConnection(url, timeout_seconds=TIMEOUT_SECONDS)
    try:
        with kept.using() as connection:
            assert connection.execute("SHOW search_path").fetchone() == ("kept_probe",)
            shown = connection.execute("SHOW statement_timeout").fetchone()
            assert shown == (f"{TIMEOUT_SECONDS}s",)
    finally:
        kept.close()


@pytest.mark.parametrize("projections", [False, True], ids=["api-only", "with-projections"])
def test_a_process_shut_down_leaves_no_session_open_on_its_databases(
    postgres_url: str, tmp_path: Path, projections: bool
) -> None:
    """``shutdown`` closes every connection the services opened with the rest, not when
    the services are collected: the views' generation pointer's kept connection (the
    reader's of an API-only process, the projections' of one that runs them), the keys'
    and the views' pools (the reader's of each generation it read, the runner's)."""
    settings = Settings(
        event_store=postgres_url, read_model=postgres_url, data_dir=tmp_path, log_format="console"
    )
    services = build_services(settings, projections=projections)
    services.keys.create("read")
    services.view().checkpoint()  # the views' pool in use
    shutdown(services)
    assert_no_session_left(postgres_url)


@pytest.mark.parametrize("projections", [False, True], ids=["api-only", "with-projections"])
def test_a_start_that_fails_part_way_leaves_no_session_open(
    postgres_url: str, tmp_path: Path, projections: bool
) -> None:
    """``build_services`` failing at its last step (the events database made by a newer
    version, refused) closes what it had built by then: the ledger, the keys' kept
    connection, the projections' workers, the events database's pool. Itself, while the
    caller still holds the error (its traceback holds the objects built), not when the
    garbage collector gets to them."""
    events = Database(events_database_url(postgres_url))
    newer = PartSchema(
        feed_schema.SCHEMA.name,
        feed_schema.SCHEMA.statements,
        feed_schema.SCHEMA.first_table,
        [*feed_schema.SCHEMA.steps, SchemaStep(feed_schema.SCHEMA.version + 1, [], [])],
    )
    events.create(newer)
    events.close()
    settings = Settings(
        event_store=postgres_url, read_model=postgres_url, data_dir=tmp_path, log_format="console"
    )
    with pytest.raises(SchemaTooNewError) as refused:
        build_services(settings, projections=projections)
    assert_no_session_left(postgres_url)
    assert "version" in str(refused.value)


def test_a_creation_on_a_kept_connection_waits_for_the_schema_lock_past_its_timeout(
    postgres_url: str,
) -> None:
    """The schema lock may be held longer than a kept connection's statement timeout (an
    upgrade step): a creator behind it waits for it (up to ``SCHEMA_LOCK_WAIT_SECONDS``)
    instead of failing at its connection's timeout."""
    kept = KeptConnection(postgres_url, timeout_seconds=0.2)
    holder = KeptConnection(postgres_url)
    locked = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with holder.using() as connection, creating_schema(connection):
            locked.set()
            release.wait(TIMEOUT_SECONDS)

    other = threading.Thread(target=hold_the_lock)
    other.start()
    try:
        assert locked.wait(TIMEOUT_SECONDS)
        threading.Timer(1.0, release.set).start()  # five times the connection's timeout
        with kept.using() as connection, creating_schema(connection):
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert release.is_set()  # it waited for the holder
    finally:
        release.set()
        other.join()
        kept.close()
        holder.close()


def assert_no_session_left(url: str) -> None:
    """No session but this check's own on ``url``'s database."""
    left: list[tuple[str]] = []
    with psycopg.connect(url, autocommit=True) as watcher:

        def none_left() -> bool:
            left[:] = watcher.execute(
                "SELECT query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            return not left

        # A closed session's server process leaves the view a moment after.
        assert eventually(none_left, SESSIONS_GONE_SECONDS), left


def test_a_shutdown_whose_runner_fails_at_its_stop_still_leaves_no_session_open(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner whose last batch failed (the store gone first, say) raises that failure
    at its stop: ``shutdown`` still closes the generation pointer, the ledger and the
    keys behind it, and raises the failure after."""
    settings = Settings(
        event_store=postgres_url, read_model=postgres_url, data_dir=tmp_path, log_format="console"
    )
    services = build_services(settings, projections=True)
    services.keys.create("read")
    services.view().checkpoint()

    def failed(runner: CatchUpRunner) -> None:
        raise RuntimeError("the runner's last batch failed")

    monkeypatch.setattr(CatchUpRunner, "_raise_error", failed)
    with pytest.raises(RuntimeError, match="last batch failed"):
        shutdown(services)
    assert_no_session_left(postgres_url)
