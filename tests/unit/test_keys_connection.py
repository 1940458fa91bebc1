"""A key whose confirmation has aged is looked up again on a request's path (in a worker
thread, once every ``VERIFIED_KEY_TTL_SECONDS`` per key and API process). On PostgreSQL
that look-up runs on the key store's kept connection: opening one there cost a TCP
connection and a server process, and a request waited 1 s more whenever its SYN had to be
sent again. The requests that find the key stale together wait for one look-up."""

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

import psycopg
import pytest

from app.persistence import keys as keys_module
from app.persistence.keys import KeyStore, Verdict
from tests.support.connects import counting_connects

pytestmark = pytest.mark.postgres

LOOK_UPS: Final = 5
TOGETHER: Final = 8
WAIT_SECONDS: Final = 10.0


@pytest.fixture
def keys(postgres_url: str) -> Iterator[KeyStore]:
    store = KeyStore(postgres_url)
    yield store
    store.close()


def test_a_key_looked_up_again_opens_no_connection(
    keys: KeyStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = KeyStore(postgres_url)  # another API process's store
    key = keys.create("write")
    other = elsewhere.create("read")
    monkeypatch.setattr(keys_module, "VERIFIED_KEY_TTL_SECONDS", -1.0)  # stale at once
    opened = counting_connects(monkeypatch)
    for _ in range(LOOK_UPS):
        assert keys.check(key).scope == "write"
    assert keys.check(other).scope == "read"
    assert elsewhere.revoke(other.split("_")[1])
    assert keys.check(other).verdict is Verdict.UNKNOWN  # the store was asked
    assert opened == []
    elsewhere.close()


def test_a_kept_connection_the_server_cut_is_replaced_before_use(
    keys: KeyStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = keys.create("admin")
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        cut = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert cut == (1,)  # the store's kept connection, and only it
    opened = counting_connects(monkeypatch)
    assert keys.check(key).scope == "admin"
    assert opened == [postgres_url]
    assert keys.check(key).scope == "admin"  # from memory now
    assert opened == [postgres_url]


class WaitersCounted:
    """A lock that counts the threads that came to take it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = 0
        self.changed = threading.Condition()

    def __enter__(self) -> None:
        with self.changed:
            self.arrived += 1
            self.changed.notify_all()
        self.lock.acquire()

    def __exit__(self, *_: object) -> None:
        self.lock.release()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.arrived >= count, WAIT_SECONDS)


def test_requests_finding_a_key_stale_together_ask_the_store_once(
    keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = keys.create("write")
    monkeypatch.setattr(keys_module, "VERIFIED_KEY_TTL_SECONDS", -1.0)
    assert keys.check(key).scope == "write"  # confirmed, already stale
    monkeypatch.setattr(keys_module, "VERIFIED_KEY_TTL_SECONDS", 60.0)
    waiters = WaitersCounted()
    monkeypatch.setattr(keys, "_looking_up", waiters, raising=False)
    asked: list[bool] = []
    connect: Callable[[], AbstractContextManager[Any]] = keys._connect

    def first_waits_for_all() -> Iterator[Any]:
        # The first look-up answers once every request has come for the lock.
        asked.append(len(asked) > 0 or waiters.wait_for(TOGETHER))
        with connect() as connection:
            yield connection

    monkeypatch.setattr(keys, "_connect", contextmanager(first_waits_for_all))
    scopes: list[str | None] = []
    threads = [
        threading.Thread(target=lambda: scopes.append(keys.check(key).scope))
        for _ in range(TOGETHER)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert scopes == ["write"] * TOGETHER
    assert asked == [True]
