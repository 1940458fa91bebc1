"""The first start's admin key is made once, however many processes start together on a
new database (``KeyStore.create_first_admin_key``): each looks for a key and makes one
if none exists, one at a time. Otherwise two of them could each show a "first start" key,
or, given the same operator's key, one would fail on its duplicate id."""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import psycopg
import pytest

from app.persistence.keys import KeyStore
from tests.support.pgserver import PostgresServer

STARTERS: Final = 6
# Fresh databases per backend: a lost race needs the starters to look before any inserts.
ROUNDS: Final = 10
GIVEN_KEY: Final = "lk_operator1_" + "s" * 40


def starting_together(url: str, given: str | None) -> tuple[list[str | None], list[Exception]]:
    """What each of ``STARTERS`` threads, each with its own store and connections, got
    from the first start, set off at once."""
    stores = [KeyStore(url) for _ in range(STARTERS)]
    gate = threading.Barrier(STARTERS)
    shown: list[str | None] = []
    failed: list[Exception] = []

    def start(keys: KeyStore) -> None:
        gate.wait()
        try:
            shown.append(keys.create_first_admin_key(given))
        except Exception as error:  # noqa: BLE001 - a failed start-up is what is tested
            failed.append(error)

    threads = [threading.Thread(target=start, args=(keys,)) for keys in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return shown, failed


def sqlite_url(tmp_path: Path, round_number: int) -> str:
    return f"sqlite:///{tmp_path / f'keys{round_number}.sqlite'}"


def postgres_url(server: PostgresServer, tmp_path: Path, round_number: int) -> str:
    return server.create_database(f"{tmp_path.name[:30]}_{round_number}")


def key_rows(url: str) -> int:
    keys = KeyStore(url)
    return len(keys.list())


@pytest.mark.parametrize("given", [None, GIVEN_KEY], ids=["made", "given"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_starters_together_make_one_admin_key(
    backend: str,
    given: str | None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    url_of: Callable[[int], str]
    if backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url_of = lambda number: postgres_url(server, tmp_path, number)  # noqa: E731
    else:
        url_of = lambda number: sqlite_url(tmp_path, number)  # noqa: E731
    for round_number in range(ROUNDS):
        url = url_of(round_number)
        shown, failed = starting_together(url, given)
        assert failed == []
        expected_shown = 0 if given is not None else 1
        assert len([key for key in shown if key is not None]) == expected_shown
        assert key_rows(url) == 1
        if backend == "postgres":
            with psycopg.connect(url) as connection:
                (locks,) = connection.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                ).fetchone() or (0,)
            assert locks == 0  # the lock went with its transaction
