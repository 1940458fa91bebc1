"""The connection a store keeps on PostgreSQL (``KeptConnection``): the views' generation
pointer, read every second by a reader on a request's path and by the projections'
watcher, and the log's digest checkpoints, recorded every second by the projections, use
it instead of a connection opened per use; one a holder dropped without closing it is
closed when the holder goes."""

import gc
import warnings
from typing import Final

import pytest

from app.audit.anchors import Anchor
from app.persistence.kept_connection import KeptConnection
from projections.digest import DigestCheckpoints
from projections.runner import GenerationPointer
from tests.support.connects import counting_connects

pytestmark = pytest.mark.postgres

READS: Final = 5
TIMEOUT_SECONDS: Final = 3


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
