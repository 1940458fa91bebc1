"""A key whose confirmation has aged is looked up again on a request's path (in a worker
thread, once every ``VERIFIED_KEY_TTL_SECONDS`` per key and API process). On PostgreSQL
that look-up runs on the key store's kept connection: opening one there cost a TCP
connection and a server process, and a request waited 1 s more whenever its SYN had to be
sent again. The requests that find the key stale together wait for one look-up."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

import psycopg
import pytest

from app.domain.errors import StoreUnavailableError
from app.persistence import keys as keys_module
from app.persistence.faults import store_fault
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

    def acquire(self, timeout: float = -1) -> bool:
        with self.changed:
            self.arrived += 1
            self.changed.notify_all()
        return self.lock.acquire(timeout=timeout)

    def release(self) -> None:
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


# A bound small enough for a test to wait out many times over.
SHORT_TIMEOUT_SECONDS: Final = 0.2


def checked_in_threads(keys: KeyStore, key: str, count: int) -> tuple[list[Any], bool]:
    """``keys.check(key)`` in ``count`` threads at once: what each answered or raised,
    and whether all had answered within ``WAIT_SECONDS``."""
    outcomes: list[Any] = []

    def check() -> None:
        try:
            outcomes.append(keys.check(key))
        except Exception as error:  # noqa: BLE001  # the test looks at what was raised
            outcomes.append(error)

    threads = [threading.Thread(target=check) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return outcomes, not any(thread.is_alive() for thread in threads)


def test_a_look_up_the_store_does_not_answer_is_a_store_fault_within_its_bound(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys table locked by another session (a migration, a ``LOCK TABLE``): the
    look-ups queued on the kept connection each end at the statement timeout with a
    store fault (503), instead of every request that needs one waiting as long as the
    lock is held."""
    monkeypatch.setattr(keys_module, "KEY_STORE_TIMEOUT_SECONDS", SHORT_TIMEOUT_SECONDS)
    keys = KeyStore(postgres_url)
    key = keys.create("write")
    monkeypatch.setattr(keys_module, "VERIFIED_KEY_TTL_SECONDS", -1.0)
    try:
        with psycopg.connect(postgres_url) as locker:
            locker.execute("LOCK TABLE ledger_api_keys IN ACCESS EXCLUSIVE MODE")
            try:
                outcomes, answered = checked_in_threads(keys, key, TOGETHER)
            finally:
                locker.rollback()  # the threads of a hung look-up end too
        assert answered, "a look-up waited for the lock past its bound"
        assert len(outcomes) == TOGETHER
        for outcome in outcomes:
            assert isinstance(outcome, BaseException), outcome
            assert isinstance(store_fault(outcome), StoreUnavailableError), repr(outcome)
        assert keys.check(key).scope == "write"  # the lock gone, the same connection works
    finally:
        keys.close()


def test_a_request_behind_a_stuck_look_up_is_a_store_fault_at_the_bound(
    keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request's look-up does not end (a connection whose server stopped
    answering): the requests that come for the look-up after it wait for it no longer
    than the bound, then answer a store fault."""
    key = keys.create("read")
    monkeypatch.setattr(keys_module, "VERIFIED_KEY_TTL_SECONDS", -1.0)
    monkeypatch.setattr(keys_module, "KEY_STORE_TIMEOUT_SECONDS", SHORT_TIMEOUT_SECONDS)
    stuck = keys._looking_up
    stuck.acquire()  # the look-up under way, held by a request that never finishes
    try:
        outcomes, answered = checked_in_threads(keys, key, 2)
    finally:
        stuck.release()
    assert answered, "a request waited for another's look-up past the bound"
    assert [type(store_fault(o)) for o in outcomes] == [StoreUnavailableError] * 2, outcomes
    assert keys.check(key).scope == "read"  # the look-up free again
