"""A PostgreSQL server that vanishes without a reset (a cable pulled, a frozen machine)
must not hold a statement for TCP's 15 minutes of retransmissions: every connection the
product opens gives its peer's silence up after about the store's timeout (keep-alive
probes and ``tcp_user_timeout``), read here from the kernel's settings for each socket
as it is opened (the tests' servers listen on 127.0.0.1: TCP, not a Unix socket)."""

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest
from psycopg.conninfo import conninfo_to_dict

from app.bootstrap import build_services, open_ledger, shutdown
from app.events.database import Database
from app.persistence.kept_connection import KeptConnection
from app.persistence.stores import STORE_TIMEOUT_SECONDS
from app.persistence.tcp_liveness import tcp_liveness
from app.settings import Settings
from projections.runner import start_runner
from projections.view_sets import PostgresViewSets
from tests.support.connects import recording_liveness
from tests.support.pgserver import PostgresServer

pytestmark = pytest.mark.postgres

# A URL's own choice, unlike the product's (an idle of 7 s, 30 s unacknowledged).
URL_IDLE_SECONDS: Final = 7
URL_USER_TIMEOUT_MS: Final = 30_000
URL_LIVENESS: Final = f"keepalives_idle={URL_IDLE_SECONDS}&tcp_user_timeout={URL_USER_TIMEOUT_MS}"


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(event_store=url, read_model=url, data_dir=tmp_path, log_format="console")


def the_event_store_and_its_start_up_check(url: str, tmp_path: Path) -> None:
    ledger = open_ledger(settings_for(url, tmp_path))
    ledger.close()


def a_kept_connection(url: str, tmp_path: Path) -> None:
    kept = KeptConnection(url)
    with kept.using() as connection:
        connection.execute("SELECT 1")
    kept.close()


def the_events_database(url: str, tmp_path: Path) -> None:
    database = Database(url)
    with database.transaction() as cursor:
        cursor.execute("SELECT 1")
    database.close()


def the_view_sets(url: str, tmp_path: Path) -> None:
    PostgresViewSets(url).names()


def a_whole_process(url: str, tmp_path: Path) -> None:
    """The API with its projections: the ledger's pool, the views' pools, the keys'
    and the generation pointer's kept connections, the digest's, the events database."""
    services = build_services(settings_for(url, tmp_path), projections=True)
    try:
        services.view()
        services.keys.create("read")
    finally:
        shutdown(services)


OPENERS: Final = [
    the_event_store_and_its_start_up_check,
    a_kept_connection,
    the_events_database,
    the_view_sets,
    a_whole_process,
]


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("urls_own", [False, True], ids=["products", "urls-own"])
def test_every_connection_gives_a_silent_peer_up_within_the_stores_timeout_or_the_urls(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    opener: Callable[[str, Path], None],
    urls_own: bool,
) -> None:
    """The product's bound, or a URL's own values where it sets them, on every path: not
    only where the product's options are merged in by the library's environment (the
    events database's pool, the view sets and the start-up check pass the URL beside
    options that would override its query)."""
    opened = recording_liveness(monkeypatch)
    opener(f"{postgres_url}?{URL_LIVENESS}" if urls_own else postgres_url, tmp_path)
    assert opened  # the path connected
    if urls_own:
        chosen = {(seen.idle_seconds, seen.user_timeout_ms) for seen in opened}
        assert chosen == {(URL_IDLE_SECONDS, URL_USER_TIMEOUT_MS)}
        return
    unbounded = [
        seen
        for seen in opened
        if not seen.keepalive or seen.silence_seconds_max > STORE_TIMEOUT_SECONDS
    ]
    assert unbounded == []


def test_a_runners_views_take_the_read_models_liveness_not_the_event_stores(
    postgres_server: PostgresServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The views' pool of a runner, whose environment holds the event store's keys and
    the views' (prefixed) together, takes the read model URL's liveness: an event store
    URL's own values are not the views' where the read model's URL sets none."""
    views_url = postgres_server.create_database(f"views_{uuid.uuid4().hex}")
    views_database = conninfo_to_dict(views_url)["dbname"]
    opened = recording_liveness(monkeypatch)
    runner = start_runner(f"{postgres_url}?{URL_LIVENESS}", views_url, 1)
    try:
        runner.view.checkpoint()
    finally:
        runner.__exit__(None, None, None)
        runner.view.close()
    products = tcp_liveness(STORE_TIMEOUT_SECONDS)
    chosen = {
        (seen.idle_seconds, seen.user_timeout_ms)
        for seen in opened
        if seen.database == views_database
    }
    assert chosen == {(products["keepalives_idle"], products["tcp_user_timeout"])}
